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
  (at least once), with the same idempotency key.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Protocol

import anyio
import structlog

from .._model.errors import LeaseLost, RunNotFound
from .._model.records import result_of
from .._model.types import RunResult
from .._store import MemoryStore, Store
from .interpreter import Abandon, RunState
from .runs import ActiveRun, record_of, result_of_state

__all__ = ["DurableRuns", "MemoryRuns", "RunKeeper", "keeper_for"]

_POLL = 0.05  # seconds between store reads while waiting for a run held elsewhere


class RunKeeper(Protocol):
    """The part of a run's life that depends on where runs are kept."""

    durable: bool
    """Whether runs are checkpointed after every block and resumable elsewhere."""

    async def keep_alive(self) -> None:
        """Run for the engine's lifetime (lease renewal); return at once if not needed."""
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

    async def result(self, run_id: str) -> RunResult:
        """A run not in flight here, as the store has it (:class:`RunNotFound`)."""
        ...

    async def wait_elsewhere(self, run_id: str) -> RunResult:
        """The result of a run not in flight here, once it has ended."""
        ...

    async def request_cancel(self, run_id: str) -> bool:
        """Ask for a run not in flight here to be cancelled; False: no such unfinished run."""
        ...


class MemoryRuns:
    """Runs live in this process only; a finished run's result is saved in the store."""

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
        active.result = result = result_of_state(active.state)
        if self._shield:
            with anyio.CancelScope(shield=True):
                await self.store.save_run(result)
        else:
            await self.store.save_run(result)

    async def result(self, run_id: str) -> RunResult:
        result = await self.store.get_run(run_id)
        if result is None:
            raise RunNotFound(f"no run {run_id!r}")
        return result

    async def wait_elsewhere(self, run_id: str) -> RunResult:
        return await self.result(run_id)  # nothing runs elsewhere: it has ended

    async def request_cancel(self, run_id: str) -> bool:
        return False


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
        self._log = structlog.get_logger("flowwarden.worker")

    async def keep_alive(self) -> None:
        """Keep this process's claims alive; act on cancel requests and lost leases."""
        while True:
            await anyio.sleep(self.lease / 3)
            held = list(self._active)
            if not held:
                continue
            try:
                answer = await self.store.renew_leases(self.owner, held, self.lease)
            except Exception:
                self._log.exception("lease.renew_failed", runs=len(held))
                continue
            for run_id in held:
                active = self._active.get(run_id)
                if active is None:
                    continue
                if run_id not in answer:
                    self._log.warning("lease.lost", run_id=run_id)
                    active.state.abandoned = True
                    active.hand_back()
                elif answer[run_id]:
                    active.cancel()

    async def accepted(self, state: RunState, *, local: bool) -> None:
        owner = self.owner if local else None
        await self.store.create_run(record_of(state, owner, self.lease))

    async def reserve_child(self, parent: RunState, key: str, run_id: str) -> None:
        parent.waiting[key] = run_id
        await self.checkpoint(parent, self._active.get(parent.header.run_id))

    async def checkpoint(self, state: RunState, active: ActiveRun | None) -> None:
        # checkpoints of one run are written one at a time, in order, even when parallel
        # branches finish blocks at once (a newer state is never overwritten)
        if active is not None and active.checkpointing is None:
            active.checkpointing = anyio.Lock()
        lock = active.checkpointing if active is not None else None
        try:
            async with lock if lock is not None else nullcontext():
                snapshot, trace = state.snapshot(), state.unsaved_trace()
                await self.store.checkpoint(state.header.run_id, self.owner, snapshot, trace)
        except LeaseLost as exc:
            raise Abandon from exc
        if active is not None and active.handing_back:
            raise Abandon

    async def finished(self, active: ActiveRun) -> None:
        state = active.state
        active.result = result_of_state(state)
        with anyio.CancelScope(shield=True):
            if state.abandoned:
                if active.handing_back:
                    await self.store.release_runs(self.owner, [state.header.run_id])
                active.result = None  # the run goes on elsewhere: ask the store
            else:
                await self.store.finish_run(record_of(state, self.owner), state.unsaved_trace())

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
            result = await self.result(run_id)
            if result.status.finished:
                return result
            await anyio.sleep(_POLL)

    async def request_cancel(self, run_id: str) -> bool:
        return await self.store.request_cancel(run_id)


def keeper_for(
    store: Store, owner: str, lease: float, active: Mapping[str, ActiveRun]
) -> RunKeeper:
    """The keeper a store calls for: durable when the store keeps runs as records."""
    if getattr(store, "durable", False):
        return DurableRuns(store, owner, lease, active)
    return MemoryRuns(store)
