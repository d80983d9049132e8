"""Values the resolver works on: permissions, subjects, identities and settings.

Everything here is immutable. Settings change by building a new snapshot
(copy-on-write of the one level touched), so a resolver call always sees one
consistent state and snapshots can be shared between tasks without locks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import ClassVar, Literal, TypeAlias

__all__ = [
    "ANONYMOUS",
    "AUTHENTICATED",
    "NON_AUTHENTICATED",
    "SYSTEM_ROLES",
    "Decision",
    "Identity",
    "Layer",
    "Level",
    "Permission",
    "Role",
    "Settings",
    "Subject",
    "User",
]


class Permission(StrEnum):
    """One permission setting: the three states of a settings toggle.

    ``INHERIT`` is the gray check, "no setting at this level": resolution moves on
    to the next layer. Settings objects never store it; giving it removes a setting.
    """

    GRANT = "GRANT"
    DENY = "DENY"
    INHERIT = "INHERIT"


NON_AUTHENTICATED = "NonAuthenticatedUser"
"""System role every anonymous identity holds."""

AUTHENTICATED = "AuthenticatedUser"
"""System role every identity with a user id holds."""

SYSTEM_ROLES = frozenset({NON_AUTHENTICATED, AUTHENTICATED})
"""Role names that are computed from an identity and can never be supplied in its roles."""


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    return value


@dataclass(frozen=True, slots=True)
class User:
    """A user as the subject of a permission setting, named by its id."""

    id: str

    def __post_init__(self) -> None:
        _check_name(self.id, "user id")

    def __str__(self) -> str:
        return f"user {self.id}"


@dataclass(frozen=True, slots=True)
class Role:
    """A role as the subject of a permission setting.

    Both custom roles and the system roles (``NonAuthenticatedUser``,
    ``AuthenticatedUser``) can be subjects, so that, for instance, anonymous callers
    can be denied a flow.
    """

    name: str

    def __post_init__(self) -> None:
        _check_name(self.name, "role name")

    def __str__(self) -> str:
        return f"role {self.name}"


Subject: TypeAlias = User | Role
"""Who a permission setting is about."""


@dataclass(frozen=True, slots=True, init=False)
class Identity:
    """Who is activating a flow: a user id (``None`` when anonymous) and custom roles.

    The system role is derived from the user id and never supplied, so a caller
    cannot claim ``AuthenticatedUser`` without a user, nor shed
    ``NonAuthenticatedUser`` while anonymous. ``roles`` accepts any iterable of role
    names and is stored as a frozenset, so identities compare and hash by value.
    """

    user_id: str | None
    roles: frozenset[str]
    sorted_roles: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """The custom roles in alphabetical order, sorted once when the identity is made:
    runs and logs show them in this order, and the resolver finds the smallest
    matching role by stopping at the first match."""

    def __init__(self, user_id: str | None = None, roles: Iterable[str] = frozenset()) -> None:
        if user_id is not None:
            _check_name(user_id, "user id")
        if isinstance(roles, str):
            raise TypeError("roles must be an iterable of role names, not a single string")
        frozen = frozenset(roles)
        for role in frozen:
            _check_name(role, "role name")
        supplied = frozen & SYSTEM_ROLES
        if supplied:
            raise ValueError(
                f"system roles are computed, not supplied: {', '.join(sorted(supplied))}"
            )
        object.__setattr__(self, "user_id", user_id)
        object.__setattr__(self, "roles", frozen)
        object.__setattr__(self, "sorted_roles", tuple(sorted(frozen)))

    @property
    def is_anonymous(self) -> bool:
        """Whether no user is behind this identity."""
        return self.user_id is None

    @property
    def system_role(self) -> str:
        """``NonAuthenticatedUser`` when anonymous, otherwise ``AuthenticatedUser``."""
        return NON_AUTHENTICATED if self.user_id is None else AUTHENTICATED

    def __repr__(self) -> str:
        roles = ", ".join(repr(role) for role in self.sorted_roles)
        return f"Identity(user_id={self.user_id!r}, roles=frozenset({{{roles}}}))"


ANONYMOUS = Identity()
"""The identity of a caller with no user and no custom roles."""


Layer: TypeAlias = Literal[
    "flow.user",
    "flow.role",
    "flow.system_role",
    "app.user",
    "app.role",
    "app.system_role",
    "default",
    "error",
]
"""Where a decision was taken: one of the seven resolution layers, or ``"error"``."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of resolving one activation, with what decided it and why.

    ``subject`` is the user or role whose setting decided, ``None`` for the default
    and for errors. ``reason`` is a sentence for logs and refusals, such as
    ``"denied by flow-level role Contractor"``.
    """

    allowed: bool
    layer: Layer
    subject: Subject | None
    reason: str


def _setting(value: object) -> Permission:
    if isinstance(value, Permission):
        return value
    if isinstance(value, str):
        try:
            return Permission(value)
        except ValueError:
            pass
    raise ValueError(f"a permission setting must be GRANT, DENY or INHERIT, not {value!r}")


def _settings_map(entries: Mapping[str, Permission] | None, what: str) -> dict[str, Permission]:
    result: dict[str, Permission] = {}
    for key, value in (entries or {}).items():
        _check_name(key, what)
        permission = _setting(value)
        if permission is not Permission.INHERIT:
            result[key] = permission
    return result


@dataclass(frozen=True, slots=True, init=False)
class Level:
    """The permission settings of one level: app-wide, or one flow.

    Only ``GRANT`` and ``DENY`` are stored; ``INHERIT`` is the absence of a setting,
    so constructing with it simply leaves the entry out. ``granted_roles`` and
    ``denied_roles`` hold the custom role names set at this level, precomputed so
    that resolution is a set intersection; system-role settings stay in ``roles``
    only, because they are consulted at their own layer and never through an
    identity's custom roles.
    """

    EMPTY: ClassVar[Level]

    # The fields in the order the resolver reads them, so that those it reads most
    # share the object's first cache line (a miss when a large configuration is
    # consulted at random); the order changes nothing else (no positional init).
    #
    # The dictionaries behind ``users`` and ``roles``: the resolver reads these
    # directly, one pointer fewer to follow per lookup.
    _users: dict[str, Permission] = field(compare=False, repr=False)
    # Both of ``granted_roles`` and ``denied_roles``, so that a miss costs one set
    # scan instead of two.
    _custom_roles: frozenset[str] = field(compare=False, repr=False)
    _roles: dict[str, Permission] = field(compare=False, repr=False)
    denied_roles: frozenset[str] = field(compare=False, repr=False)
    granted_roles: frozenset[str] = field(compare=False, repr=False)
    users: Mapping[str, Permission]
    roles: Mapping[str, Permission]

    def __init__(
        self,
        users: Mapping[str, Permission] | None = None,
        roles: Mapping[str, Permission] | None = None,
    ) -> None:
        roles_map = _settings_map(roles, "role name")
        self._assign(_settings_map(users, "user id"), roles_map, *_custom_roles(roles_map))

    def _assign(
        self,
        users: dict[str, Permission],
        roles: dict[str, Permission],
        granted: frozenset[str],
        denied: frozenset[str],
        custom: frozenset[str] | None = None,
    ) -> None:
        object.__setattr__(self, "users", MappingProxyType(users))
        object.__setattr__(self, "roles", MappingProxyType(roles))
        object.__setattr__(self, "_users", users)
        object.__setattr__(self, "_roles", roles)
        object.__setattr__(self, "granted_roles", granted)
        object.__setattr__(self, "denied_roles", denied)
        object.__setattr__(self, "_custom_roles", granted | denied if custom is None else custom)

    def __bool__(self) -> bool:
        return bool(self.users) or bool(self.roles)

    def __hash__(self) -> int:
        return hash((frozenset(self.users.items()), frozenset(self.roles.items())))

    def with_user(self, user_id: str, permission: Permission) -> Level:
        """A copy with the setting for one user replaced; ``INHERIT`` removes it."""
        _check_name(user_id, "user id")
        users = _with(self.users, user_id, _setting(permission))
        level = Level.__new__(Level)
        level._assign(users, self._roles, self.granted_roles, self.denied_roles, self._custom_roles)
        return level

    def with_role(self, name: str, permission: Permission) -> Level:
        """A copy with the setting for one role replaced; ``INHERIT`` removes it."""
        _check_name(name, "role name")
        roles = _with(self.roles, name, _setting(permission))
        level = Level.__new__(Level)
        level._assign(self._users, roles, *_custom_roles(roles))
        return level


def _custom_roles(roles: Mapping[str, Permission]) -> tuple[frozenset[str], frozenset[str]]:
    """The custom role names granted and denied among ``roles``, system roles left out."""
    granted = frozenset(n for n, p in roles.items() if p is Permission.GRANT)
    denied = frozenset(n for n, p in roles.items() if p is Permission.DENY)
    return granted - SYSTEM_ROLES, denied - SYSTEM_ROLES


def _with(
    entries: Mapping[str, Permission], key: str, permission: Permission
) -> dict[str, Permission]:
    result = dict(entries)
    if permission is Permission.INHERIT:
        result.pop(key, None)
    else:
        result[key] = permission
    return result


Level.EMPTY = Level()


def _default(value: object) -> Permission:
    permission = _setting(value)
    if permission is Permission.INHERIT:
        raise ValueError("the default permission must be GRANT or DENY, not INHERIT")
    return permission


@dataclass(frozen=True, slots=True, init=False)
class Settings:
    """An immutable snapshot of every permission setting: the default, app-wide, per flow.

    Permissions belong to a flow and apply to all its versions, so flows are keyed
    by name. Changing a setting returns a new snapshot sharing every level it did
    not touch; a level left without settings is dropped, so equal settings compare
    equal however they were built.
    """

    default: Permission
    app: Level
    flows: Mapping[str, Level]

    def __init__(
        self,
        default: Permission = Permission.GRANT,
        app: Level = Level.EMPTY,
        flows: Mapping[str, Level] | None = None,
    ) -> None:
        if not isinstance(app, Level):
            raise TypeError(f"app settings must be a Level, not {type(app).__name__}")
        levels: dict[str, Level] = {}
        for flow, level in (flows or {}).items():
            _check_name(flow, "flow name")
            if not isinstance(level, Level):
                raise TypeError(f"settings of flow {flow!r} must be a Level")
            if level:
                levels[flow] = level
        self._assign(_default(default), app, MappingProxyType(levels))

    def _assign(self, default: Permission, app: Level, flows: Mapping[str, Level]) -> None:
        object.__setattr__(self, "default", default)
        object.__setattr__(self, "app", app)
        object.__setattr__(self, "flows", flows)

    def _replace(
        self,
        default: Permission | None = None,
        app: Level | None = None,
        flows: dict[str, Level] | None = None,
    ) -> Settings:
        settings = Settings.__new__(Settings)
        settings._assign(
            self.default if default is None else default,
            self.app if app is None else app,
            self.flows if flows is None else MappingProxyType(flows),
        )
        return settings

    def __hash__(self) -> int:
        return hash((self.default, self.app, frozenset(self.flows.items())))

    def level(self, flow: str | None) -> Level:
        """The settings of one flow (empty when it has none), or the app-wide ones for ``None``."""
        if flow is None:
            return self.app
        return self.flows.get(flow, Level.EMPTY)

    def with_setting(
        self, subject: Subject, permission: Permission, flow: str | None = None
    ) -> Settings:
        """A copy with one setting replaced, app-wide when ``flow`` is ``None``.

        ``INHERIT`` removes the setting. Only the touched level is rebuilt.
        """
        if not isinstance(subject, User | Role):
            raise TypeError(f"a setting's subject must be a User or a Role, not {subject!r}")
        if flow is None:
            return self._replace(app=_changed(self.app, subject, permission))
        _check_name(flow, "flow name")
        level = _changed(self.level(flow), subject, permission)
        flows = dict(self.flows)
        if level:
            flows[flow] = level
        else:
            flows.pop(flow, None)
        return self._replace(flows=flows)

    def with_default(self, permission: Permission) -> Settings:
        """A copy whose default, the last layer, is ``permission`` (GRANT or DENY)."""
        return self._replace(default=_default(permission))


def _changed(level: Level, subject: Subject, permission: Permission) -> Level:
    if isinstance(subject, User):
        return level.with_user(subject.id, permission)
    return level.with_role(subject.name, permission)
