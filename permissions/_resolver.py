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

from functools import lru_cache
from typing import NamedTuple

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


class _Scope(NamedTuple):
    """The three layers one level contributes."""

    user: Layer
    role: Layer
    system_role: Layer


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
_USER_LAYERS = frozenset({_FLOW.user, _APP.user})

_DEFAULT_GRANT = Decision(True, "default", None, "granted by default")
_DEFAULT_DENY = Decision(False, "default", None, "denied by default")


def resolve(settings: Settings, flow: str, identity: Identity) -> Decision:
    """Decide whether ``identity`` may activate ``flow`` under ``settings``.

    A pure function of its arguments: the first of the seven layers holding an
    explicit setting decides, and the decision names that layer, the subject whose
    setting it was and a readable reason. Settings for a flow without any are just
    the app-wide ones, so an unknown flow resolves like any other. It never raises:
    a malformed setting or any other failure gives a denial in layer ``"error"``.
    """
    try:
        return _resolve(settings, flow, identity)
    except Exception as exc:
        return _error(exc)


def _resolve(settings: Settings, flow: str, identity: Identity) -> Decision:
    if not isinstance(flow, str):
        raise TypeError(f"flow must be a flow name, not {type(flow).__name__}")
    user_id = identity.user_id
    system_role = NON_AUTHENTICATED if user_id is None else AUTHENTICATED
    level = settings.flows.get(flow)
    if level is not None:
        decision = _decide(level, _FLOW, user_id, identity, system_role)
        if decision is not None:
            return decision
    decision = _decide(settings.app, _APP, user_id, identity, system_role)
    if decision is not None:
        return decision
    default = settings.default
    if default is _GRANT:
        return _DEFAULT_GRANT
    if default is _DENY:
        return _DEFAULT_DENY
    raise ValueError(f"malformed default permission {default!r}")


def _decide(
    level: Level,
    scope: _Scope,
    user_id: str | None,
    identity: Identity,
    system_role: str,
) -> Decision | None:
    """The decision of one level's three layers, or ``None`` when none holds a setting."""
    if user_id is not None:
        setting = level._users.get(user_id)
        if setting is not None:
            return _explicit(setting, scope.user, user_id)
    roles = identity.roles
    if roles and not roles.isdisjoint(level._custom_roles):
        denied = _first(level.denied_roles, identity)
        if denied is None:
            granted = _first(level.granted_roles, identity)
            if granted is None:  # the sets disagree: a malformed level
                raise ValueError(f"inconsistent role settings in layer {scope.role}")
            return _decision(True, scope.role, granted)
        return _decision(False, scope.role, denied)
    setting = level._roles.get(system_role)
    if setting is not None:
        return _explicit(setting, scope.system_role, system_role)
    return None


def _first(matching: frozenset[str], identity: Identity) -> str | None:
    """The alphabetically first of the identity's roles in ``matching``, if any.

    Each membership test may be a cache miss in a large configuration, so the
    cheaper of two ways is taken: when ``matching`` is the smaller, intersect (the
    intersection walks ``matching``); otherwise walk the identity's roles in order,
    stopping at the first match. Both run in C.
    """
    roles = identity.roles
    if len(matching) <= len(roles):
        common = roles & matching
        return min(common) if common else None
    return next(filter(matching.__contains__, identity.sorted_roles), None)


def _explicit(setting: object, layer: Layer, name: str) -> Decision:
    if setting is _GRANT:
        return _decision(True, layer, name)
    if setting is _DENY:
        return _decision(False, layer, name)
    raise ValueError(f"malformed setting {setting!r} for {name!r} in layer {layer}")


@lru_cache(maxsize=8192)
def _decision(allowed: bool, layer: Layer, name: str) -> Decision:
    """The decision taken by the setting for ``name`` in ``layer``.

    Decisions are immutable, so recent ones are shared rather than rebuilt: building
    one costs more than the rest of a resolution.
    """
    subject: Subject = User(name) if layer in _USER_LAYERS else Role(name)
    verb = "granted" if allowed else "denied"
    return Decision(allowed, layer, subject, f"{verb} by {_WORDS[layer]} {name}")


def _error(exc: Exception) -> Decision:
    try:
        detail = f"{type(exc).__name__}: {exc}"
    except Exception:
        detail = type(exc).__name__
    return Decision(False, "error", None, f"denied: error while resolving permissions: {detail}")
