"""The resolver against AWS Cedar, exhaustively over a small universe.

The universe: users alice and bob; custom roles Auditor, Contractor and Manager;
flows f1 and f2. The identities are every subset of the three roles held by
anonymous, by alice and by bob: 24 identities (SPEC lets anonymous hold roles).

The encoding. Cedar has no "the first layer holding a setting decides": every
matching policy counts and any ``forbid`` overrides every ``permit``. So each of
the six explicit layers of SPEC section 3 is a ``permit`` for its GRANTs and a
``forbid`` for its DENYs, both holding ``unless`` an earlier layer holds a
setting, either way, for this principal and flow; the GRANT default is a
``permit`` unless any layer does, and a DENY default is Cedar's own denial when
nothing permits. Within a layer both may match and forbid wins: the resolver's
deny-wins. The system role is computed in Cedar from whether the principal has a
user, and a role setting counts as a custom role's or as the system role's by
which attribute of the principal it is compared with.

A ``Settings`` snapshot compiles into entities, transcribed level by level: a
``Flow`` entity holds one flow's users and roles granted and denied, an ``App``
entity the app-wide ones and the default, and the request's context names the
``App`` in force. An identity is a ``Caller`` with its user and custom roles.
Python decides nothing. The policies are fixed rather than one per setting
because Cedar evaluates every policy of a set for every request: thousands of
snapshots per call, each with its own policies, would cost milliseconds a
decision.

The cases. The full product of GRANT/DENY/INHERIT over all 21 settings (7
subjects at 3 levels) is 3**21, far too many. So for each identity the test is
exhaustive over the subjects that can match it: its user (when it has one), each
of its roles and its system role, on f1 and app-wide, with both defaults; alice
or bob with all three roles thus has 3**10 * 2 cases. f2 holds another assignment
of the same subjects, half-way round the enumeration, and is asked about too, so
f2 also goes through every assignment, each time beside a different one on f1.
The subjects the identity cannot match (the other user, the roles it lacks, the
other system role) hold the opposite of the default at every level for half of
the app-wide assignments and nothing for the other half: a setting leaking across
flows, users or roles would change some answer, and empty levels are reached too.

344,688 decisions are compared, plus 20 hand-picked ones. Timed around
``pytest tests/permissions/test_resolver_cedar.py -q`` on a two-core machine that
was running other work too: 23 s wall clock, 22 s of CPU (the test uses one
core); about three quarters of it is spent in Cedar.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cedarpy
import pytest

from permissions import (
    AUTHENTICATED,
    NON_AUTHENTICATED,
    Identity,
    Layer,
    Level,
    Permission,
    Role,
    Settings,
    Subject,
    User,
    resolve,
)

GRANT, DENY, INHERIT = Permission.GRANT, Permission.DENY, Permission.INHERIT

USERS = ("alice", "bob")
CUSTOM_ROLES = ("Auditor", "Contractor", "Manager")
FLOWS = ("f1", "f2")
SUBJECTS: tuple[Subject, ...] = (
    *(User(user) for user in USERS),
    *(Role(role) for role in (*CUSTOM_ROLES, AUTHENTICATED, NON_AUTHENTICATED)),
)
IDENTITIES = tuple(
    Identity(user, roles)
    for user in (None, *USERS)
    for size in range(len(CUSTOM_ROLES) + 1)
    for roles in itertools.combinations(CUSTOM_ROLES, size)
)

# ---------------------------------------------------------------------------
# The seven layers as Cedar policies.

ACTIVATE = {"type": "Action", "id": "activate"}
SYSTEM_ROLE = f'if principal has user then Role::"{AUTHENTICATED}" else Role::"{NON_AUTHENTICATED}"'

# (layer, entity holding the level's settings, whose setting), in SPEC's order.
LAYERS = (
    ("flow.user", "resource", "user"),
    ("flow.role", "resource", "custom roles"),
    ("flow.system_role", "resource", "system role"),
    ("app.user", "context.app", "user"),
    ("app.role", "context.app", "custom roles"),
    ("app.system_role", "context.app", "system role"),
)


def _matches(level: str, whose: str, effect: str) -> str:
    """Cedar: the principal matches a setting of ``effect`` ("granted", "denied")."""
    if whose == "user":
        return f"(principal has user && {level}.users_{effect}.contains(principal.user))"
    if whose == "custom roles":
        return f"{level}.roles_{effect}.containsAny(principal.roles)"
    return f"{level}.roles_{effect}.contains({SYSTEM_ROLE})"


def _holds(level: str, whose: str) -> str:
    """Cedar: the level holds a setting, either way, for this principal."""
    return f"{_matches(level, whose, 'granted')} || {_matches(level, whose, 'denied')}"


def _policies() -> str:
    policies = []
    for index, (layer, level, whose) in enumerate(LAYERS):
        earlier = " ||\n    ".join(_holds(lvl, who) for _, lvl, who in LAYERS[:index])
        unless = f"\nunless {{\n    {earlier}\n}}" if earlier else ""
        for effect, verb in (("granted", "permit"), ("denied", "forbid")):
            policies.append(
                f'@id("{layer} {effect}")\n'
                f'{verb} (principal, action == Action::"activate", resource)\n'
                f"when {{ {_matches(level, whose, effect)} }}{unless};"
            )
    every = " ||\n    ".join(_holds(level, whose) for _, level, whose in LAYERS)
    # A DENY default needs no policy: Cedar denies what nothing permits.
    policies.append(
        '@id("default")\n'
        'permit (principal, action == Action::"activate", resource)\n'
        f'when {{ context.app.default == "{GRANT}" }}\n'
        f"unless {{\n    {every}\n}};"
    )
    return "\n\n".join(policies)


POLICIES = cedarpy.PolicySet.from_str(_policies())

# ---------------------------------------------------------------------------
# Settings and identities as Cedar entities.


def _uid(kind: str, name: str) -> dict[str, str]:
    return {"type": kind, "id": name}


def _ref(kind: str, name: str) -> dict[str, Any]:
    return {"__entity": _uid(kind, name)}


def _level_attrs(level: Level) -> dict[str, Any]:
    """One level's settings as four sets, a literal transcription of ``Level``."""
    return {
        f"{kind.lower()}s_{effect}": [
            _ref(kind, name) for name, permission in sorted(entries.items()) if permission is wanted
        ]
        for kind, entries in (("User", level.users), ("Role", level.roles))
        for effect, wanted in (("granted", GRANT), ("denied", DENY))
    }


def caller_id(identity: Identity) -> str:
    return "+".join([identity.user_id or "anonymous", *identity.sorted_roles])


def caller_entity(identity: Identity) -> dict[str, Any]:
    attrs: dict[str, Any] = {"roles": [_ref("Role", role) for role in identity.sorted_roles]}
    if identity.user_id is not None:
        attrs["user"] = _ref("User", identity.user_id)
    return {"uid": _uid("Caller", caller_id(identity)), "attrs": attrs, "parents": []}


CALLERS = [caller_entity(identity) for identity in IDENTITIES]
CALLER_UIDS = {identity: _uid("Caller", caller_id(identity)) for identity in IDENTITIES}


@dataclass(frozen=True, slots=True)
class Case:
    """One question: may ``identity`` activate ``flow`` under ``settings``?"""

    settings: Settings
    flow: str
    identity: Identity


def cedar_allows(cases: Sequence[Case]) -> list[bool]:
    """Cedar's decision for each case, all evaluated in one call.

    A flow's settings become a ``Flow`` entity, the app-wide ones and the default an
    ``App`` entity that the request's context names as the settings in force. A
    level shared by several snapshots is one entity, so a batch of thousands of
    snapshots parses a few hundred entities.
    """
    # Keyed by identity, not value: the cases hold their settings, and equal levels
    # that are distinct objects only cost a duplicate entity.
    flows: dict[int, dict[str, str]] = {}
    contexts: dict[tuple[int, Permission], str] = {}
    entities = list(CALLERS)
    requests = []
    for case in cases:
        level = case.settings.level(case.flow)
        resource = flows.get(id(level))
        if resource is None:
            resource = flows[id(level)] = _uid("Flow", str(len(flows)))
            entities.append({"uid": resource, "attrs": _level_attrs(level), "parents": []})
        app, default = case.settings.app, case.settings.default
        context = contexts.get((id(app), default))
        if context is None:
            uid = _uid("App", str(len(contexts)))
            attrs = {**_level_attrs(app), "default": str(default)}
            entities.append({"uid": uid, "attrs": attrs, "parents": []})
            context = contexts[id(app), default] = json.dumps({"app": {"__entity": uid}})
        requests.append(
            {
                "principal": CALLER_UIDS[case.identity],
                "action": ACTIVATE,
                "resource": resource,
                "context": context,
            }
        )
    store = cedarpy.Entities.from_json_str(json.dumps(entities))
    results = cedarpy.is_authorized_batch(requests, POLICIES, store)
    assert len(results) == len(cases)
    errors = [
        (case, result.diagnostics.errors) for case, result in zip(cases, results, strict=True)
    ]
    assert not [error for error in errors if error[1]], f"Cedar failed to evaluate: {errors[0]}"
    return [result.allowed for result in results]


# ---------------------------------------------------------------------------
# The hand-picked cases: the encoding is not trivially right.


def build(*writes: tuple[Subject, Permission, str | None], default: Permission = GRANT) -> Settings:
    settings = Settings(default=default)
    for subject, permission, flow in writes:
        settings = settings.with_setting(subject, permission, flow)
    return settings


ALICE, BOB, ANONYMOUS = Identity("alice"), Identity("bob"), Identity()
ONLY_MANAGERS = build((Role(AUTHENTICATED), DENY, "f1"), (Role("Manager"), GRANT, "f1"))
USER_OVER_ROLE = build((Role("Contractor"), DENY, "f1"), (User("alice"), GRANT, "f1"))
DENY_AMONG_ROLES = build((Role("Auditor"), GRANT, "f1"), (Role("Contractor"), DENY, "f1"))
FLOW_OVER_APP = build((User("alice"), DENY, None), (Role("Manager"), GRANT, "f1"))
APP_USER_OVER_ROLE = build((Role("Contractor"), DENY, None), (User("alice"), GRANT, None))
APP_ROLE_OVER_SYSTEM = build((Role(AUTHENTICATED), DENY, None), (Role("Manager"), GRANT, None))
NO_ANONYMOUS = build((Role(NON_AUTHENTICATED), DENY, None))
KNOWN = [
    # "deny AuthenticatedUser, grant Manager" on a flow means "only managers" there.
    (ONLY_MANAGERS, "f1", ALICE, False),
    (ONLY_MANAGERS, "f1", Identity("bob", ["Auditor"]), False),
    (ONLY_MANAGERS, "f1", Identity("alice", ["Manager"]), True),
    (ONLY_MANAGERS, "f1", Identity("bob", ["Auditor", "Manager"]), True),
    (ONLY_MANAGERS, "f1", ANONYMOUS, True),
    (ONLY_MANAGERS, "f2", ALICE, True),
    # A user's own flow-level setting beats their role's.
    (USER_OVER_ROLE, "f1", Identity("alice", ["Contractor"]), True),
    (USER_OVER_ROLE, "f1", Identity("bob", ["Contractor"]), False),
    # Deny wins among roles of one level.
    (DENY_AMONG_ROLES, "f1", Identity("alice", ["Auditor", "Contractor"]), False),
    (DENY_AMONG_ROLES.with_default(DENY), "f1", Identity("alice", ["Auditor"]), True),
    # Flow-level settings come before app-wide ones, whatever their subject.
    (FLOW_OVER_APP, "f1", Identity("alice", ["Manager"]), True),
    (FLOW_OVER_APP, "f2", Identity("alice", ["Manager"]), False),
    (build((User("alice"), GRANT, None), (Role(AUTHENTICATED), DENY, "f1")), "f1", ALICE, False),
    # App-wide: the user before the roles before the system role.
    (APP_USER_OVER_ROLE, "f2", Identity("alice", ["Contractor"]), True),
    (APP_ROLE_OVER_SYSTEM, "f1", Identity("bob", ["Manager"]), True),
    (APP_ROLE_OVER_SYSTEM, "f1", BOB, False),
    (NO_ANONYMOUS, "f1", ANONYMOUS, False),
    (NO_ANONYMOUS, "f1", BOB, True),
    # The default comes last.
    (build(default=DENY), "f1", Identity("alice", ["Manager"]), False),
    (build(default=GRANT), "f2", ANONYMOUS, True),
    (build((Role(AUTHENTICATED), GRANT, None), default=DENY), "f2", ANONYMOUS, False),
]


def test_cedar_encoding_gives_the_answers_spec_section_3_gives() -> None:
    cases = [Case(settings, flow, identity) for settings, flow, identity, _ in KNOWN]
    expected = [allowed for *_, allowed in KNOWN]
    assert cedar_allows(cases) == expected
    assert [resolve(case.settings, case.flow, case.identity).allowed for case in cases] == expected


# ---------------------------------------------------------------------------
# The exhaustive comparison.


def relevant(identity: Identity) -> list[Subject]:
    """The subjects whose settings can decide for ``identity``: user, custom roles, system role."""
    user: list[Subject] = [] if identity.user_id is None else [User(identity.user_id)]
    return [*user, *(Role(role) for role in identity.sorted_roles), Role(identity.system_role)]


def opposite(permission: Permission) -> Permission:
    return DENY if permission is GRANT else GRANT


def level_of(
    subjects: Sequence[Subject], values: Sequence[Permission], others: dict[Subject, Permission]
) -> Level:
    entries = {**others, **dict(zip(subjects, values, strict=True))}
    return Level(
        users={s.id: p for s, p in entries.items() if isinstance(s, User)},
        roles={s.name: p for s, p in entries.items() if isinstance(s, Role)},
    )


def cases_for(identity: Identity) -> Iterator[Case]:
    """Every assignment of the identity's subjects on f1 and app-wide, with both defaults.

    f2 takes the assignment half-way round the enumeration from f1's, so that f1's
    and f2's always differ and f2's, too, go through every one. The subjects the
    identity cannot match hold the opposite of the default for even-numbered app-wide
    assignments and nothing for odd ones.
    """
    subjects = relevant(identity)
    assignments = list(itertools.product((GRANT, DENY, INHERIT), repeat=len(subjects)))
    half = (len(assignments) + 1) // 2
    irrelevant = [subject for subject in SUBJECTS if subject not in subjects]
    for default in (GRANT, DENY):
        for parity, noise in enumerate((opposite(default), INHERIT)):
            others = dict.fromkeys(irrelevant, noise)
            levels = [level_of(subjects, values, others) for values in assignments]
            for app in levels[parity::2]:
                for index in range(half):
                    f1 = levels[index]
                    f2 = levels[(index + half) % len(levels)]
                    settings = Settings(default=default, app=app, flows={"f1": f1, "f2": f2})
                    yield Case(settings, "f1", identity)
                    yield Case(settings, "f2", identity)


def describe(settings: Settings) -> str:
    """The settings in one line, e.g. "default GRANT; app-wide: role Manager DENY; f1: -"."""
    parts = [f"default {settings.default}"]
    for name, level in [("app-wide", settings.app), *((f, settings.level(f)) for f in FLOWS)]:
        entries = [f"{User(user)} {p}" for user, p in sorted(level.users.items())]
        entries += [f"{Role(role)} {p}" for role, p in sorted(level.roles.items())]
        parts.append(f"{name}: {', '.join(entries) or '-'}")
    return "; ".join(parts)


def relevant_layers(identity: Identity) -> set[Layer]:
    """The layers that can decide for ``identity``: the user's need a user, the roles' roles."""
    layers: set[Layer] = {"flow.system_role", "app.system_role", "default"}
    if identity.user_id is not None:
        layers |= {"flow.user", "app.user"}
    if identity.roles:
        layers |= {"flow.role", "app.role"}
    return layers


BATCH = 6000


def batches(cases: Iterator[Case]) -> Iterator[list[Case]]:
    while batch := list(itertools.islice(cases, BATCH)):
        yield batch


@pytest.mark.parametrize("identity", IDENTITIES, ids=caller_id)
def test_resolver_agrees_with_cedar_on_every_setting_that_can_matter(identity: Identity) -> None:
    reached: set[tuple[Layer, bool]] = set()
    compared = 0
    for batch in batches(cases_for(identity)):
        decisions = [resolve(case.settings, case.flow, case.identity) for case in batch]
        cedar = cedar_allows(batch)
        mismatches = [
            (case, decision, allowed)
            for case, decision, allowed in zip(batch, decisions, cedar, strict=True)
            if decision.allowed is not allowed
        ]
        assert not mismatches, "\n".join(
            f"{describe(case.settings)}; {case.identity!r} on {case.flow}: "
            f"resolver {decision.allowed} ({decision.reason}), Cedar {allowed}"
            for case, decision, allowed in mismatches[:5]
        )
        reached.update((decision.layer, decision.allowed) for decision in decisions)
        compared += len(batch)
    layers = relevant_layers(identity)
    assert reached == {(layer, allowed) for layer in layers for allowed in (True, False)}
    subjects = len(relevant(identity))
    assert compared == 2 * 2 * 3**subjects * ((3**subjects + 1) // 2)
