"""The resolver against a reference model of SPEC's resolution table, on generated cases.

The reference works on plain dictionaries and walks a literal list of layers, so
that it can be checked by reading. Small alphabets make users, roles and flows
collide often, which is where precedence matters.
"""

from typing import Any

import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from permissions import (
    AUTHENTICATED,
    NON_AUTHENTICATED,
    Identity,
    Level,
    Permission,
    Role,
    Settings,
    User,
    resolve,
)

GRANT, DENY, INHERIT = Permission.GRANT, Permission.DENY, Permission.INHERIT

USERS = ["alice", "bob", "carol"]
CUSTOM_ROLES = ["Auditor", "Contractor", "Manager"]
FLOWS = ["f1", "f2"]

# ---------------------------------------------------------------------------
# The reference model.

Plain = dict[str, Any]  # {"default": "GRANT", "app": LEVEL, "flows": {name: LEVEL}}
EMPTY_LEVEL: Plain = {"users": {}, "roles": {}}

# (layer, which level, whose setting), in the order SPEC section 3 walks them.
LAYERS = [
    ("flow.user", "flow", "user"),
    ("flow.role", "flow", "custom roles"),
    ("flow.system_role", "flow", "system role"),
    ("app.user", "app", "user"),
    ("app.role", "app", "custom roles"),
    ("app.system_role", "app", "system role"),
]
ORDER = [layer for layer, _, _ in LAYERS] + ["default"]


def reference_resolve(plain: Plain, flow: str, identity: Identity) -> tuple[bool, str, Any]:
    """(allowed, layer, subject): the first layer with a GRANT or DENY decides, DENY first."""
    system_role = NON_AUTHENTICATED if identity.user_id is None else AUTHENTICATED
    for layer, where, whose in LAYERS:
        candidates: list[User | Role]
        level = plain["app"] if where == "app" else plain["flows"].get(flow, EMPTY_LEVEL)
        if whose == "user":
            candidates = [] if identity.user_id is None else [User(identity.user_id)]
        elif whose == "custom roles":
            candidates = [Role(name) for name in identity.roles]
        else:
            candidates = [Role(system_role)]
        for wanted in ("DENY", "GRANT"):
            matching = sorted(
                (subject for subject in candidates if plain_setting(level, subject) == wanted),
                key=str,
            )
            if matching:
                return wanted == "GRANT", layer, matching[0]
    return plain["default"] == "GRANT", "default", None


def plain_setting(level: Plain, subject: User | Role) -> str | None:
    if isinstance(subject, User):
        setting: str | None = level["users"].get(subject.id)
    else:
        setting = level["roles"].get(subject.name)
    return setting


def plain_from(
    default: Permission, writes: list[tuple[User | Role, Permission, str | None]]
) -> Plain:
    """Plain settings after the writes, in order; INHERIT is stored like any value."""
    plain: Plain = {"default": str(default), "app": {"users": {}, "roles": {}}, "flows": {}}
    for subject, permission, flow in writes:
        if flow is None:
            level = plain["app"]
        else:
            level = plain["flows"].setdefault(flow, {"users": {}, "roles": {}})
        if isinstance(subject, User):
            level["users"][subject.id] = str(permission)
        else:
            level["roles"][subject.name] = str(permission)
    return plain


# ---------------------------------------------------------------------------
# Generators.

subjects = st.one_of(
    st.sampled_from(USERS).map(User),
    st.sampled_from([*CUSTOM_ROLES, AUTHENTICATED, NON_AUTHENTICATED]).map(Role),
)
Write = tuple[User | Role, Permission, str | None]
writes_st = st.tuples(subjects, st.sampled_from(list(Permission)), st.sampled_from([None, *FLOWS]))
write_lists = st.lists(writes_st, max_size=30)
defaults = st.sampled_from([GRANT, DENY])
identities = st.builds(
    Identity,
    user_id=st.none() | st.sampled_from([*USERS, "dave"]),
    roles=st.frozensets(st.sampled_from(CUSTOM_ROLES)),
)
query_flows = st.sampled_from([*FLOWS, "f3"])


def apply(default: Permission, writes: list[Write]) -> Settings:
    result = Settings(default=default)
    for subject, permission, flow in writes:
        result = result.with_setting(subject, permission, flow)
    return result


def layer_number(layer: str) -> int:
    return ORDER.index(layer) + 1


# ---------------------------------------------------------------------------
# Properties.


@settings(max_examples=400)
@given(defaults, write_lists, query_flows, identities)
def test_resolver_agrees_with_the_reference(
    default: Permission, writes: list[Write], flow: str, identity: Identity
) -> None:
    plain = plain_from(default, writes)
    decision = resolve(apply(default, writes), flow, identity)
    assert (decision.allowed, decision.layer, decision.subject) == reference_resolve(
        plain, flow, identity
    )
    verb = "granted" if decision.allowed else "denied"
    assert decision.reason.startswith(f"{verb} by ")
    if decision.subject is not None:
        assert decision.reason.endswith(str(decision.subject))


WIDE_ROLES = [f"role-{i:02d}" for i in range(40)]
wide_writes = st.lists(
    st.tuples(
        st.sampled_from(WIDE_ROLES).map(Role),
        st.sampled_from([GRANT, DENY]),
        st.sampled_from([None, "f1"]),
    ),
    max_size=60,
)
wide_identities = st.builds(
    Identity, user_id=st.just("alice"), roles=st.frozensets(st.sampled_from(WIDE_ROLES))
)


@given(defaults, wide_writes, wide_identities)
def test_many_matching_roles_report_the_first_alphabetically(
    default: Permission, writes: list[Write], identity: Identity
) -> None:
    """Identities with up to 40 roles, so matches fall anywhere in their sorted roles."""
    decision = resolve(apply(default, writes), "f1", identity)
    assert (decision.allowed, decision.layer, decision.subject) == reference_resolve(
        plain_from(default, writes), "f1", identity
    )


@given(defaults, write_lists)
def test_settings_built_from_plain_levels_equal_settings_built_by_writes(
    default: Permission, writes: list[Write]
) -> None:
    plain = plain_from(default, writes)
    literal = Settings(
        default=Permission(plain["default"]),
        app=Level(**plain["app"]),
        flows={name: Level(**level) for name, level in plain["flows"].items()},
    )
    assert literal == apply(default, writes)


@given(defaults, write_lists, query_flows, identities, st.data())
def test_decision_does_not_depend_on_the_order_of_settings_or_roles(
    default: Permission,
    writes: list[Write],
    flow: str,
    identity: Identity,
    data: st.DataObject,
) -> None:
    last_write = {(subject, where): permission for subject, permission, where in writes}
    distinct = [(subject, permission, where) for (subject, where), permission in last_write.items()]
    shuffled = data.draw(st.permutations(distinct))
    roles = data.draw(st.permutations(sorted(identity.roles)))
    reordered = Identity(identity.user_id, roles)
    assert apply(default, shuffled) == apply(default, writes)
    assert resolve(apply(default, shuffled), flow, reordered) == resolve(
        apply(default, writes), flow, identity
    )


@given(defaults, write_lists, query_flows, identities)
def test_a_deny_for_the_deciding_subject_at_the_deciding_layer_denies(
    default: Permission, writes: list[Write], flow: str, identity: Identity
) -> None:
    before = apply(default, writes)
    decision = resolve(before, flow, identity)
    if decision.subject is None:
        assert decision.layer == "default"
        after = before.with_default(DENY)
    else:
        where = flow if decision.layer.startswith("flow.") else None
        after = before.with_setting(decision.subject, DENY, where)
    denied = resolve(after, flow, identity)
    assert not denied.allowed
    assert denied.layer == decision.layer


def layer_of_write(write: Write, flow: str, identity: Identity) -> int | None:
    """The layer a write touches for this activation, or None when it touches none."""
    subject, _, where = write
    if where is not None and where != flow:
        return None
    first = 1 if where is not None else 4
    if isinstance(subject, User):
        return first if subject.id == identity.user_id else None
    if subject.name in identity.roles:
        return first + 1
    if subject.name == identity.system_role:
        return first + 2
    return None


@given(defaults, write_lists, query_flows, identities, writes_st)
def test_changes_below_the_deciding_layer_change_nothing(
    default: Permission, writes: list[Write], flow: str, identity: Identity, change: Write
) -> None:
    before = apply(default, writes)
    decision = resolve(before, flow, identity)
    deciding = layer_number(decision.layer)
    touched = layer_of_write(change, flow, identity)
    after = apply(default, [*writes, change])
    if touched is None or touched > deciding:
        assert resolve(after, flow, identity) == decision
    if deciding < layer_number("default"):
        assert resolve(before.with_default(GRANT), flow, identity) == decision
        assert resolve(before.with_default(DENY), flow, identity) == decision


@pytest.mark.parametrize("layer", ORDER)
@pytest.mark.parametrize("allowed", [True, False])
def test_generators_reach_every_layer_both_ways(layer: str, allowed: bool) -> None:
    """Guards the properties above against generators that never exercise a layer."""

    def decides(case: tuple[Permission, list[Write], str, Identity]) -> bool:
        decision = resolve(apply(case[0], case[1]), case[2], case[3])
        return decision.layer == layer and decision.allowed is allowed

    cases = st.tuples(defaults, write_lists, query_flows, identities)
    find(cases, decides, settings=settings(max_examples=5000, phases=[Phase.generate]))
