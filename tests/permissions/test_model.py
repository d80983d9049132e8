"""The permission model: subjects, identities, levels and settings snapshots."""

import dataclasses
from collections.abc import Iterable

import pytest

import permissions
from permissions import (
    ANONYMOUS,
    AUTHENTICATED,
    NON_AUTHENTICATED,
    SYSTEM_ROLES,
    Decision,
    Identity,
    Level,
    Permission,
    Role,
    Settings,
    User,
)

GRANT, DENY, INHERIT = Permission.GRANT, Permission.DENY, Permission.INHERIT


def test_public_names_are_exactly_the_documented_ones() -> None:
    assert sorted(permissions.__all__) == [
        "ANONYMOUS",
        "AUTHENTICATED",
        "Decision",
        "Identity",
        "Layer",
        "Level",
        "NON_AUTHENTICATED",
        "Permission",
        "Role",
        "SYSTEM_ROLES",
        "Settings",
        "Subject",
        "User",
        "resolve",
    ]
    for name in permissions.__all__:
        assert hasattr(permissions, name), name


# Permission, User, Role


def test_permission_values_are_their_names() -> None:
    assert [p.value for p in Permission] == ["GRANT", "DENY", "INHERIT"]
    assert Permission.GRANT == "GRANT"
    assert Permission("DENY") is Permission.DENY
    assert str(Permission.INHERIT) == "INHERIT"


def test_subjects_read_naturally_in_reasons() -> None:
    assert str(User("alice")) == "user alice"
    assert str(Role("Manager")) == "role Manager"


def test_subjects_compare_and_hash_by_value() -> None:
    assert User("alice") == User("alice")
    assert User("alice") != Role("alice")  # type: ignore[comparison-overlap]
    assert len({User("alice"), User("alice"), Role("alice")}) == 2


@pytest.mark.parametrize(("make", "field"), [(User, "id"), (Role, "name")])
def test_subjects_are_frozen(make: type[User] | type[Role], field: str) -> None:
    subject = make("x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(subject, field, "y")


@pytest.mark.parametrize("make", [User, Role])
def test_subjects_refuse_empty_names(make: type[User] | type[Role]) -> None:
    with pytest.raises(ValueError, match="empty"):
        make("")


@pytest.mark.parametrize("make", [User, Role])
def test_subjects_refuse_non_string_names(make: type[User] | type[Role]) -> None:
    with pytest.raises(TypeError):
        make(7)  # type: ignore[arg-type]


def test_system_roles_are_the_two_computed_roles() -> None:
    assert NON_AUTHENTICATED == "NonAuthenticatedUser"
    assert AUTHENTICATED == "AuthenticatedUser"
    assert frozenset({"NonAuthenticatedUser", "AuthenticatedUser"}) == SYSTEM_ROLES


def test_system_roles_can_be_role_subjects() -> None:
    assert Role(NON_AUTHENTICATED).name == "NonAuthenticatedUser"


# Identity


def test_anonymous_identity_has_the_non_authenticated_system_role() -> None:
    assert Identity() == ANONYMOUS
    assert ANONYMOUS.is_anonymous
    assert ANONYMOUS.user_id is None
    assert ANONYMOUS.roles == frozenset()
    assert ANONYMOUS.system_role == NON_AUTHENTICATED


def test_identity_with_a_user_has_the_authenticated_system_role() -> None:
    identity = Identity(user_id="alice", roles={"Manager"})
    assert not identity.is_anonymous
    assert identity.system_role == AUTHENTICATED


def test_sorted_roles_orders_the_custom_roles_however_they_were_given() -> None:
    assert Identity("a", ["b", "C", "a"]).sorted_roles == ("C", "a", "b")
    assert Identity("a", iter(["b", "a"])).sorted_roles == ("a", "b")
    assert ANONYMOUS.sorted_roles == ()


def test_anonymous_identity_may_hold_custom_roles() -> None:
    identity = Identity(roles=["Kiosk"])
    assert identity.is_anonymous
    assert identity.roles == frozenset({"Kiosk"})


@pytest.mark.parametrize(
    "roles",
    [
        ["A", "B"],
        ("B", "A"),
        {"A", "B"},
        frozenset({"A", "B"}),
        {"A": 1, "B": 2}.keys(),
        (name for name in ["A", "B", "A"]),
    ],
    ids=["list", "tuple", "set", "frozenset", "dict-keys", "generator"],
)
def test_identity_accepts_any_iterable_of_role_names(roles: Iterable[str]) -> None:
    identity = Identity(user_id="a", roles=roles)
    assert type(identity.roles) is frozenset
    assert identity.roles == frozenset({"A", "B"})
    assert identity == Identity(user_id="a", roles={"A", "B"})


def test_identities_compare_and_hash_by_value() -> None:
    assert Identity(user_id="a", roles={"X"}) == Identity(user_id="a", roles=["X"])
    assert hash(Identity(user_id="a", roles={"X", "Y"})) == hash(Identity("a", ["Y", "X"]))
    assert Identity(user_id="a", roles={"X"}) != Identity(user_id="a")
    assert Identity(user_id="a") != Identity(user_id="b")
    assert len({Identity("a", ["X"]), Identity("a", ("X",)), ANONYMOUS, Identity()}) == 2


@pytest.mark.parametrize("system_role", sorted(SYSTEM_ROLES))
@pytest.mark.parametrize("user_id", [None, "alice"])
def test_identity_refuses_supplied_system_roles(system_role: str, user_id: str | None) -> None:
    with pytest.raises(ValueError, match=system_role):
        Identity(user_id=user_id, roles=["Manager", system_role])


def test_identity_refuses_a_bare_string_as_roles() -> None:
    with pytest.raises(TypeError, match="single string"):
        Identity(user_id="alice", roles="Manager")


@pytest.mark.parametrize("role", [7, None, b"Manager"])
def test_identity_refuses_non_string_roles(role: object) -> None:
    with pytest.raises(TypeError):
        Identity(user_id="alice", roles=["Manager", role])  # type: ignore[list-item]


def test_identity_refuses_empty_role_names() -> None:
    with pytest.raises(ValueError, match="empty"):
        Identity(user_id="alice", roles=[""])


def test_identity_refuses_an_empty_user_id() -> None:
    with pytest.raises(ValueError, match="empty"):
        Identity(user_id="")


def test_identity_refuses_a_non_string_user_id() -> None:
    with pytest.raises(TypeError):
        Identity(user_id=42)  # type: ignore[arg-type]


def test_identity_is_frozen() -> None:
    identity = Identity(user_id="alice")
    with pytest.raises(dataclasses.FrozenInstanceError):
        identity.user_id = "mallory"  # type: ignore[misc]


def test_identity_repr_lists_roles_in_order() -> None:
    assert repr(Identity("a", ["b", "C", "a"])) == (
        "Identity(user_id='a', roles=frozenset({'C', 'a', 'b'}))"
    )


# Decision


def test_decision_is_a_frozen_value() -> None:
    decision = Decision(True, "default", None, "granted by default")
    assert decision == Decision(True, "default", None, "granted by default")
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.allowed = False  # type: ignore[misc]


# Level


def test_level_drops_inherit_settings() -> None:
    level = Level(users={"alice": GRANT, "bob": INHERIT}, roles={"M": INHERIT, "C": DENY})
    assert dict(level.users) == {"alice": GRANT}
    assert dict(level.roles) == {"C": DENY}
    assert level == Level(users={"alice": GRANT}, roles={"C": DENY})


@pytest.mark.parametrize("value", ["MAYBE", "grant", 1, None, True])
def test_level_refuses_values_that_are_not_permissions(value: object) -> None:
    with pytest.raises(ValueError, match="GRANT, DENY or INHERIT"):
        Level(users={"alice": value})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="GRANT, DENY or INHERIT"):
        Level(roles={"M": value})  # type: ignore[dict-item]


def test_level_normalises_permission_strings_to_the_enum() -> None:
    level = Level(users={"alice": "GRANT"})  # type: ignore[dict-item]
    assert level.users["alice"] is GRANT


def test_level_refuses_empty_subject_names() -> None:
    with pytest.raises(ValueError):
        Level(users={"": GRANT})
    with pytest.raises(ValueError):
        Level(roles={"": GRANT})


def test_level_precomputes_granted_and_denied_custom_roles() -> None:
    level = Level(
        roles={"M": GRANT, "A": GRANT, "C": DENY, AUTHENTICATED: DENY, NON_AUTHENTICATED: GRANT}
    )
    assert level.granted_roles == frozenset({"M", "A"})
    assert level.denied_roles == frozenset({"C"})
    assert level.roles[AUTHENTICATED] is DENY


def test_level_mappings_are_read_only() -> None:
    level = Level(users={"alice": GRANT})
    with pytest.raises(TypeError):
        level.users["bob"] = DENY  # type: ignore[index]


def test_level_does_not_share_the_callers_mapping() -> None:
    users = {"alice": GRANT}
    level = Level(users=users)
    users["alice"] = DENY
    assert level.users["alice"] is GRANT


def test_empty_level() -> None:
    assert Level() == Level.EMPTY
    assert not Level.EMPTY
    assert Level(users={"a": GRANT})
    assert Level.EMPTY.granted_roles == Level.EMPTY.denied_roles == frozenset()


def test_level_with_user_returns_a_new_level() -> None:
    level = Level(roles={"M": GRANT})
    changed = level.with_user("alice", DENY)
    assert dict(changed.users) == {"alice": DENY}
    assert changed.roles == level.roles
    assert dict(level.users) == {}
    assert changed.with_user("alice", INHERIT) == level


def test_level_with_role_updates_the_precomputed_sets() -> None:
    level = Level().with_role("M", GRANT).with_role("C", DENY)
    assert level.granted_roles == {"M"}
    assert level.denied_roles == {"C"}
    flipped = level.with_role("M", DENY).with_role("C", INHERIT)
    assert flipped.granted_roles == frozenset()
    assert flipped.denied_roles == {"M"}
    assert dict(flipped.roles) == {"M": DENY}
    assert level.granted_roles == {"M"}


def test_level_with_refuses_bad_permissions() -> None:
    with pytest.raises(ValueError):
        Level().with_user("alice", "yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Level().with_role("", GRANT)


def test_levels_hash_by_value() -> None:
    assert hash(Level(users={"a": GRANT})) == hash(Level().with_user("a", GRANT))


# Settings


def test_default_settings_grant_and_hold_nothing() -> None:
    settings = Settings()
    assert settings.default is GRANT
    assert settings.app == Level.EMPTY
    assert dict(settings.flows) == {}


def test_settings_default_must_be_grant_or_deny() -> None:
    assert Settings(default=DENY).default is DENY
    with pytest.raises(ValueError, match="INHERIT"):
        Settings(default=INHERIT)
    with pytest.raises(ValueError, match="INHERIT"):
        Settings().with_default(INHERIT)
    with pytest.raises(ValueError):
        Settings(default="NO")  # type: ignore[arg-type]


def test_with_default_returns_a_new_snapshot() -> None:
    settings = Settings()
    assert settings.with_default(DENY).default is DENY
    assert settings.default is GRANT


def test_level_lookup() -> None:
    flow_level = Level(users={"alice": GRANT})
    settings = Settings(app=Level(users={"bob": DENY}), flows={"f": flow_level})
    assert settings.level("f") is flow_level
    assert settings.level(None) is settings.app
    assert settings.level("unknown") is Level.EMPTY


def test_settings_refuse_things_that_are_not_levels() -> None:
    with pytest.raises(TypeError):
        Settings(app={"users": {}})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Settings(flows={"f": {"users": {}}})  # type: ignore[dict-item]


def test_with_setting_app_wide_when_no_flow() -> None:
    settings = Settings().with_setting(Role("Contractor"), DENY)
    assert settings.app.denied_roles == {"Contractor"}
    assert dict(settings.flows) == {}


def test_with_setting_copies_only_the_touched_level() -> None:
    before = Settings(
        app=Level(users={"a": GRANT}),
        flows={"f": Level(users={"b": GRANT}), "g": Level(roles={"M": DENY})},
    )
    after = before.with_setting(User("c"), DENY, flow="f")
    assert after.app is before.app
    assert after.level("g") is before.level("g")
    assert dict(after.level("f").users) == {"b": GRANT, "c": DENY}
    assert dict(before.level("f").users) == {"b": GRANT}
    app_changed = before.with_setting(User("c"), DENY)
    assert app_changed.level("f") is before.level("f")
    assert app_changed.level("g") is before.level("g")
    assert dict(app_changed.app.users) == {"a": GRANT, "c": DENY}


def test_with_setting_inherit_removes_and_drops_empty_flows() -> None:
    settings = Settings().with_setting(User("alice"), GRANT, flow="f")
    assert "f" in settings.flows
    cleared = settings.with_setting(User("alice"), INHERIT, flow="f")
    assert "f" not in cleared.flows
    assert cleared == Settings()


def test_settings_equal_however_they_were_built() -> None:
    built = (
        Settings()
        .with_setting(Role("M"), GRANT, flow="f")
        .with_setting(User("alice"), DENY)
        .with_setting(Role("X"), DENY, flow="g")
        .with_setting(Role("X"), INHERIT, flow="g")
    )
    literal = Settings(
        app=Level(users={"alice": DENY}),
        flows={"f": Level(roles={"M": GRANT}), "g": Level()},
    )
    assert built == literal
    assert hash(built) == hash(literal)


def test_with_setting_accepts_system_roles_as_role_subjects() -> None:
    settings = Settings().with_setting(Role(NON_AUTHENTICATED), DENY, flow="f")
    assert settings.level("f").roles[NON_AUTHENTICATED] is DENY
    assert settings.level("f").denied_roles == frozenset()


def test_with_setting_refuses_other_subjects() -> None:
    with pytest.raises(TypeError):
        Settings().with_setting("alice", GRANT)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Settings().with_setting(User("alice"), GRANT, flow="")


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.default = DENY  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.flows["f"] = Level()  # type: ignore[index]
