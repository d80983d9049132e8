"""How fast the permission resolver decides, and whether that depends on how much is configured.

Two configurations:

- large: 100,000 user settings (half app-wide, half spread over 10,000 flows),
  10,000 roles set app-wide and ten on each flow, the system roles on a third of the
  flows, and one flow (``flow-all-roles``) holding a setting for every role;
- small: 10 users, 10 roles and 10 flows laid out the same way.

The *same* activations are resolved against both, so that the configuration is the
only thing that differs. An activation is a flow, a user (one in ten anonymous, about
half of the others with a setting somewhere) and 1, 10 or 100 roles (half of the role
names have settings), drawn from the large configuration's names. Each decision builds
its :class:`Identity` from strings that are not the settings' own objects, as a
request would, and only ``resolve`` is timed, one decision at a time; the timer's own
cost, measured in the same run, is taken off. Figures are medians over all decisions.

Three regimes, by how many distinct activations the stream goes through:

- ``hot``: one activation repeated. Everything it touches stays in the processor's
  caches: this is the cost of the resolver's code.
- ``warm``: 100 distinct activations repeated in shuffled order, a busy server's
  handful of active users and flows.
- ``cold``: 10,000 distinct activations per pass. In the large configuration nearly
  every dictionary or set lookup misses the caches, and a miss to memory costs far
  more than the lookup itself; in the small one everything stays cached.

Two cases:

- ``mixed``: random flows (one in twenty the all-roles flow); any layer may decide;
- ``full walk``: users and roles without settings on flows with some, so that all
  seven layers are consulted, including two holding 10,000 role settings.

Two baselines, each written inline over plain ``dict`` and ``frozenset`` objects (no
decision object, no reason, no error handling) and timed on the same activations in the
same run:

- ``yes/no``: the look-ups that say whether the activation is allowed, and nothing
  more. When roles decide, it asks only whether any held role is denied;
- ``naming``: the look-ups that also say what decided (the layer and the user, role or
  system role), as the spec's decision must: when roles decide, the alphabetically
  first denied role, else the first granted one, found as the resolver finds it.

They are what any dictionary-based resolver pays, and their own large/small ratios show
how much of the resolver's ratio is the memory, not the code.

Targets (issue "Hot paths near the floor"): in every regime, each row's resolver median
within 1.5x the baseline's (large and small alike), printed per regime with PASS/FAIL
against each baseline. The naming baseline is the one that does the resolver's
look-ups; the yes/no one does fewer than the spec's answer needs, and is kept beside it
to show what naming the deciding subject costs.

Run with ``python bench/resolver.py`` (under a minute).
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

# Runnable from a checkout, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from permissions import (
    AUTHENTICATED,
    NON_AUTHENTICATED,
    SYSTEM_ROLES,
    Decision,
    Identity,
    Level,
    Permission,
    Settings,
    User,
    resolve,
)

GRANT, DENY = Permission.GRANT, Permission.DENY
ROLE_COUNTS = (1, 10, 100)
BIG_FLOW = "flow-all-roles"
REGIMES = {"hot": 1, "warm": 100, "cold": 10_000}  # distinct activations in a stream
COLD = REGIMES["cold"]
DECISIONS = 20_000  # timed decisions per measurement
TARGET_US = 5.0
TARGET_PLAIN = 1.5  # the resolver, times the plain baseline on the same activations


class Config:
    """A settings snapshot plus the names it was built from."""

    def __init__(self, users: int, roles: int, flows: int, seed: int) -> None:
        rng = random.Random(seed)
        # Half of the user ids and role names have settings; the other half never do.
        self.set_users = [f"user-{i:06d}" for i in range(users)]
        self.unset_users = [f"nobody-{i:06d}" for i in range(users)]
        self.set_roles = [f"role-{i:05d}" for i in range(roles)]
        self.unset_roles = [f"unset-{i:05d}" for i in range(roles)]
        self.flows = [f"flow-{i:05d}" for i in range(flows)]

        def some() -> Permission:
            return DENY if rng.random() < 0.2 else GRANT

        half = users // 2
        app = Level(
            users={user: some() for user in self.set_users[:half]},
            roles={role: some() for role in self.set_roles} | {NON_AUTHENTICATED: DENY},
        )
        flow_users = self.set_users[half:]
        per_flow = max(1, len(flow_users) // flows)
        levels = {}
        for index, flow in enumerate(self.flows):
            chosen = flow_users[index * per_flow : (index + 1) * per_flow]
            role_settings = {role: some() for role in rng.sample(self.set_roles, min(10, roles))}
            if index % 3 == 0:
                role_settings[AUTHENTICATED] = some()
            levels[flow] = Level(users={u: some() for u in chosen}, roles=role_settings)
        levels[BIG_FLOW] = Level(roles={role: some() for role in self.set_roles})
        self.settings = Settings(app=app, flows=levels)
        self.size = (
            f"{sum(len(level.users) for level in [app, *levels.values()]):,} user settings, "
            f"{roles:,} roles ({sum(len(level.roles) for level in [app, *levels.values()]):,} "
            f"role settings), {len(levels):,} flows"
        )


class Activation(NamedTuple):
    """What a request carries: strings, not yet an :class:`Identity`."""

    flow: str
    user: str | None
    roles: tuple[str, ...]


def _fresh(name: str) -> str:
    """An equal string that is a different object, as one parsed from a request is."""
    return name.encode().decode()


def mixed(config: Config, roles: int, count: int, rng: random.Random) -> list[Activation]:
    users = config.set_users + config.unset_users
    pool = config.set_roles + config.unset_roles
    activations = []
    for _ in range(count):
        user = None if rng.random() < 0.1 else _fresh(rng.choice(users))
        flow = rng.choice(config.flows) if rng.random() < 0.95 else BIG_FLOW
        names = tuple(_fresh(name) for name in rng.sample(pool, roles))
        activations.append(Activation(_fresh(flow), user, names))
    return activations


def full_walk(config: Config, roles: int, count: int, rng: random.Random) -> list[Activation]:
    activations = []
    for _ in range(count):
        user = _fresh(rng.choice(config.unset_users))
        flow = rng.choice(config.flows) if rng.random() < 0.5 else BIG_FLOW
        names = tuple(_fresh(name) for name in rng.sample(config.unset_roles, roles))
        activations.append(Activation(_fresh(flow), user, names))
    return activations


CASES: dict[str, Callable[[Config, int, int, random.Random], list[Activation]]] = {
    "mixed": mixed,
    "full walk": full_walk,
}


# -- the plain-Python baseline -------------------------------------------------------------

PlainLevel = tuple[
    dict[str, Permission], dict[str, Permission], frozenset[str], frozenset[str], frozenset[str]
]


class Plain(NamedTuple):
    """A configuration as plain dictionaries and sets."""

    flows: dict[str, PlainLevel]
    app: PlainLevel
    default: Permission


def plain(settings: Settings) -> Plain:
    """A copy of a configuration as plain dictionaries and sets, down to its strings
    (system role names aside, which are constants everywhere). Each baseline reads its
    own copy, as the resolver reads its own settings, so that none finds in the
    processor's caches what another measurement has just read."""

    def copy(name: str) -> str:
        return name if name in SYSTEM_ROLES else _fresh(name)

    def level(lv: Level) -> PlainLevel:
        roles = {copy(name): permission for name, permission in lv.roles.items()}
        custom = frozenset(roles) - SYSTEM_ROLES
        denied = frozenset(name for name in custom if roles[name] is DENY)
        users = {copy(user): permission for user, permission in lv.users.items()}
        return users, roles, custom, denied, custom - denied

    return Plain(
        {copy(flow): level(lv) for flow, lv in settings.flows.items()},
        level(settings.app),
        settings.default,
    )


def plain_allowed(tables: Plain, flow: str, user: str | None, roles: frozenset[str]) -> bool:
    """The seven layers over plain dicts and sets: allowed or not, nothing else."""
    system = NON_AUTHENTICATED if user is None else AUTHENTICATED
    for level in (tables.flows.get(flow), tables.app):
        if level is None:
            continue
        users, settings, custom, denied, _ = level
        if user is not None and user in users:
            return users[user] is GRANT
        if not roles.isdisjoint(custom):
            return roles.isdisjoint(denied)
        if system in settings:
            return settings[system] is GRANT
    return tables.default is GRANT


FLOW_LAYERS = ("flow.user", "flow.role", "flow.system_role")
APP_LAYERS = ("app.user", "app.role", "app.system_role")
Named = tuple[bool, str, str | None]


def plain_decide(
    tables: Plain, flow: str, user: str | None, roles: frozenset[str], ordered: tuple[str, ...]
) -> Named:
    """The yes/no baseline's walk, also naming what decided: allowed or not, the layer,
    and the user, role or system role whose setting decided.

    ``ordered`` is the held roles sorted, as an identity keeps them. Roles are matched as
    the resolver matches them: the denied ones first, by intersecting when the matching
    set is the smaller, otherwise by walking the sorted roles to the first match.
    """
    system = NON_AUTHENTICATED if user is None else AUTHENTICATED
    layers = FLOW_LAYERS
    for level in (tables.flows.get(flow), tables.app):
        if level is not None:
            users, settings, custom, denied, granted = level
            if user is not None and user in users:
                return users[user] is GRANT, layers[0], user
            if not roles.isdisjoint(custom):
                return first_role(roles, ordered, denied, granted, layers[1])
            if system in settings:
                return settings[system] is GRANT, layers[2], system
        layers = APP_LAYERS
    return tables.default is GRANT, "default", None


def first_role(
    roles: frozenset[str],
    ordered: tuple[str, ...],
    denied: frozenset[str],
    granted: frozenset[str],
    layer: str,
) -> Named:
    """The alphabetically first denied role, else the first granted one."""
    if len(denied) < len(ordered):
        common = roles & denied
        if common:
            return False, layer, min(common)
    else:
        for role in ordered:
            if role in denied:
                return False, layer, role
    if len(granted) < len(ordered):
        return True, layer, min(roles & granted)
    for role in ordered:
        if role in granted:
            return True, layer, role
    raise AssertionError("a held role is set here, so it is denied or granted")


# -- timing -----------------------------------------------------------------------------------

_clock = time.perf_counter_ns


def timer_cost() -> float:
    """Nanoseconds two back-to-back clock reads take, to be taken off every sample."""
    samples = []
    for _ in range(20_000):
        start = _clock()
        samples.append(_clock() - start)
    return statistics.median(samples)


def time_resolver(settings: Settings, stream: list[Activation], overhead: float) -> list[float]:
    """µs per decision of ``resolve`` over ``stream``, each Identity built untimed before."""
    samples = []
    for flow, user, roles in stream:
        identity = Identity(user, roles)
        start = _clock()
        resolve(settings, flow, identity)
        samples.append(_clock() - start - overhead)
    return [sample / 1000 for sample in samples]


def time_plain(tables: Plain, stream: list[Activation], overhead: float) -> list[float]:
    samples = []
    for flow, user, roles in stream:
        held = frozenset(roles)
        start = _clock()
        plain_allowed(tables, flow, user, held)
        samples.append(_clock() - start - overhead)
    return [sample / 1000 for sample in samples]


def time_naming(tables: Plain, stream: list[Activation], overhead: float) -> list[float]:
    samples = []
    for flow, user, roles in stream:
        held = frozenset(roles)
        ordered = tuple(sorted(held))
        start = _clock()
        plain_decide(tables, flow, user, held, ordered)
        samples.append(_clock() - start - overhead)
    return [sample / 1000 for sample in samples]


class Row(NamedTuple):
    regime: str
    case: str
    roles: int
    large: float
    small: float
    plain_large: float
    plain_small: float
    naming_large: float
    naming_small: float

    def over(self, large: float, small: float) -> float:
        """The resolver against one baseline, the worse of the two configurations."""
        return max(self.large / large, self.small / small)


def measure(
    large: Config,
    small: Config,
    tables: tuple[Plain, Plain],
    naming: tuple[Plain, Plain],
    case: str,
    roles: int,
    regime: str,
    overhead: float,
    rng: random.Random,
) -> Row:
    """Medians of the resolver and the baselines, large and small, on one stream.

    The stream is cut into rounds that alternate between the six measurements, so
    that load from elsewhere on the machine falls on all of them alike. Each of the
    three reads its own tables (``tables`` for the yes/no baseline, ``naming`` for the
    naming one), so that each finds its data as a round of the others left it.
    """
    distinct = CASES[case](large, roles, REGIMES[regime], rng)
    stream = [distinct[i % len(distinct)] for i in range(DECISIONS)]
    if len(distinct) < COLD:
        rng.shuffle(stream)
    samples: list[list[float]] = [[] for _ in range(6)]
    rounds = len(stream) // len(distinct)
    for index in range(rounds):
        part = stream[index * len(distinct) : (index + 1) * len(distinct)]
        samples[0] += time_resolver(large.settings, part, overhead)
        samples[1] += time_resolver(small.settings, part, overhead)
        samples[2] += time_plain(tables[0], part, overhead)
        samples[3] += time_plain(tables[1], part, overhead)
        samples[4] += time_naming(naming[0], part, overhead)
        samples[5] += time_naming(naming[1], part, overhead)
    return Row(regime, case, roles, *(statistics.median(values) for values in samples))


def _named(decision: Decision) -> Named:
    subject = decision.subject
    name = None if subject is None else subject.id if isinstance(subject, User) else subject.name
    return decision.allowed, decision.layer, name


def check_agreement(config: Config, tables: Plain, stream: list[Activation]) -> None:
    """The baselines must decide like the resolver, or they measure something else."""
    for flow, user, roles in stream:
        decision = resolve(config.settings, flow, Identity(user, roles))
        held = frozenset(roles)
        if plain_allowed(tables, flow, user, held) is not decision.allowed:
            raise AssertionError(f"the yes/no baseline disagrees on {flow} {user} {roles}")
        if plain_decide(tables, flow, user, held, tuple(sorted(held))) != _named(decision):
            raise AssertionError(f"the naming baseline disagrees on {flow} {user} {roles}")


def main() -> None:
    started = time.perf_counter()
    large = Config(users=100_000, roles=10_000, flows=10_000, seed=1)
    small = Config(users=10, roles=10, flows=10, seed=2)
    rng = random.Random(3)
    print(f"large: {large.size}")
    print(f"small: {small.size}")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"built in {time.perf_counter() - started:.1f} s; ", end="")
    print(f"{os.cpu_count()} processors, load average {load} (other load skews timings)")
    overhead = timer_cost()
    print(f"median µs per decision over {DECISIONS:,} timed decisions", end="; ")
    print(f"timer cost {overhead:.0f} ns, taken off")
    print()
    heads = ("resolver", "yes/no baseline", "naming baseline")
    print(f"{'':24}" + "".join(f"{head:^22}" for head in heads) + f"{'resolver /':^16}")
    print(
        f"{'regime':<7}{'case':<11}{'roles':>6}"
        + f"{'large':>8}{'small':>7}{'ratio':>7}" * 3
        + f"{'yes/no':>8}{'naming':>8}"
    )
    tables = plain(large.settings), plain(small.settings)
    naming = plain(large.settings), plain(small.settings)
    layers: Counter[str] = Counter()
    rows = []
    for regime in REGIMES:
        for case, make in CASES.items():
            for roles in ROLE_COUNTS:
                check_agreement(large, tables[0], make(large, roles, 500, rng))
                check_agreement(small, tables[1], make(large, roles, 500, rng))
                if regime == "cold" and make is mixed:
                    layers.update(
                        resolve(large.settings, a.flow, Identity(a.user, a.roles)).layer
                        for a in make(large, roles, 2_000, rng)
                    )
                row = measure(large, small, tables, naming, case, roles, regime, overhead, rng)
                rows.append(row)
                triples = (
                    (row.large, row.small),
                    (row.plain_large, row.plain_small),
                    (row.naming_large, row.naming_small),
                )
                print(
                    f"{row.regime:<7}{row.case:<11}{row.roles:>6}"
                    + "".join(f"{lg:>8.2f}{sm:>7.2f}{lg / sm:>7.2f}" for lg, sm in triples)
                    + f"{row.over(row.plain_large, row.plain_small):>8.2f}"
                    + f"{row.over(row.naming_large, row.naming_small):>8.2f}"
                )
    print()
    for regime in REGIMES:
        chosen = [row for row in rows if row.regime == regime]
        worst = max(row.large for row in chosen)
        ratio = max(row.large / row.small for row in chosen)
        plain_ratio = max(row.plain_large / row.plain_small for row in chosen)
        print(
            f"{regime}: worst median {worst:.2f} µs (target < {TARGET_US:g}); worst ratio "
            f"large/small {ratio:.2f}, the yes/no baseline's {plain_ratio:.2f} (not a target)"
        )
        for name, over in (
            ("naming", max(row.over(row.naming_large, row.naming_small) for row in chosen)),
            ("yes/no", max(row.over(row.plain_large, row.plain_small) for row in chosen)),
        ):
            verdict = "PASS" if over <= TARGET_PLAIN else "FAIL"
            print(
                f"{regime}: worst resolver / {name} baseline {over:.2f} "
                f"(target <= {TARGET_PLAIN:g}) {verdict}"
            )
    total = sum(layers.values())
    spread = ", ".join(f"{layer} {count / total:.0%}" for layer, count in layers.most_common())
    print(f"deciding layers in the mixed case (large): {spread}")
    print(f"total run time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
