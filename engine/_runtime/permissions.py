"""``engine.permissions``: change and inspect execution permissions in the store."""

from __future__ import annotations

from permissions import Decision, Identity, Level, Permission, Role, Settings, User, resolve

from .._model.errors import StoreUnavailable
from .._model.types import VersionStatus
from .._store.base import Store

__all__ = ["PermissionsAPI", "decide", "decide_and_select"]


class PermissionsAPI:
    """Grant, deny or inherit for users and roles, per flow or app-wide (``flow=None``).

    Changes are stored at once; the gate reads the current settings at every activation,
    so a change applies to the next activation, not to runs already started.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    async def grant(self, subject: User | Role, *, flow: str | None = None) -> None:
        await self.set(subject, Permission.GRANT, flow=flow)

    async def deny(self, subject: User | Role, *, flow: str | None = None) -> None:
        await self.set(subject, Permission.DENY, flow=flow)

    async def inherit(self, subject: User | Role, *, flow: str | None = None) -> None:
        """Remove the setting: the subject inherits from the next layer."""
        await self.set(subject, Permission.INHERIT, flow=flow)

    async def set(
        self, subject: User | Role, permission: Permission | str, *, flow: str | None = None
    ) -> None:
        if not isinstance(subject, User | Role):
            raise TypeError(f"subject must be a User or a Role, not {type(subject).__name__}")
        await self._store.set_permission(subject, Permission(permission), flow)

    async def set_default(self, permission: Permission | str) -> None:
        """What layer 7 decides: GRANT unless configured otherwise."""
        permission = Permission(permission)
        if permission is Permission.INHERIT:
            raise ValueError("the default must be GRANT or DENY")
        await self._store.set_default_permission(permission)

    async def settings(self) -> Settings:
        """The current settings snapshot."""
        return await self._store.permission_settings()

    async def level(self, flow: str | None = None) -> Level:
        """The settings of one flow, or the app-wide ones."""
        return (await self._store.permission_settings()).level(flow)

    async def resolve(self, flow: str, identity: Identity) -> Decision:
        """The decision the gate's permission step would take now (fails closed)."""
        return await decide(self._store, flow, identity)


async def decide(store: Store, flow: str, identity: Identity) -> Decision:
    """The permission decision for ``flow`` and ``identity`` on the store's current
    settings; a store that cannot answer denies (fail closed), but one that is away
    for now raises :class:`StoreUnavailable`, so the caller can be told to try again."""
    try:
        settings = await store.permission_settings()
    except StoreUnavailable:
        raise
    except Exception as exc:
        return _failed("permission settings", exc)
    return resolve(settings, flow, identity)


async def decide_and_select(
    store: Store, flow: str, version: int | None, identity: Identity
) -> tuple[Decision, tuple[int, VersionStatus] | None]:
    """:func:`decide`, and the version an activation would run with its status, from one
    read of the store (:meth:`Store.gate_view`). A store that cannot answer denies, with
    no version; one that is away for now raises :class:`StoreUnavailable`, as above."""
    try:
        settings, selected = await store.gate_view(flow, version)
    except StoreUnavailable:
        raise
    except Exception as exc:
        return _failed("reading the settings and the version", exc), None
    return resolve(settings, flow, identity), selected


def _failed(what: str, exc: Exception) -> Decision:
    return Decision(False, "error", None, f"denied: {what} failed: {exc}")
