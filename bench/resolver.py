"""How fast the permission resolver decides, and whether that depends on how much is configured.

Builds a large configuration -- 100,000 user settings, 10,000 role names, 10,000
flows, with settings both app-wide and spread over the flows, and one flow holding
a setting for every role -- and a small one (10 users, 10 roles, 10 flows). Then
times ``resolve`` for identities holding 1, 10 and 100 custom roles in three cases:

- ``mixed``: random flows, users (one in ten anonymous) and roles; any layer decides;
- ``full walk``: nothing matches the user or the roles, so all seven layers are
  consulted, including two levels with 10,000 role settings each;
- ``all roles set``: every role of the identity has a setting on the flow, and the
  alphabetically first deciding role must be found;
- ``hot full walk``: one full-walk activation repeated, so the data stays in the
  processor's caches: the cost of the work itself. The other cases go through
  10,000 different identities, where lookups in large tables miss those caches.

Prints the median (and best) over several repetitions of microseconds per
decision, decisions per second, and the ratio large/small configuration for the same case: a ratio
near 1 means the cost does not grow with the number of users, roles or flows.

Run with ``python bench/resolver.py`` (well under a minute).
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

# Runnable from a checkout, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from permissions import (
    AUTHENTICATED,
    NON_AUTHENTICATED,
    Identity,
    Level,
    Permission,
    Settings,
    resolve,
)

GRANT, DENY = Permission.GRANT, Permission.DENY
ROLE_COUNTS = (1, 10, 100)
DECISIONS = 10_000  # per repetition
REPETITIONS = 7
BIG_FLOW = "flow-all-roles"

Case = tuple[str, Identity]


class Config:
    """A settings snapshot plus the names it was built from."""

    def __init__(self, users: int, roles: int, flows: int, seed: int) -> None:
        rng = random.Random(seed)
        self.rng = rng
        # Half of the user ids and role names have settings; the other half never do.
        self.set_users = [f"user-{i:06d}" for i in range(users)]
        self.unset_users = [f"nobody-{i:06d}" for i in range(users)]
        self.set_roles = [f"role-{i:05d}" for i in range(roles)]
        self.unset_roles = [f"unset-{i:05d}" for i in range(roles)]
        self.flows = [f"flow-{i:05d}" for i in range(flows)]
        self.any_user = self.set_users + self.unset_users
        self.any_role = self.set_roles + self.unset_roles

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

    def mixed(self, roles: int) -> list[Case]:
        rng = self.rng
        cases = []
        for _ in range(DECISIONS):
            user = None if rng.random() < 0.1 else rng.choice(self.any_user)
            names = rng.sample(self.any_role, min(roles, len(self.any_role)))
            flow = rng.choice(self.flows) if rng.random() < 0.95 else BIG_FLOW
            cases.append((flow, Identity(user, names)))
        return cases

    def full_walk(self, roles: int) -> list[Case]:
        return [
            (BIG_FLOW, Identity(self.rng.choice(self.unset_users), self._unset(roles)))
            for _ in range(DECISIONS)
        ]

    def all_roles_set(self, roles: int) -> list[Case]:
        return [
            (BIG_FLOW, Identity(self.rng.choice(self.unset_users), self._set(roles)))
            for _ in range(DECISIONS)
        ]

    def hot(self, roles: int) -> list[Case]:
        """One full-walk activation repeated: what a decision costs with warm caches."""
        return self.full_walk(roles)[:1] * DECISIONS

    def _unset(self, roles: int) -> list[str]:
        pool = self.unset_roles
        if roles <= len(pool):
            return self.rng.sample(pool, roles)
        return [*pool, *(f"extra-{i}" for i in range(roles - len(pool)))]

    def _set(self, roles: int) -> list[str]:
        pool = self.set_roles
        if roles <= len(pool):
            return self.rng.sample(pool, roles)
        # Fewer roles configured than the identity holds: all configured ones, plus unset.
        return [*pool, *(f"extra-{i}" for i in range(roles - len(pool)))]


def one_pass(settings: Settings, cases: list[Case]) -> float:
    """Microseconds per decision over one pass through the cases."""
    start = time.perf_counter()
    for flow, identity in cases:
        resolve(settings, flow, identity)
    return (time.perf_counter() - start) / len(cases) * 1e6


def compare(large: Config, small: Config, cases: tuple[list[Case], list[Case]]) -> list[float]:
    """Median and best µs per decision for the large configuration, median for the small.

    Passes alternate between the two, so that load from elsewhere on the machine
    falls on both alike and the ratio stays meaningful.
    """
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(REPETITIONS):
        samples[0].append(one_pass(large.settings, cases[0]))
        samples[1].append(one_pass(small.settings, cases[1]))
    return [statistics.median(samples[0]), min(samples[0]), statistics.median(samples[1])]


SCENARIOS: dict[str, Callable[[Config, int], list[Case]]] = {
    "mixed": Config.mixed,
    "full walk": Config.full_walk,
    "all roles set": Config.all_roles_set,
    "hot full walk": Config.hot,
}


def main() -> None:
    started = time.perf_counter()
    large = Config(users=100_000, roles=10_000, flows=10_000, seed=1)
    small = Config(users=10, roles=10, flows=10, seed=2)
    print(f"large: {large.size}")
    print(f"small: {small.size}")
    print(f"built in {time.perf_counter() - started:.1f} s", end="; ")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{os.cpu_count()} processors, load average {load} (other load skews timings)")
    print(f"median (and best) of {REPETITIONS} passes over {DECISIONS:,} decisions")
    print()
    print(
        f"{'case':<15}{'roles':>6}{'large µs':>10}{'(best)':>8}{'decisions/s':>13}"
        f"{'small µs':>10}{'ratio':>7}"
    )
    layers: Counter[str] = Counter()
    ratios = []
    for name, make in SCENARIOS.items():
        for roles in ROLE_COUNTS:
            cases = make(large, roles), make(small, roles)
            if name == "mixed":
                layers.update(resolve(large.settings, f, i).layer for f, i in cases[0])
            large_us, best_us, small_us = compare(large, small, cases)
            ratios.append(large_us / small_us)
            print(
                f"{name:<15}{roles:>6}{large_us:>10.2f}{best_us:>8.2f}{1e6 / large_us:>13,.0f}"
                f"{small_us:>10.2f}{large_us / small_us:>7.2f}"
            )
    print()
    print(f"ratio large/small, median over the cases: {statistics.median(ratios):.2f}")
    total = sum(layers.values())
    spread = ", ".join(f"{layer} {count / total:.0%}" for layer, count in layers.most_common())
    print(f"deciding layers in the mixed case (large): {spread}")
    print(f"total run time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
