"""The store interface every store provides (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol, runtime_checkable

from permissions import Permission, Role, Settings, User

from .._model.errors import Problem
from .._model.listing import RunQuery, RunSummary
from .._model.records import RunRecord, TraceRow
from .._model.steps import RunStep
from .._model.types import RunResult, VersionInfo, VersionStatus

__all__ = ["GateView", "QueueSignals", "Store"]

GateView = tuple[Settings, tuple[int, VersionStatus] | None]
"""The permission settings, and the version an activation would run with its status."""


@runtime_checkable
class Store(Protocol):
    """What every store provides. All methods may raise; callers fail closed.

    A store that cannot be reached or written now (a lost connection, a database
    locked or busy past its timeout, a file removed or replaced) raises
    :class:`StoreUnavailable`; nothing was acknowledged, and the call may succeed later.
    A commit whose answer was lost may still have happened: the engine repeats
    checkpoints, finishes, renewals and releases so that a second attempt does no harm;
    an activation refused that way may have been recorded, and then it runs.
    """

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

    async def gate_view(self, flow: str, version: int | None) -> GateView:
        """What the gate decides an activation on: :meth:`permission_settings` and
        :meth:`select_version`, read together. The database stores read both in one
        statement while their settings are cached, so both come from one snapshot."""
        ...

    async def set_permission(
        self, subject: User | Role, permission: Permission, flow: str | None
    ) -> None: ...

    async def set_default_permission(self, permission: Permission) -> None: ...

    async def save_run(self, result: RunResult) -> None:
        """Keep a finished run of a non-durable engine."""
        ...

    async def get_run(self, run_id: str) -> RunResult | None:
        """A run saved with :meth:`save_run` (non-durable stores)."""
        ...

    async def list_runs(self, query: RunQuery) -> list[RunSummary]:
        """The runs ``query`` selects, newest first (by ``created_at``, then run id), at
        most ``query.limit``: saved results and durable records alike."""
        ...

    async def prune_runs(self, before: float) -> int:
        """Remove the finished runs created before ``before`` (a Unix time), with their
        trace, checkpoints and steps; return how many were removed."""
        ...

    async def run_steps(self, run_id: str) -> list[RunStep] | None:
        """The run's steps in trace order, as far as they are kept (see the model's steps
        module); empty for an unknown run; ``None`` if this store keeps no steps."""
        ...

    async def close(self) -> None: ...

    # -- durable runs (stores with ``durable = True``) ----------------------------------

    async def create_run(self, record: RunRecord) -> None:
        """Insert an accepted activation (QUEUED, or RUNNING when ``owner`` is set)."""
        ...

    async def claim_runs(
        self, owner: str, limit: int, lease: float, *, skip: Collection[str] = ()
    ) -> list[RunRecord]:
        """Claim up to ``limit`` runs that are QUEUED or RUNNING with an expired lease,
        oldest first, but none in ``skip`` (the runs the caller is running: a process
        never claims what it runs); each comes back RUNNING, owned by ``owner`` until
        now + ``lease`` (now read once the store's write lock is held), its
        ``lease_epoch`` bumped, with its checkpoint (and trace). No run is claimed by
        two owners at once."""
        ...

    async def renew_leases(self, owner: str, run_ids: list[str], lease: float) -> dict[str, bool]:
        """Extend the leases ``owner`` still holds; ``{run_id: cancel_requested}`` for them
        (a run missing from the answer has been lost to another owner)."""
        ...

    async def checkpoint(
        self,
        run_id: str,
        owner: str,
        checkpoint: dict[str, Any],
        trace: list[TraceRow],
        *,
        epoch: int | None = None,
    ) -> None:
        """Store the run's state after a block, appending ``trace`` (the entries added
        since the last checkpoint), in one transaction. :class:`LeaseLost` if ``owner``
        no longer holds the run, or holds it under another claim than ``epoch`` (``None``:
        any claim of ``owner``)."""
        ...

    async def finish_run(
        self, record: RunRecord, trace: list[TraceRow], *, variables: dict[str, Any] | None = None
    ) -> bool:
        """Write the end of a run (status, output, error) if ``record.owner`` still holds
        it (under ``record.lease_epoch``, unless that is 0) and it has not finished; False
        otherwise. ``variables`` are the run's variables as it ended, for a store that
        keeps steps (a finish may stand for the last block's checkpoint)."""
        ...

    async def release_runs(self, owner: str, run_ids: list[str]) -> None:
        """Hand runs back (QUEUED, no owner, checkpoint kept) for another worker."""
        ...

    async def request_cancel(self, run_id: str) -> bool:
        """Ask for a run to be cancelled: a QUEUED run is CANCELLED at once; a RUNNING
        one is flagged for its owner. False if there is no such unfinished run."""
        ...

    async def request_cancel_version(self, flow: str, version: int) -> int:
        """:meth:`request_cancel` for every unfinished run of a version; how many."""
        ...

    async def cancel_requested(self, run_ids: list[str]) -> set[str]:
        """Which of these runs have a cancel request (a cheap read, polled often)."""
        ...

    async def get_run_record(self, run_id: str) -> RunRecord | None:
        """The run's row, checkpoint and trace."""
        ...


@runtime_checkable
class QueueSignals(Protocol):
    """A durable store that tells workers when there is work, so they need not poll often.

    Optional: a worker on a store without it polls. A signal may be lost (a broken
    connection, a restart), so a worker still polls, slowly, and claims what it finds.
    """

    async def wait_for_queued(self) -> None:
        """Return once a run may have been queued or handed back anywhere (bound the
        wait with ``anyio.move_on_after``). The first call starts listening and returns
        at once: what was queued before it is found by claiming."""
        ...
