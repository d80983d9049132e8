"""The in-memory store: the library's default, gone when the process ends."""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import replace
from typing import Any

from permissions import Permission, Role, Settings, User

from .._model.errors import LeaseLost, Problem, StoreError
from .._model.listing import RunQuery, RunSummary
from .._model.records import CANCELLED, RunRecord, TraceRow, result_of
from .._model.steps import RunStep
from .._model.types import Limits, RunResult, RunStatus, VersionInfo, VersionStatus
from .base import GateView

__all__ = ["MemoryStore"]

_KEEP = Limits().keep_finished_runs


class MemoryStore:
    """Everything in this process's memory; gone when it ends.

    With ``durable=True`` it keeps runs as records with checkpoints and leases like the
    database stores do (useful for testing durable behaviour without a database).

    It keeps the ``keep_finished_runs`` most recently finished runs and forgets older
    ones, so that a long-lived process does not grow without bound; runs in flight are
    always kept.
    """

    def __init__(self, *, durable: bool = False, keep_finished_runs: int = _KEEP) -> None:
        if keep_finished_runs < 0:
            raise ValueError(f"keep_finished_runs must be >= 0, not {keep_finished_runs}")
        self.durable = durable
        self.keep_finished_runs = keep_finished_runs
        self._versions: dict[str, list[VersionInfo]] = {}
        self._settings = Settings()
        self._runs: dict[str, RunResult] = {}
        self._records: dict[str, RunRecord] = {}
        # finished run ids, in the order they finished: an OrderedDict, since a plain
        # dict that is emptied from the front finds its first key by skipping every
        # slot deleted so far (microseconds a run, once it keeps thousands)
        self._finished: OrderedDict[str, None] = OrderedDict()

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
            if info.status.active:
                return info.version, info.status
        return versions[-1].version, versions[-1].status

    async def set_statuses(self, flow: str, statuses: dict[int, VersionStatus]) -> None:
        versions = self._versions.get(flow, [])
        missing = [n for n in statuses if not 1 <= n <= len(versions)]
        if missing:  # all or nothing, as in the database stores
            raise StoreError(f"flow {flow!r} has no version {missing[0]}")
        for number, status in statuses.items():
            versions[number - 1] = replace(versions[number - 1], status=status)

    async def permission_settings(self) -> Settings:
        return self._settings

    async def gate_view(self, flow: str, version: int | None) -> GateView:
        return await self.permission_settings(), await self.select_version(flow, version)

    async def set_permission(
        self, subject: User | Role, permission: Permission, flow: str | None
    ) -> None:
        self._settings = self._settings.with_setting(subject, permission, flow)

    async def set_default_permission(self, permission: Permission) -> None:
        self._settings = self._settings.with_default(permission)

    async def save_run(self, result: RunResult) -> None:
        self._runs[result.run_id] = result
        if result.status.finished:
            self._ended(result.run_id)

    async def get_run(self, run_id: str) -> RunResult | None:
        return self._runs.get(run_id)

    def _ended(self, run_id: str) -> None:
        """Note a finished run; forget the oldest finished ones beyond the limit."""
        finished = self._finished
        if run_id in finished:  # saved finished before: it moves to the end
            finished.move_to_end(run_id)
        else:
            finished[run_id] = None
        while len(finished) > self.keep_finished_runs:
            oldest, _ = finished.popitem(last=False)
            self._runs.pop(oldest, None)
            self._records.pop(oldest, None)

    def _summaries(self) -> list[RunSummary]:
        found = {run_id: RunSummary.of(result) for run_id, result in self._runs.items()}
        for run_id, record in self._records.items():
            found[run_id] = RunSummary.of(result_of(record))
        return list(found.values())

    async def list_runs(self, query: RunQuery) -> list[RunSummary]:
        return query.select(self._summaries())

    async def run_steps(self, run_id: str) -> list[RunStep] | None:
        return None  # this store keeps each run's last state only

    async def prune_runs(self, before: float) -> int:
        old = [
            run.run_id
            for run in self._summaries()
            if run.status.finished and run.created_at < before
        ]
        for run_id in old:
            self._runs.pop(run_id, None)
            self._records.pop(run_id, None)
            self._finished.pop(run_id, None)
        return len(old)

    async def close(self) -> None:
        return None

    async def create_run(self, record: RunRecord) -> None:
        if record.run_id in self._records:
            raise StoreError(f"run {record.run_id!r} exists already")
        self._records[record.run_id] = copy.deepcopy(record)

    async def claim_runs(
        self, owner: str, limit: int, lease: float, *, skip: Collection[str] = ()
    ) -> list[RunRecord]:
        now = time.time()
        claimed: list[RunRecord] = []
        for record in sorted(self._records.values(), key=lambda r: r.header.created_at):
            if len(claimed) >= limit:
                break
            expired = record.status is RunStatus.RUNNING and (record.lease_expires or 0) < now
            if (record.status is RunStatus.QUEUED or expired) and record.run_id not in skip:
                record.status = RunStatus.RUNNING
                record.owner = owner
                record.lease_expires = now + lease
                record.lease_epoch += 1
                claimed.append(copy.deepcopy(record))
        return claimed

    async def renew_leases(self, owner: str, run_ids: list[str], lease: float) -> dict[str, bool]:
        now = time.time()
        held = {}
        for run_id in run_ids:
            record = self._records.get(run_id)
            if record is not None and record.owner == owner and not record.status.finished:
                record.lease_expires = now + lease
                held[run_id] = record.cancel_requested
        return held

    async def checkpoint(
        self,
        run_id: str,
        owner: str,
        checkpoint: dict[str, Any],
        trace: list[TraceRow],
        *,
        epoch: int | None = None,
    ) -> None:
        record = self._records.get(run_id)
        stale = epoch is not None and record is not None and record.lease_epoch != epoch
        if record is None or record.owner != owner or record.status.finished or stale:
            raise LeaseLost(f"run {run_id!r} is no longer held by {owner!r}")
        record.checkpoint = copy.deepcopy(checkpoint)  # as a database would: a copy
        record.trace.extend(trace)

    async def finish_run(
        self, record: RunRecord, trace: list[TraceRow], *, variables: dict[str, Any] | None = None
    ) -> bool:
        stored = self._records.get(record.run_id)
        if stored is None or stored.status.finished or stored.owner != record.owner:
            return False
        if record.lease_epoch and stored.lease_epoch != record.lease_epoch:
            return False
        kept = stored.trace + list(trace)
        finished = replace(copy.deepcopy(record), trace=kept, lease_expires=None)
        self._records[record.run_id] = finished
        if finished.status.finished:
            self._ended(record.run_id)
        return True

    async def release_runs(self, owner: str, run_ids: list[str]) -> None:
        for run_id in run_ids:
            record = self._records.get(run_id)
            if record is not None and record.owner == owner and not record.status.finished:
                record.status = RunStatus.QUEUED
                record.owner = None
                record.lease_expires = None

    async def request_cancel(self, run_id: str) -> bool:
        record = self._records.get(run_id)
        if record is None or record.status.finished:
            return False
        if record.status is RunStatus.QUEUED:
            record.status = RunStatus.CANCELLED
            record.error = CANCELLED.to_dict()
            record.finished_at = time.time()
            self._ended(run_id)
        else:
            record.cancel_requested = True
        return True

    async def request_cancel_version(self, flow: str, version: int) -> int:
        runs = [
            r.run_id
            for r in self._records.values()
            if (r.header.flow, r.header.version) == (flow, version) and not r.status.finished
        ]
        return sum([await self.request_cancel(run_id) for run_id in runs])

    async def cancel_requested(self, run_ids: list[str]) -> set[str]:
        return {
            run_id
            for run_id in run_ids
            if (record := self._records.get(run_id)) is not None and record.cancel_requested
        }

    async def get_run_record(self, run_id: str) -> RunRecord | None:
        record = self._records.get(run_id)
        return copy.deepcopy(record) if record is not None else None
