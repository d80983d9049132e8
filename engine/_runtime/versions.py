"""A flow's versions and their lifecycle: add, compile, start, pause, resume, stop."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from blocks import BlockRegistry

from .._model.document import read_document, validate_document
from .._model.errors import FlowNotFound, InvalidFlow, InvalidTransition
from .._model.logs import get_logger
from .._model.types import VersionInfo, VersionStatus
from .._store import Store
from .interpreter import Program
from .keeping import RunKeeper
from .runs import ActiveRun

__all__ = ["VersionMethods", "Versions"]


class Versions:
    """The versions of every flow in a store, and their compiled programs.

    The :class:`Engine` exposes these as its own methods; what changes a version's
    status is here, what it means for runs in flight is the engine's.
    """

    def __init__(self, store: Store, registry: BlockRegistry) -> None:
        self.store = store
        self.registry = registry
        self._programs: dict[tuple[str, int], Program] = {}
        self._logger = get_logger("flowwarden")

    async def add_version(self, document: Mapping[str, Any] | str | bytes | Path) -> int:
        """Store a new version of the flow the document names and return its number.

        Raises :class:`InvalidFlow` when the document does not parse or has no valid
        ``flow`` name; any other problem stores the version as INVALID. Problems of a
        document given as text carry the line and column they are at.
        """
        raw, marks = read_document(document)
        compiled, problems = validate_document(raw, self.registry, marks=marks)
        status = (
            VersionStatus.READY if compiled is not None and not problems else VersionStatus.INVALID
        )
        info = await self.store.add_version(raw["flow"], raw, status, tuple(problems))
        if compiled is not None and not problems:
            self._programs[(info.flow, info.version)] = Program(compiled, self.registry)
        self._logger.info(
            "version.added", flow=info.flow, version=info.version, status=status.value
        )
        return info.version

    async def get_version(self, flow: str, version: int) -> VersionInfo:
        info = await self.store.get_version(flow, version)
        if info is None:
            raise FlowNotFound(
                f"flow {flow!r} has no version {version}", flow=flow, version=version
            )
        return info

    async def list_versions(self, flow: str) -> list[VersionInfo]:
        return await self.store.list_versions(flow)

    async def list_flows(self) -> list[str]:
        return await self.store.list_flows()

    async def program(self, flow: str, version: int) -> Program:
        """The compiled program of a valid version (compiled once, then cached)."""
        program = self._programs.get((flow, version))
        if program is None:
            info = await self.get_version(flow, version)
            compiled, problems = validate_document(info.document, self.registry)
            if compiled is None or problems:
                raise InvalidFlow(problems, flow=flow)
            program = self._programs[(flow, version)] = Program(compiled, self.registry)
        return program

    async def start(self, flow: str, version: int) -> None:
        """READY → LIVE. Another LIVE or PAUSED version goes READY (a switchover); its
        runs in flight finish. Starting the LIVE version does nothing; starting a PAUSED
        one resumes it. An INVALID version raises :class:`InvalidFlow`."""
        info = await self.get_version(flow, version)
        if info.status is VersionStatus.INVALID:
            raise InvalidFlow(info.problems, flow=flow)
        if info.status is VersionStatus.LIVE:
            return
        changes = {
            other.version: VersionStatus.READY
            for other in await self.store.list_versions(flow)
            if other.status.active and other.version != version
        }
        changes[version] = VersionStatus.LIVE
        await self.program(flow, version)
        await self.store.set_statuses(flow, changes)
        self._logger.info("version.started", flow=flow, version=version, switched=sorted(changes))

    async def pause(self, flow: str) -> None:
        """LIVE → PAUSED: no new runs; runs in flight continue."""
        await self._transition(flow, "pause", VersionStatus.LIVE, VersionStatus.PAUSED)

    async def resume(self, flow: str) -> None:
        """PAUSED → LIVE."""
        await self._transition(flow, "resume", VersionStatus.PAUSED, VersionStatus.LIVE)

    async def stop(self, flow: str) -> int:
        """LIVE or PAUSED → READY; returns the version that was stopped."""
        return await self._transition(flow, "stop", None, VersionStatus.READY)

    async def _transition(
        self, flow: str, verb: str, source: VersionStatus | None, target: VersionStatus
    ) -> int:
        versions = await self.store.list_versions(flow)
        if not versions:
            raise FlowNotFound(f"flow {flow!r} does not exist", flow=flow)
        current = next((v for v in versions if v.status.active), None)
        if current is None or (source is not None and current.status is not source):
            state = (
                f"version {current.version} is {current.status.value}"
                if current
                else "no version is LIVE or PAUSED"
            )
            raise InvalidTransition(f"cannot {verb} flow {flow!r}: {state}")
        await self.store.set_statuses(flow, {current.version: target})
        self._logger.info(f"version.{verb}", flow=flow, version=current.version)
        return current.version


class VersionMethods:
    """The engine's methods for versions and their lifecycle (a part of :class:`Engine`):
    what changes a version's status is in :class:`Versions`, what it means for runs in
    flight is here."""

    store: Store
    _versions: Versions
    _active: Mapping[str, ActiveRun]
    _keeper: RunKeeper

    async def add_version(self, document: Mapping[str, Any] | str | bytes | Path) -> int:
        """Store a new version of the flow the document names and return its number.

        Raises :class:`InvalidFlow` when the document does not parse or has no valid
        ``flow`` name; any other problem stores the version as INVALID.
        """
        return await self._versions.add_version(document)

    async def get_version(self, flow: str, version: int) -> VersionInfo:
        """A version (:class:`FlowNotFound` when the flow has no such version)."""
        return await self._versions.get_version(flow, version)

    async def list_versions(self, flow: str) -> list[VersionInfo]:
        return await self.store.list_versions(flow)

    async def list_flows(self) -> list[str]:
        return await self.store.list_flows()

    async def program(self, flow: str, version: int) -> Program:
        """The compiled program of a valid version (compiled once, then cached)."""
        return await self._versions.program(flow, version)

    async def start(self, flow: str, version: int) -> None:
        """READY → LIVE. Another LIVE or PAUSED version goes READY (a switchover); its
        runs in flight finish. Starting the LIVE version does nothing; starting a PAUSED
        one resumes it. An INVALID version raises :class:`InvalidFlow`."""
        await self._versions.start(flow, version)

    async def pause(self, flow: str) -> None:
        """LIVE → PAUSED: no new runs; runs in flight continue."""
        await self._versions.pause(flow)

    async def resume(self, flow: str) -> None:
        """PAUSED → LIVE."""
        await self._versions.resume(flow)

    async def stop(self, flow: str) -> None:
        """LIVE or PAUSED → READY, cancelling that version's runs in flight, and with a
        durable store its queued runs and the ones other processes run."""
        version = await self._versions.stop(flow)
        for active in list(self._active.values()):
            if active.state.header.flow == flow and active.state.header.version == version:
                active.cancel()
        await self._keeper.cancel_version(flow, version)
