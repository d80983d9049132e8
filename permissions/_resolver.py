"""The resolver: which setting decides whether an identity may activate a flow.

Seven layers, walked in order; the first holding an explicit setting decides:

1. ``flow.user`` -- the flow's setting for the user (skipped when anonymous);
2. ``flow.role`` -- the flow's settings for the identity's custom roles, DENY winning;
3. ``flow.system_role`` -- the flow's setting for the computed system role;
4. ``app.user`` -- the app-wide setting for the user;
5. ``app.role`` -- the app-wide settings for the custom roles, DENY winning;
6. ``app.system_role`` -- the app-wide setting for the computed system role;
7. ``default`` -- the configured default, GRANT unless set otherwise.

Specific before global, user before roles before system roles, deny before grant
among peers: so "deny AuthenticatedUser, grant Manager" on a flow means "only
managers". Anything going wrong while resolving denies (fail closed).
"""

from __future__ import annotations

from permissions._model import (
    AUTHENTICATED,
    NON_AUTHENTICATED,
    Decision,
    Identity,
    Layer,
    Level,
    Permission,
    Role,
    Settings,
    Subject,
    User,
)

__all__ = ["resolve"]

_GRANT = Permission.GRANT
_DENY = Permission.DENY


class _Layer:
    """One layer: its name, and the decisions its settings take, kept once built (a
    decision costs more to build than the rest of a resolution, and is immutable)."""

    __slots__ = ("_denials", "_grants", "layer", "user")

    def __init__(self, layer: Layer) -> None:
        self.layer = layer
        self.user = layer.endswith(".user")
        self._grants: dict[str, Decision] = {}
        self._denials: dict[str, Decision] = {}

    def decide(self, setting: object, name: str) -> Decision:
        """The decision of the setting ``setting`` (GRANT or DENY) for ``name``."""
        if setting is _GRANT:
            known = self._grants
        elif setting is _DENY:
            known = self._denials
        else:
            raise ValueError(f"malformed setting {setting!r} for {name!r} in layer {self.layer}")
        decision = known.get(name)
        return decision if decision is not None else self._build(known, name)

    def by_roles(self, level: Level, identity: Identity) -> Decision:
        """The decision of ``level``'s role settings for the identity's custom roles,
        some of which have one: DENY wins, and the alphabetically first deciding role
        is named.

        Each membership test may be a cache miss in a large configuration, so the
        cheaper of two ways is taken: when the matching set is the smaller, intersect
        (the intersection walks it, in C); otherwise walk the identity's roles in order,
        stopping at the first match, in a plain loop: for the few roles an identity
        holds it costs less than setting up ``filter`` over them, or calling a helper.
        """
        ordered = identity.sorted_roles
        known = self._denials
        matching = level.denied_roles
        name = None
        while True:  # twice at most: the denials, then the grants
            if len(matching) < len(ordered):
                common = identity.roles & matching
                if common:
                    name = min(common)
            else:
                for role in ordered:
                    if role in matching:
                        name = role
                        break
            if name is not None:
                decision = known.get(name)
                return decision if decision is not None else self._build(known, name)
            if known is self._grants:  # the sets disagree: a malformed level
                raise ValueError(f"inconsistent role settings in layer {self.layer}")
            known = self._grants
            matching = level.granted_roles

    def _build(self, known: dict[str, Decision], name: str) -> Decision:
        if len(known) >= _KEPT:  # a bound on memory, not on speed
            known.clear()
        allowed = known is self._grants
        subject: Subject = User(name) if self.user else Role(name)
        verb = "granted" if allowed else "denied"
        decision = Decision(allowed, self.layer, subject, f"{verb} by {_WORDS[self.layer]} {name}")
        known[name] = decision
        return decision


class _Scope:
    """The three layers one level contributes."""

    __slots__ = ("role", "system_role", "user")

    def __init__(self, user: Layer, role: Layer, system_role: Layer) -> None:
        self.user = _Layer(user)
        self.role = _Layer(role)
        self.system_role = _Layer(system_role)


_KEPT = 8192  # decisions kept per layer and permission
_FLOW = _Scope("flow.user", "flow.role", "flow.system_role")
_APP = _Scope("app.user", "app.role", "app.system_role")

# How reasons name the setting that decided, per layer.
_WORDS: dict[Layer, str] = {
    "flow.user": "flow-level user",
    "flow.role": "flow-level role",
    "flow.system_role": "flow-level system role",
    "app.user": "app-wide user",
    "app.role": "app-wide role",
    "app.system_role": "app-wide system role",
}

_DEFAULT_GRANT = Decision(True, "default", None, "granted by default")
_DEFAULT_DENY = Decision(False, "default", None, "denied by default")


def resolve(settings: Settings, flow: str, identity: Identity) -> Decision:
    """Decide whether ``identity`` may activate ``flow`` under ``settings``.

    A pure function of its arguments: the first of the seven layers holding an
    explicit setting decides, and the decision names that layer, the subject whose
    setting it was and a readable reason. Settings for a flow without any are just
    the app-wide ones, so an unknown flow resolves like any other. It never raises:
    a malformed setting or any other failure gives a denial in layer ``"error"``.

    The walk is written out in one function, a call only where a setting decides: a
    call costs about as much as one of the lookups it would wrap. The two levels are
    written out too, rather than looped over as pairs of level and layers: building
    and unpacking those pairs cost a tenth of a decision.
    """
    try:
        if not isinstance(flow, str):
            raise TypeError(f"flow must be a flow name, not {type(flow).__name__}")
        user_id = identity.user_id
        roles = identity.roles
        system_role = NON_AUTHENTICATED if user_id is None else AUTHENTICATED
        level = settings.flows.get(flow)
        if level is not None:  # layers 1 to 3; 4 to 6 below take the same steps, app-wide
            if user_id is not None:
                setting = level._users.get(user_id)
                if setting is not None:
                    return _FLOW.user.decide(setting, user_id)
            if roles and not roles.isdisjoint(level._custom_roles):
                return _FLOW.role.by_roles(level, identity)
            setting = level._roles.get(system_role)
            if setting is not None:
                return _FLOW.system_role.decide(setting, system_role)
        level = settings.app
        if user_id is not None:
            setting = level._users.get(user_id)
            if setting is not None:
                return _APP.user.decide(setting, user_id)
        if roles and not roles.isdisjoint(level._custom_roles):
            return _APP.role.by_roles(level, identity)
        setting = level._roles.get(system_role)
        if setting is not None:
            return _APP.system_role.decide(setting, system_role)
        default = settings.default
        if default is _GRANT:
            return _DEFAULT_GRANT
        if default is _DENY:
            return _DEFAULT_DENY
        raise ValueError(f"malformed default permission {default!r}")
    except Exception as exc:
        return _error(exc)


def _error(exc: Exception) -> Decision:
    try:
        detail = f"{type(exc).__name__}: {exc}"
    except Exception:
        detail = type(exc).__name__
    return Decision(False, "error", None, f"denied: error while resolving permissions: {detail}")
