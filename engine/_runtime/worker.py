"""The :class:`Worker`: claims queued and orphaned runs from a durable store and runs
them, through the engine's public API (see the keeping module for leases)."""

from __future__ import annotations

import anyio

from .._model.errors import StoreError
from .._model.logs import get_logger
from .._model.records import RunRecord
from .._store.base import QueueSignals
from .engine import Engine
from .runs import ActiveRun

__all__ = ["NOTIFIED_POLL", "POLL", "Worker"]

POLL = 0.2
"""Seconds between claims while the queue is empty, on a store that sends no signals."""
NOTIFIED_POLL = 2.0
"""The same where the store notifies workers: the poll only finds runs whose worker
died (their leases ran out) and runs whose notification was lost."""


class Worker:
    """Claims queued (and orphaned) runs from a durable store and runs them.

    Embed it in a process::

        async with Engine("postgresql://…") as engine:
            await Worker(engine, concurrency=8).run()

    It runs up to ``concurrency`` runs at once, and claims again as soon as one ends:
    one claim takes as many queued runs as there are free places. When the queue is
    empty it waits: for a notification where the store sends them (PostgreSQL, see
    :class:`QueueSignals`), else for ``poll_interval`` seconds. Notifications can be
    lost, and a run whose worker died sends none, so a worker on such a store still
    polls, every ``poll_interval`` (default :data:`NOTIFIED_POLL` there,
    :data:`POLL` elsewhere).

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
        poll_interval: float | None = None,
        grace: float = 10.0,
    ) -> None:
        if not engine.durable:
            raise ValueError("a Worker needs a durable store (sqlite:/// or postgresql://)")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.engine = engine
        self.concurrency = concurrency
        self._signals = engine.store if isinstance(engine.store, QueueSignals) else None
        if poll_interval is None:
            poll_interval = POLL if self._signals is None else NOTIFIED_POLL
        self.poll_interval = poll_interval
        self.grace = grace
        self.claimed = 0
        self._stop = anyio.Event()
        self._wake = anyio.Event()  # a run ended, one was queued, the poll: claim again
        self._running: dict[str, ActiveRun] = {}
        self._log = get_logger("flowwarden.worker").bind(worker=engine.owner)

    def stop(self) -> None:
        """Ask :meth:`run` to hand back its runs and return."""
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        engine = self.engine
        self._log.info("worker.started", concurrency=self.concurrency)
        failures = 0  # claims failed in a row: the store is away, back off
        batch = max(1, self.concurrency // 2)  # places worth a claim while runs queue up
        backlog = False  # the last claim filled every free place: more may be queued
        async with anyio.create_task_group() as group:
            watch = anyio.CancelScope()
            group.start_soon(self._watch_queue, watch, name="queue watch")
            while not self._stop.is_set():
                # a new event before claiming: what happens during the claim wakes us
                self._wake = wake = anyio.Event()
                busy = sum(not active.waiting_elsewhere for active in self._running.values())
                free = self.concurrency - busy
                records: list[RunRecord] = []
                claiming = free >= (batch if backlog else 1)
                if claiming:
                    try:
                        records = await engine.store.claim_runs(
                            engine.owner, free, engine.lease, skip=list(engine.active_runs())
                        )
                    except StoreError as exc:
                        self._log.warning("worker.claim_failed", error=str(exc))
                        failures += 1
                        with anyio.move_on_after(self._backoff(failures)):
                            await self._stop.wait()
                        continue
                    failures = 0
                    backlog = len(records) == free
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
                if not (claiming and backlog):  # else claim again, once places are free
                    await wake.wait()
            watch.cancel()
            await self.engine.hand_back(self.grace)
        self._log.info("worker.stopped", claimed=self.claimed)

    def _backoff(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failed store calls in a row: doubling from
        the poll interval, but no longer than the 2 s poll of a notified worker (or the
        poll itself, if longer), so a worker is back soon after its store is."""
        ceiling = max(self.poll_interval, NOTIFIED_POLL)
        return min(self.poll_interval * 2.0 ** min(failures, 4), ceiling)

    async def _watch_queue(self, scope: anyio.CancelScope) -> None:
        """Wake the claim loop when the store says runs were queued, and at each poll."""
        signals = self._signals
        failures = 0
        with scope:
            while True:
                if signals is None:
                    await anyio.sleep(self.poll_interval)
                else:
                    try:
                        with anyio.move_on_after(self.poll_interval):
                            await signals.wait_for_queued()
                    except StoreError as exc:  # a lost notification only delays: poll
                        failures += 1
                        if failures == 1:
                            self._log.warning("worker.listen_failed", error=str(exc))
                        await anyio.sleep(self._backoff(failures))
                    else:
                        failures = 0
                self._wake.set()

    async def _run_one(self, active: ActiveRun) -> None:
        try:
            await self.engine.execute_run(active)
        finally:
            self._running.pop(active.state.header.run_id, None)
            self._wake.set()  # a free place
