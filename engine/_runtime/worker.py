"""Durable runs: records in the store, lease renewal, and the :class:`Worker`.

With a durable store (SQLite, PostgreSQL) an accepted activation is a row before the
caller is answered. The process running a run holds a *lease* on it, renewed here
every third of its length, and checkpoints the run state after every block. When a
process dies its leases expire, and a worker claims the run and resumes it from its
last checkpoint: blocks that completed before that checkpoint do not run again; the
block in flight when the process died runs again (at least once), with the same
idempotency key.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import structlog

from permissions import Identity

from .._model.records import RunRecord
from .._model.types import RunResult, RunStatus
from .interpreter import RunState

if TYPE_CHECKING:
    from .engine import Engine
    from .runs import ActiveRun

__all__ = ["Worker", "record_of", "renew_leases", "state_of", "wait_in_store"]

_POLL = 0.05


def record_of(state: RunState, owner: str | None, lease: float | None = None) -> RunRecord:
    """The row of a run (without its trace) as it stands now; an owned run being
    created is leased for ``lease`` seconds from now, like a claimed one."""
    identity = state.identity
    return RunRecord(
        run_id=state.run_id,
        flow=state.flow,
        version=state.version,
        status=state.status,
        user_id=identity.user_id,
        roles=identity.sorted_roles,
        inputs=state.inputs,
        parent_run_id=state.parent_run_id,
        root_run_id=state.root_run_id,
        depth=state.depth,
        via=state.via,
        created_at=state.created_at,
        started_at=state.started_at,
        finished_at=state.finished_at,
        output=state.output,
        error=state.error,
        has_errors=state.has_errors,
        # a finished run keeps only its log of what the checkpoint held
        checkpoint=state.snapshot() if not state.status.finished else {"log": state.log},
        owner=owner,
        lease_expires=time.time() + lease if owner is not None and lease is not None else None,
    )


def state_of(record: RunRecord) -> RunState:
    """A run's state rebuilt from its row and last checkpoint, to be resumed."""
    state = RunState(
        run_id=record.run_id,
        flow=record.flow,
        version=record.version,
        identity=Identity(record.user_id, record.roles),
        inputs=record.inputs,
        parent_run_id=record.parent_run_id,
        root_run_id=record.root_run_id,
        depth=record.depth,
        via=record.via,
        status=RunStatus.RUNNING,
        created_at=record.created_at,
    )
    state.restore(record.checkpoint or {}, list(record.trace))
    return state


async def wait_in_store(engine: Engine, run_id: str) -> RunResult:
    """Wait for a run that another process (or a worker) is running."""
    while True:
        result = await engine.get_run(run_id)
        if result.status.finished:
            return result
        local = engine._local(run_id)
        if local is not None:
            await local.wait()
            if local.result is not None:
                return local.result
        else:
            await anyio.sleep(_POLL)


async def renew_leases(engine: Engine) -> None:
    """Keep this process's claims alive; act on cancel requests and lost leases."""
    log = structlog.get_logger("flowwarden.worker")
    while True:
        await anyio.sleep(engine.lease / 3)
        held = list(engine.active_runs())
        if not held:
            continue
        try:
            answer = await engine.store.renew_leases(engine.owner, held, engine.lease)
        except Exception:
            log.exception("lease.renew_failed", runs=len(held))
            continue
        for run_id in held:
            active = engine._local(run_id)
            if active is None:
                continue
            if run_id not in answer:
                log.warning("lease.lost", run_id=run_id)
                active.state.abandoned = True
                active.hand_back()
            elif answer[run_id]:
                active.cancel()


class Worker:
    """Claims queued (and orphaned) runs from a durable store and runs them.

    Embed it in a process::

        async with Engine("postgresql://…") as engine:
            await Worker(engine, concurrency=8).run()

    ``run`` returns after :meth:`stop` (or when ``stop`` is set): claiming stops, each
    run finishes the block it is in, checkpoints and is handed back for another worker
    (a run still busy after ``grace`` seconds is handed back where it stands).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        concurrency: int = 4,
        poll_interval: float = 0.2,
        grace: float = 10.0,
    ) -> None:
        if not engine.durable:
            raise ValueError("a Worker needs a durable store (sqlite:/// or postgresql://)")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.engine = engine
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.grace = grace
        self.claimed = 0
        self._stop = anyio.Event()
        self._running: dict[str, ActiveRun] = {}
        self._log = structlog.get_logger("flowwarden.worker").bind(worker=engine.owner)

    def stop(self) -> None:
        """Ask :meth:`run` to hand back its runs and return."""
        self._stop.set()

    async def run(self) -> None:
        engine = self.engine
        self._log.info("worker.started", concurrency=self.concurrency)
        async with anyio.create_task_group() as group:
            while not self._stop.is_set():
                busy = sum(not active.waiting_elsewhere for active in self._running.values())
                free = self.concurrency - busy
                records: list[RunRecord] = []
                if free > 0:
                    try:
                        records = await engine.store.claim_runs(engine.owner, free, engine.lease)
                    except Exception:
                        self._log.exception("worker.claim_failed")
                for record in records:
                    active = await engine._resume(record)
                    self._running[record.run_id] = active
                    self.claimed += 1
                    group.start_soon(self._run_one, active, name=f"run {record.run_id}")
                if not records:
                    with anyio.move_on_after(self.poll_interval):
                        await self._stop.wait()
            await self._hand_back()
        self._log.info("worker.stopped", claimed=self.claimed)

    async def _run_one(self, active: ActiveRun) -> None:
        try:
            await self.engine._execute(active)
        finally:
            self._running.pop(active.state.run_id, None)

    async def _hand_back(self) -> None:
        running = list(self._running.values())
        for active in running:
            active.handing_back = True  # checkpoint, then stop, after the current block
        with anyio.move_on_after(self.grace):
            for active in running:
                await active.wait()
        for active in list(self._running.values()):
            active.hand_back()
