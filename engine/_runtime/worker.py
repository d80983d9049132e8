"""The :class:`Worker`: claims queued and orphaned runs from a durable store and runs
them, through the engine's public API (see the keeping module for leases)."""

from __future__ import annotations

import anyio
import structlog

from .._model.errors import StoreError
from .._model.records import RunRecord
from .engine import Engine
from .runs import ActiveRun

__all__ = ["Worker"]


class Worker:
    """Claims queued (and orphaned) runs from a durable store and runs them.

    Embed it in a process::

        async with Engine("postgresql://…") as engine:
            await Worker(engine, concurrency=8).run()

    ``run`` returns after :meth:`stop` (or when ``stop`` is set): claiming stops, and
    every run in flight in the engine — Call Flow children included — finishes the
    block it is in, checkpoints and is handed back for another worker (a run still busy
    after ``grace`` seconds is handed back where it stands). Nothing is recorded
    CANCELLED because the worker stops. While the store is away, claims are retried
    with backoff.
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
        failures = 0  # claims failed in a row: the store is away, back off
        async with anyio.create_task_group() as group:
            while not self._stop.is_set():
                busy = sum(not active.waiting_elsewhere for active in self._running.values())
                free = self.concurrency - busy
                records: list[RunRecord] = []
                if free > 0:
                    try:
                        records = await engine.store.claim_runs(
                            engine.owner, free, engine.lease, skip=list(engine.active_runs())
                        )
                    except StoreError as exc:
                        self._log.warning("worker.claim_failed", error=str(exc))
                        failures += 1
                    else:
                        failures = 0
                for record in records:
                    try:
                        active = await engine.take_over(record)
                    except StoreError as exc:  # its lease runs out, and it is claimed again
                        self._log.warning(
                            "worker.take_over_failed", run_id=record.run_id, error=str(exc)
                        )
                        continue
                    self._running[record.run_id] = active
                    self.claimed += 1
                    group.start_soon(self._run_one, active, name=f"run {record.run_id}")
                if not records:
                    with anyio.move_on_after(self.poll_interval * 2 ** min(failures, 4)):
                        await self._stop.wait()
            await self.engine.hand_back(self.grace)
        self._log.info("worker.stopped", claimed=self.claimed)

    async def _run_one(self, active: ActiveRun) -> None:
        try:
            await self.engine.execute_run(active)
        finally:
            self._running.pop(active.state.header.run_id, None)
