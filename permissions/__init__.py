"""Who may activate which flow: the permission model and its resolver.

A pure package: it decides, it does not enforce. ``resolve(settings, flow,
identity)`` walks the seven layers of flow-level and app-wide settings for the
user, the custom roles and the computed system role, and returns a ``Decision``
naming the deciding layer, subject and reason; the engine's gate enforces it and
logs it. Settings are immutable snapshots changed by copy-on-write, so a decision
always reads one consistent state.
"""

from permissions._model import (
    ANONYMOUS,
    AUTHENTICATED,
    NON_AUTHENTICATED,
    SYSTEM_ROLES,
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
from permissions._resolver import resolve

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
    "resolve",
]
