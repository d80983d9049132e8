"""The store: where the engine keeps flows, versions, permission settings and runs.

One interface, :class:`Store`; :class:`MemoryStore` is the library's default. Stores are
chosen by URL with :func:`open_store` (``memory:``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Protocol, runtime_checkable

from permissions import Permission, Role, Settings, User

from ._errors import Problem
from ._types import RunResult, VersionInfo, VersionStatus

__all__ = ["MemoryStore", "Store", "open_store"]


@runtime_checkable
class Store(Protocol):
    """What every store provides. All methods may raise; callers fail closed."""

    durable: bool

    async def add_version(
        self,
        flow: str,
        document: dict[str, Any],
        status: VersionStatus,
        problems: tuple[Problem, ...],
    ) -> VersionInfo:
        """Store a new version with the next number of ``flow``."""
        ...

    async def get_version(self, flow: str, version: int) -> VersionInfo | None: ...

    async def list_versions(self, flow: str) -> list[VersionInfo]:
        """All versions of a flow, oldest first (empty: no such flow)."""
        ...

    async def list_flows(self) -> list[str]: ...

    async def select_version(
        self, flow: str, version: int | None
    ) -> tuple[int, VersionStatus] | None:
        """The version an activation would run and its status; ``None``: no such flow.

        With ``version=None`` this is the LIVE or PAUSED version, else the newest one.
        """
        ...

    async def set_statuses(self, flow: str, statuses: dict[int, VersionStatus]) -> None:
        """Change several versions' statuses at once (a switchover is one change)."""
        ...

    async def permission_settings(self) -> Settings: ...

    async def set_permission(
        self, subject: User | Role, permission: Permission, flow: str | None
    ) -> None: ...

    async def set_default_permission(self, permission: Permission) -> None: ...

    async def save_run(self, result: RunResult) -> None: ...

    async def get_run(self, run_id: str) -> RunResult | None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """Everything in this process's memory; gone when it ends."""

    durable = False

    def __init__(self) -> None:
        self._versions: dict[str, list[VersionInfo]] = {}
        self._settings = Settings()
        self._runs: dict[str, RunResult] = {}

    async def add_version(
        self,
        flow: str,
        document: dict[str, Any],
        status: VersionStatus,
        problems: tuple[Problem, ...],
    ) -> VersionInfo:
        versions = self._versions.setdefault(flow, [])
        info = VersionInfo(flow, len(versions) + 1, status, problems, document, time.time())
        versions.append(info)
        return info

    async def get_version(self, flow: str, version: int) -> VersionInfo | None:
        versions = self._versions.get(flow)
        if versions is None or not 1 <= version <= len(versions):
            return None
        return versions[version - 1]

    async def list_versions(self, flow: str) -> list[VersionInfo]:
        return list(self._versions.get(flow, ()))

    async def list_flows(self) -> list[str]:
        return sorted(self._versions)

    async def select_version(
        self, flow: str, version: int | None
    ) -> tuple[int, VersionStatus] | None:
        versions = self._versions.get(flow)
        if not versions:
            return None
        if version is not None:
            if not 1 <= version <= len(versions):
                return None
            return version, versions[version - 1].status
        for info in versions:
            if info.status in (VersionStatus.LIVE, VersionStatus.PAUSED):
                return info.version, info.status
        return versions[-1].version, versions[-1].status

    async def set_statuses(self, flow: str, statuses: dict[int, VersionStatus]) -> None:
        versions = self._versions[flow]
        for number, status in statuses.items():
            versions[number - 1] = replace(versions[number - 1], status=status)

    async def permission_settings(self) -> Settings:
        return self._settings

    async def set_permission(
        self, subject: User | Role, permission: Permission, flow: str | None
    ) -> None:
        self._settings = self._settings.with_setting(subject, permission, flow)

    async def set_default_permission(self, permission: Permission) -> None:
        self._settings = self._settings.with_default(permission)

    async def save_run(self, result: RunResult) -> None:
        self._runs[result.run_id] = result

    async def get_run(self, run_id: str) -> RunResult | None:
        return self._runs.get(run_id)

    async def close(self) -> None:
        return None


def open_store(url: str | None) -> Store:
    """The store a URL names: ``memory:`` (more kinds come with durable storage)."""
    if url is None or url in ("memory:", "memory://"):
        return MemoryStore()
    raise ValueError(f"unsupported store URL {url!r} (supported: memory:)")
