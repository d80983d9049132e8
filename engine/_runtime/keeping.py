"""Where an engine keeps its runs: in memory, or durably in a database store.

The :class:`Engine` asks one :class:`RunKeeper`, chosen when it is made, at each point
of a run's life where the two differ, instead of branching on the store everywhere:

- :class:`MemoryRuns` (a non-durable store): a run exists only while this process runs
  it; its result is saved when it ends.
- :class:`DurableRuns` (SQLite, PostgreSQL, a durable memory store): an accepted
  activation is a row before the caller is answered. The process running a run holds
  a *lease* on it, renewed here every third of its length, and checkpoints the run
  state after every block. When a process dies its leases expire, and a worker claims
  the run and resumes it from its last checkpoint: blocks that completed before that
  checkpoint do not run again; the block in flight when the process died runs again
  (at least once), with the same idempotency key. When the run ends next (every path
  at a ``return`` or at its end), its finish is the last block's checkpoint.

Faults (see docs/decisions.md, "Durable runs under faults"): a store error is never a
run's outcome. A write that fails for want of the store (:class:`StoreUnavailable`, or
any :class:`StoreError` but :class:`LeaseLost`) is retried with backoff for up to one
lease; if it still fails, this process stops working on the run and writes nothing
more for it, and whoever claims it once the lease has run out resumes it from its last
checkpoint. Every write of a claimed run carries its claim's epoch, so a process that
stalled past its lease can change nothing once another has taken over. Cancel requests
made in any process are read from the store every half second for the runs held here.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import anyio

from .._model.errors import LeaseLost, RunNotFound, StoreError, StoreUnavailable
from .._model.logs import get_logger
from .._model.records import TraceRow, result_of
from .._model.types import RunError, RunResult, RunStatus
from .._store import MemoryStore, Store
from .interpreter import Abandon, RunState
from .runs import ActiveRun, Checkpoints, record_of, result_of_state

__all__ = ["DurableRuns", "MemoryRuns", "RunKeeper", "keeper_for"]

_POLL = 0.05  # seconds between store reads while waiting for a run held elsewhere
_CANCEL_POLL = 0.5  # seconds between reads of the cancel requests of the runs held here
_RETRY_FIRST, _RETRY_MOST = 0.05, 1.0  # backoff between attempts at a failed write
_T = TypeVar("_T")


class RunKeeper(Protocol):
    """The part of a run's life that depends on where runs are kept."""

    durable: bool
    """Whether runs are checkpointed after every block and resumable elsewhere."""

    async def keep_alive(self) -> None:
        """Run for the engine's lifetime (leases, cancel requests); may return at once."""
        ...

    async def accepted(self, state: RunState, *, local: bool) -> None:
        """An admitted run: record it (``local``: this process runs it)."""
        ...

    async def reserve_child(self, parent: RunState, key: str, run_id: str) -> None:
        """Note a child's id in its parent before the child exists (see Engine)."""
        ...

    async def checkpoint(self, state: RunState, active: ActiveRun | None) -> None:
        """Persist a run's state after a block; :class:`Abandon` to stop running it."""
        ...

    async def finished(self, active: ActiveRun) -> None:
        """The run has ended here (finished, or abandoned to be resumed elsewhere)."""
        ...

    async def release(self, runs: list[ActiveRun], grace: float) -> None:
        """The engine is stopping: end these runs here, letting them finish their blocks
        for up to ``grace`` seconds; return once they have ended here."""
        ...

    async def result(self, run_id: str) -> RunResult:
        """A run not in flight here, as the store has it (:class:`RunNotFound`)."""
        ...

    async def wait_elsewhere(self, run_id: str) -> RunResult:
        """The result of a run not in flight here, once it has ended."""
        ...

    async def request_cancel(self, run_id: str) -> bool:
        """Ask for a run not in flight here to be cancelled; False: no such unfinished run."""
        ...

    async def cancel_version(self, flow: str, version: int) -> None:
        """Ask for every unfinished run of a version to be cancelled, wherever it runs."""
        ...


class MemoryRuns:
    """Runs live in this process only; a finished run's result is saved in the store.

    There is nowhere to hand a run back to: a stopping engine lets its runs finish for
    the grace period, then cancels what is left; a run whose store failed under it
    (a Call Flow activation that could not be read or written) ends FAILED with the
    code ``store_unavailable``, since nobody else will resume it.
    """

    durable = False

    def __init__(self, store: Store) -> None:
        self.store = store
        # the plain in-memory store cannot be interrupted while saving: no shield needed
        self._shield = type(store) is not MemoryStore

    async def keep_alive(self) -> None:
        return None

    async def accepted(self, state: RunState, *, local: bool) -> None:
        return None

    async def reserve_child(self, parent: RunState, key: str, run_id: str) -> None:
        return None

    async def checkpoint(self, state: RunState, active: ActiveRun | None) -> None:
        return None

    async def finished(self, active: ActiveRun) -> None:
        state = active.state
        if state.abandoned:  # nobody else can resume it
            state.abandoned = False
            state.status = RunStatus.FAILED
            state.error = RunError("store_unavailable", "the store failed")
            state.finished_at = time.time()
        active.result = result = result_of_state(state)
        if self._shield:
            with anyio.CancelScope(shield=True):
                await self.store.save_run(result)
        else:
            await self.store.save_run(result)

    async def release(self, runs: list[ActiveRun], grace: float) -> None:
        with anyio.move_on_after(grace):
            for active in runs:
                await active.wait()
        for active in runs:
            active.cancel()
        for active in runs:
            await active.wait()

    async def result(self, run_id: str) -> RunResult:
        result = await self.store.get_run(run_id)
        if result is None:
            raise RunNotFound(f"no run {run_id!r}")
        return result

    async def wait_elsewhere(self, run_id: str) -> RunResult:
        return await self.result(run_id)  # nothing runs elsewhere: it has ended

    async def request_cancel(self, run_id: str) -> bool:
        return False

    async def cancel_version(self, flow: str, version: int) -> None:
        return None


class DurableRuns:
    """Runs are rows; this process leases the ones it runs and checkpoints each block."""

    durable = True

    def __init__(
        self, store: Store, owner: str, lease: float, active: Mapping[str, ActiveRun]
    ) -> None:
        self.store = store
        self.owner = owner
        self.lease = lease
        self._active = active  # the engine's runs in flight, by id
        self._leased: dict[str, float] = {}  # run id -> when its lease was last written
        self._log = get_logger("flowwarden.worker")

    async def keep_alive(self) -> None:
        """Keep this process's claims alive and act on cancel requests made anywhere."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._renew, name="lease renewal")
            await self._watch_cancels()

    async def _renew(self) -> None:
        while True:
            await anyio.sleep(self.lease / 3)
            held = list(self._active)
            now = time.monotonic()
            for run_id in list(self._leased):
                if run_id not in self._active:
                    del self._leased[run_id]
            for run_id in held:
                self._leased.setdefault(run_id, now)
            if not held:
                continue
            try:
                answer = await self.store.renew_leases(self.owner, held, self.lease)
            except StoreError as exc:
                self._log.warning("lease.renew_failed", runs=len(held), error=str(exc))
                for run_id in held:  # its lease may have run out: another may hold it
                    if self._leased.get(run_id, now) + self.lease < time.monotonic():
                        self._lose(run_id, "lease.expired_unrenewed")
                continue
            for run_id in held:
                active = self._active.get(run_id)
                if active is None:
                    continue
                if run_id not in answer:
                    self._lose(run_id, "lease.lost")
                else:
                    self._leased[run_id] = now
                    if answer[run_id]:
                        active.cancel()

    def _lose(self, run_id: str, event: str) -> None:
        """Stop running a run here at once, writing nothing more for it."""
        active = self._active.get(run_id)
        if active is not None and not active.lost:
            self._log.warning(event, run_id=run_id)
            active.lost = True
            active.state.abandoned = True
            active.hand_back()

    async def _watch_cancels(self) -> None:
        while True:
            await anyio.sleep(_CANCEL_POLL)
            held = [run_id for run_id, a in self._active.items() if not a.cancel_requested]
            if not held:
                continue
            try:
                flagged = await self.store.cancel_requested(held)
            except StoreError:
                continue  # the renewal logs the outage
            for run_id in flagged:
                active = self._active.get(run_id)
                if active is not None:
                    active.cancel()

    async def _retrying(self, call: Callable[[], Awaitable[_T]], what: str, run_id: str) -> _T:
        """``call()``, again with backoff while the store fails, for up to one lease."""
        deadline = time.monotonic() + self.lease
        delay = _RETRY_FIRST
        while True:
            try:
                return await call()
            except LeaseLost:
                raise
            except StoreError as exc:
                if time.monotonic() + delay > deadline:
                    raise
                self._log.warning("store.retry", op=what, run_id=run_id, error=str(exc))
                await anyio.sleep(delay)
                delay = min(delay * 2, _RETRY_MOST)

    async def accepted(self, state: RunState, *, local: bool) -> None:
        owner = self.owner if local else None
        await self.store.create_run(record_of(state, owner, self.lease))
        if local:
            self._leased[state.header.run_id] = time.monotonic()

    async def reserve_child(self, parent: RunState, key: str, run_id: str) -> None:
        parent.waiting[key] = run_id
        await self.checkpoint(parent, self._active.get(parent.header.run_id))

    async def checkpoint(self, state: RunState, active: ActiveRun | None) -> None:
        if active is not None and not active.handing_back and _returns_next(state, active):
            return  # the finish, next, writes this state with the end (docs/decisions.md)
        run_id = state.header.run_id
        try:
            if active is None:
                await self._snapshot(state, 0)
            else:
                book = active.checkpointing
                if book is None:
                    book = active.checkpointing = Checkpoints()
                wanted = book.taken + 1  # any snapshot taken from now on holds this state
                async with book.lock:  # (see Checkpoints)
                    if book.stored < wanted:
                        book.taken += 1  # (only ever under the lock: still this one's)
                        await self._snapshot(state, active.epoch)
                        book.stored = book.taken
        except LeaseLost as exc:
            if active is not None:
                active.lost = True
            raise Abandon from exc
        except StoreError as exc:
            self._log.error("run.store_unavailable", run_id=run_id, error=str(exc))
            if active is not None:
                active.lost = True
            raise Abandon from exc
        if active is not None and active.handing_back:
            raise Abandon

    async def _snapshot(self, state: RunState, epoch: int) -> None:
        saved = state.saved_trace
        snapshot, trace = state.snapshot(), state.unsaved_trace()
        await self._checkpoint(state.header.run_id, snapshot, trace, saved, epoch)

    async def _checkpoint(
        self, run_id: str, snapshot: dict[str, Any], trace: list[TraceRow], saved: int, epoch: int
    ) -> None:
        """One checkpoint, retried; an attempt whose answer was lost may have been
        written, so before trying again the stored trace says whether it was."""
        fence = {"epoch": epoch} if epoch else {}  # 0: created here, never claimed since
        attempts = 0

        async def attempt() -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1 and trace and await self._written(run_id, saved + len(trace), epoch):
                return
            await self.store.checkpoint(run_id, self.owner, snapshot, trace, **fence)

        await self._retrying(attempt, "checkpoint", run_id)

    async def _written(self, run_id: str, length: int, epoch: int) -> bool:
        record = await self.store.get_run_record(run_id)
        if record is None or record.owner != self.owner or record.status.finished:
            raise LeaseLost(f"run {run_id!r} is no longer held by {self.owner!r}")
        if epoch and record.lease_epoch != epoch:
            raise LeaseLost(f"run {run_id!r} was claimed again")
        return len(record.trace) >= length

    async def finished(self, active: ActiveRun) -> None:
        state = active.state
        run_id = state.header.run_id
        self._leased.pop(run_id, None)
        active.result = result_of_state(state)
        with anyio.CancelScope(shield=True):
            if state.abandoned:
                active.result = None  # the run goes on elsewhere: ask the store
                if active.handing_back and not active.lost:
                    release = self.store.release_runs
                    try:
                        await self._retrying(
                            lambda: release(self.owner, [run_id]), "release", run_id
                        )
                    except StoreError as exc:  # its lease runs out instead
                        self._log.error("run.release_failed", run_id=run_id, error=str(exc))
                return
            record = record_of(state, self.owner, epoch=active.epoch)
            trace = state.unsaved_trace()
            try:
                done = await self._retrying(
                    lambda: self.store.finish_run(record, trace, variables=state.vars),
                    "finish",
                    run_id,
                )
            except StoreError as exc:  # resumed from its last checkpoint once the lease ends
                self._log.error("run.finish_unsaved", run_id=run_id, error=str(exc))
                done = False
            if not done:
                active.result = None  # finished elsewhere, or not at all yet: ask the store

    async def release(self, runs: list[ActiveRun], grace: float) -> None:
        for active in runs:
            active.handing_back = True  # checkpoint, then stop, after the current block
        with anyio.move_on_after(grace):
            for active in runs:
                await active.wait()
        for active in runs:
            active.hand_back()
        with anyio.move_on_after(self.lease):  # cut short: each ends at its next await
            for active in runs:
                await active.wait()

    async def result(self, run_id: str) -> RunResult:
        record = await self.store.get_run_record(run_id)
        if record is None:
            raise RunNotFound(f"no run {run_id!r}")
        return result_of(record)

    async def wait_elsewhere(self, run_id: str) -> RunResult:
        """Wait for a run that another process (or a worker here) is running."""
        while True:
            active = self._active.get(run_id)
            if active is not None:
                await active.wait()
                if active.result is not None:
                    return active.result
                continue
            try:
                result = await self.result(run_id)
            except StoreUnavailable:
                await anyio.sleep(_RETRY_MOST)  # the store is away: wait for it
                continue
            if result.status.finished:
                return result
            await anyio.sleep(_POLL)

    async def request_cancel(self, run_id: str) -> bool:
        return await self.store.request_cancel(run_id)

    async def cancel_version(self, flow: str, version: int) -> None:
        await self.store.request_cancel_version(flow, version)


def _returns_next(state: RunState, active: ActiveRun) -> bool:
    """Whether the run's every path is at its end or at a ``return`` (without retries):
    the run ends next, without awaiting anything or touching the world, so its finish
    (one statement with the state and trace) is the checkpoint of the block before."""
    nodes = active.program.nodes
    positions = state.positions.values()
    return bool(positions) and all(
        node_id is None or (nodes[node_id].type == "return" and nodes[node_id].retry is None)
        for node_id in positions
    )


def keeper_for(
    store: Store, owner: str, lease: float, active: Mapping[str, ActiveRun]
) -> RunKeeper:
    """The keeper a store calls for: durable when the store keeps runs as records."""
    if getattr(store, "durable", False):
        return DurableRuns(store, owner, lease, active)
    return MemoryRuns(store)
