"""The resolver on hand-picked cases, including the ones people get wrong."""

import itertools
from typing import Any, cast

import pytest

from permissions import (
    ANONYMOUS,
    AUTHENTICATED,
    NON_AUTHENTICATED,
    Decision,
    Identity,
    Level,
    Permission,
    Role,
    Settings,
    User,
    resolve,
)

GRANT, DENY, INHERIT = Permission.GRANT, Permission.DENY, Permission.INHERIT
FLOW = "order-approval"
ALICE = Identity(user_id="alice")
BOB = Identity(user_id="bob")


def build(*settings: tuple[User | Role, Permission, str | None]) -> Settings:
    """Settings with each (subject, permission, flow) applied in order."""
    result = Settings()
    for subject, permission, flow in settings:
        result = result.with_setting(subject, permission, flow)
    return result


# Each layer decides, and says so.


@pytest.mark.parametrize(
    ("settings", "identity", "expected"),
    [
        (
            build((User("alice"), DENY, FLOW)),
            ALICE,
            Decision(False, "flow.user", User("alice"), "denied by flow-level user alice"),
        ),
        (
            build((Role("Contractor"), DENY, FLOW)),
            Identity("bob", ["Contractor"]),
            Decision(
                False, "flow.role", Role("Contractor"), "denied by flow-level role Contractor"
            ),
        ),
        (
            build((Role(AUTHENTICATED), GRANT, FLOW)),
            BOB,
            Decision(
                True,
                "flow.system_role",
                Role(AUTHENTICATED),
                "granted by flow-level system role AuthenticatedUser",
            ),
        ),
        (
            build((User("alice"), GRANT, None)),
            ALICE,
            Decision(True, "app.user", User("alice"), "granted by app-wide user alice"),
        ),
        (
            build((Role("Manager"), GRANT, None)),
            Identity("bob", ["Manager"]),
            Decision(True, "app.role", Role("Manager"), "granted by app-wide role Manager"),
        ),
        (
            build((Role(NON_AUTHENTICATED), DENY, None)),
            ANONYMOUS,
            Decision(
                False,
                "app.system_role",
                Role(NON_AUTHENTICATED),
                "denied by app-wide system role NonAuthenticatedUser",
            ),
        ),
        (Settings(), BOB, Decision(True, "default", None, "granted by default")),
        (
            Settings(default=DENY),
            BOB,
            Decision(False, "default", None, "denied by default"),
        ),
    ],
    ids=lambda value: value.layer if isinstance(value, Decision) else "",
)
def test_each_layer_decides_with_a_readable_reason(
    settings: Settings, identity: Identity, expected: Decision
) -> None:
    assert resolve(settings, FLOW, identity) == expected


# Precedence between layers.


def test_flow_user_grant_beats_flow_role_deny() -> None:
    settings = build((Role("Contractor"), DENY, FLOW), (User("alice"), GRANT, FLOW))
    decision = resolve(settings, FLOW, Identity("alice", ["Contractor"]))
    assert decision.allowed
    assert decision.layer == "flow.user"


def test_flow_user_deny_beats_flow_role_grant() -> None:
    settings = build((Role("Manager"), GRANT, FLOW), (User("alice"), DENY, FLOW))
    decision = resolve(settings, FLOW, Identity("alice", ["Manager"]))
    assert not decision.allowed
    assert decision.layer == "flow.user"


def test_flow_level_role_beats_app_wide_user() -> None:
    settings = build((User("alice"), DENY, None), (Role("Manager"), GRANT, FLOW))
    decision = resolve(settings, FLOW, Identity("alice", ["Manager"]))
    assert (decision.allowed, decision.layer) == (True, "flow.role")


def test_flow_level_system_role_beats_app_wide_user() -> None:
    settings = build((User("alice"), GRANT, None), (Role(AUTHENTICATED), DENY, FLOW))
    decision = resolve(settings, FLOW, ALICE)
    assert (decision.allowed, decision.layer) == (False, "flow.system_role")


def test_app_wide_user_beats_app_wide_roles() -> None:
    settings = build((Role("Contractor"), DENY, None), (User("alice"), GRANT, None))
    decision = resolve(settings, FLOW, Identity("alice", ["Contractor"]))
    assert (decision.allowed, decision.layer) == (True, "app.user")


def test_app_wide_custom_role_beats_app_wide_system_role() -> None:
    settings = build((Role(AUTHENTICATED), DENY, None), (Role("Manager"), GRANT, None))
    decision = resolve(settings, FLOW, Identity("bob", ["Manager"]))
    assert (decision.allowed, decision.layer) == (True, "app.role")


def test_settings_of_another_flow_do_not_apply() -> None:
    settings = build((User("alice"), DENY, "other-flow"))
    assert resolve(settings, FLOW, ALICE).layer == "default"


def test_unknown_flow_resolves_with_the_app_wide_settings() -> None:
    settings = build((User("alice"), DENY, None))
    decision = resolve(settings, "no-such-flow", ALICE)
    assert (decision.allowed, decision.layer) == (False, "app.user")


# Deny wins among custom roles, and the reported role does not depend on order.


@pytest.mark.parametrize("flow", [FLOW, None], ids=["flow", "app"])
@pytest.mark.parametrize("order", list(itertools.permutations(["Manager", "Contractor"])))
def test_deny_wins_between_two_roles_in_every_order(
    flow: str | None, order: tuple[str, str]
) -> None:
    permission = {"Manager": GRANT, "Contractor": DENY}
    settings = build(*((Role(name), permission[name], flow) for name in order))
    for roles in itertools.permutations(order):
        decision = resolve(settings, FLOW, Identity("bob", list(roles)))
        assert not decision.allowed
        assert decision.subject == Role("Contractor")
        assert decision.layer == ("flow.role" if flow else "app.role")


@pytest.mark.parametrize("order", list(itertools.permutations(["Zed", "Alpha", "Mid"])))
def test_the_alphabetically_first_deciding_role_is_reported(order: tuple[str, ...]) -> None:
    settings = build(*((Role(name), DENY, FLOW) for name in order), (Role("Aaa"), GRANT, FLOW))
    decision = resolve(settings, FLOW, Identity("bob", ["Aaa", *order]))
    assert decision.subject == Role("Alpha")
    assert decision.reason == "denied by flow-level role Alpha"


def test_many_granting_roles_report_the_first_alphabetically() -> None:
    names = [f"role-{i:03d}" for i in range(200)]
    settings = Settings(flows={FLOW: Level(roles=dict.fromkeys(names[50:], GRANT))})
    decision = resolve(settings, FLOW, Identity("bob", reversed(names)))
    assert decision == Decision(
        True, "flow.role", Role("role-050"), "granted by flow-level role role-050"
    )


# "deny AuthenticatedUser, grant Manager" means "only managers".


ONLY_MANAGERS = build((Role(AUTHENTICATED), DENY, FLOW), (Role("Manager"), GRANT, FLOW))


def test_only_managers_admits_a_manager() -> None:
    decision = resolve(ONLY_MANAGERS, FLOW, Identity("alice", ["Manager", "Staff"]))
    assert decision == Decision(
        True, "flow.role", Role("Manager"), "granted by flow-level role Manager"
    )


def test_only_managers_denies_a_plain_user() -> None:
    decision = resolve(ONLY_MANAGERS, FLOW, Identity("bob", ["Staff"]))
    assert (decision.allowed, decision.layer, decision.subject) == (
        False,
        "flow.system_role",
        Role(AUTHENTICATED),
    )


@pytest.mark.parametrize("default", [GRANT, DENY])
def test_only_managers_leaves_anonymous_callers_to_the_default(default: Permission) -> None:
    decision = resolve(ONLY_MANAGERS.with_default(default), FLOW, ANONYMOUS)
    assert (decision.allowed, decision.layer) == (default is GRANT, "default")


def test_anonymous_callers_with_custom_roles_still_get_the_anonymous_system_role() -> None:
    settings = build((Role(AUTHENTICATED), GRANT, FLOW), (Role(NON_AUTHENTICATED), DENY, FLOW))
    decision = resolve(settings, FLOW, Identity(roles=["Kiosk"]))
    assert (decision.allowed, decision.layer) == (False, "flow.system_role")


# System roles.


def test_app_wide_deny_of_anonymous_denies_anonymous_only() -> None:
    settings = build((Role(NON_AUTHENTICATED), DENY, None))
    assert resolve(settings, FLOW, ANONYMOUS).layer == "app.system_role"
    assert not resolve(settings, FLOW, ANONYMOUS).allowed
    assert resolve(settings, FLOW, BOB) == Decision(True, "default", None, "granted by default")


def test_flow_level_grant_of_anonymous_overrides_app_wide_deny() -> None:
    settings = build((Role(NON_AUTHENTICATED), DENY, None), (Role(NON_AUTHENTICATED), GRANT, FLOW))
    decision = resolve(settings, FLOW, ANONYMOUS)
    assert (decision.allowed, decision.layer) == (True, "flow.system_role")
    assert not resolve(settings, "other-flow", ANONYMOUS).allowed


def test_anonymous_identities_skip_user_layers() -> None:
    settings = build((Role("Kiosk"), GRANT, FLOW))
    decision = resolve(settings, FLOW, Identity(roles=["Kiosk"]))
    assert (decision.allowed, decision.layer) == (True, "flow.role")


def test_inherit_removes_a_setting_so_the_next_layer_decides() -> None:
    settings = build((User("alice"), DENY, FLOW), (Role(AUTHENTICATED), GRANT, None))
    assert resolve(settings, FLOW, ALICE).layer == "flow.user"
    cleared = settings.with_setting(User("alice"), INHERIT, FLOW)
    assert resolve(cleared, FLOW, ALICE).layer == "app.system_role"


# Fail closed.


def _error_reason(decision: Decision) -> str:
    assert decision.allowed is False
    assert decision.layer == "error"
    assert decision.subject is None
    prefix = "denied: error while resolving permissions: "
    assert decision.reason.startswith(prefix)
    return decision.reason.removeprefix(prefix)


def test_malformed_user_setting_denies() -> None:
    level = Level(users={"alice": GRANT})
    object.__setattr__(level, "_users", {"alice": "MAYBE"})
    reason = _error_reason(resolve(Settings(flows={FLOW: level}), FLOW, ALICE))
    assert "MAYBE" in reason


def test_permission_strings_forced_into_a_level_are_malformed() -> None:
    level = Level()
    object.__setattr__(level, "_users", {"alice": "GRANT"})
    _error_reason(resolve(Settings(app=level), FLOW, ALICE))


def test_malformed_system_role_setting_denies() -> None:
    level = Level()
    object.__setattr__(level, "_roles", {AUTHENTICATED: 1})
    _error_reason(resolve(Settings(app=level), FLOW, BOB))


def test_malformed_role_sets_deny() -> None:
    level = Level(roles={"Manager": GRANT})
    object.__setattr__(level, "denied_roles", None)
    _error_reason(resolve(Settings(flows={FLOW: level}), FLOW, Identity("bob", ["Manager"])))


def test_malformed_default_denies() -> None:
    settings = Settings()
    object.__setattr__(settings, "default", INHERIT)
    _error_reason(resolve(settings, FLOW, BOB))


def test_a_malformed_setting_below_the_deciding_layer_is_not_reached() -> None:
    settings = build((User("alice"), GRANT, FLOW))
    object.__setattr__(settings, "default", "whatever")
    assert resolve(settings, FLOW, ALICE).layer == "flow.user"


class ExplodingSettings:
    """A settings source whose store is down."""

    @property
    def flows(self) -> Any:
        raise ConnectionError("settings store unreachable")


def test_a_failing_settings_source_denies() -> None:
    reason = _error_reason(resolve(cast(Settings, ExplodingSettings()), FLOW, ALICE))
    assert reason == "ConnectionError: settings store unreachable"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot print")


class RaisingSettings:
    @property
    def flows(self) -> Any:
        raise Unprintable


def test_an_error_that_cannot_be_printed_still_denies() -> None:
    assert _error_reason(resolve(cast(Settings, RaisingSettings()), FLOW, ALICE)) == "Unprintable"


@pytest.mark.parametrize(
    ("settings", "flow", "identity"),
    [
        (None, FLOW, ALICE),
        (Settings(), None, ALICE),
        (Settings(), ["a", "list"], ALICE),
        (Settings(), FLOW, None),
        (Settings(), FLOW, "alice"),
        ({"default": "GRANT"}, FLOW, ALICE),
    ],
)
def test_wrong_argument_types_deny(settings: object, flow: object, identity: object) -> None:
    _error_reason(resolve(cast(Settings, settings), cast(str, flow), cast(Identity, identity)))


def test_a_tampered_identity_denies() -> None:
    identity = Identity("bob", ["Manager"])
    object.__setattr__(identity, "roles", "Manager")
    settings = build((Role("Manager"), GRANT, FLOW))
    _error_reason(resolve(settings, FLOW, identity))


def test_role_sets_that_disagree_with_each_other_deny() -> None:
    level = Level(roles={"Manager": GRANT})
    object.__setattr__(level, "granted_roles", frozenset())
    reason = _error_reason(resolve(Settings(app=level), FLOW, Identity("bob", ["Manager"])))
    assert "inconsistent role settings in layer app.role" in reason
