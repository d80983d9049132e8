"""A run in flight in this process, and the conversions between its state, its stored
record and the result callers get."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any, cast

import anyio

from blocks import BlockError

from .._model.records import RunHeader, RunRecord, run_result
from .._model.types import RunError, RunResult, RunStatus, Trace, TraceEntry
from .interpreter import Program, RunState, entries

__all__ = [
    "ActiveRun",
    "Checkpoints",
    "child_outcome",
    "log_fields",
    "record_of",
    "result_of_state",
    "state_of",
]


class Checkpoints:
    """A durable run's checkpoints: written one at a time, in order, even when parallel
    branches finish blocks at once, so a newer state is never overwritten.

    ``taken`` counts the snapshots taken, ``stored`` is the number of the newest one
    written. A snapshot taken after a checkpoint was asked for holds that state too, so
    a checkpoint that finds one already written when its turn comes has nothing to add.
    """

    __slots__ = ("lock", "stored", "taken")

    def __init__(self) -> None:
        # taken without a yield when free: the write that follows yields anyway
        self.lock = anyio.Lock(fast_acquire=True)
        self.taken = 0
        self.stored = 0


class ActiveRun:
    """A run in flight in this process: its state, cancel scope and completion."""

    __slots__ = (
        "_done",
        "cancel_requested",
        "checkpointing",
        "detached",
        "epoch",
        "finished",
        "handing_back",
        "lost",
        "program",
        "result",
        "scope",
        "state",
        "waiting_elsewhere",
    )

    def __init__(self, state: RunState, program: Program) -> None:
        self.state = state
        self.program = program
        self.scope: anyio.CancelScope | None = None
        self._done: anyio.Event | None = None  # made only when someone waits
        self.finished = False
        self.cancel_requested = False
        self.handing_back = False  # stop here without an outcome (durable stores)
        # durable: this process may write nothing more for the run (its lease is gone,
        # or the store cannot be written): it stops, and whoever holds it goes on
        self.lost = False
        self.epoch = 0  # the claim this process holds the run under (0: it created it)
        # durable: the run's checkpoints in flight (made at its first)
        self.checkpointing: Checkpoints | None = None
        # a resumed parent waiting for a child some other claim must run: it holds no
        # worker slot meanwhile, so the child can be claimed even by this worker
        self.waiting_elsewhere = False
        self.detached: list[str] = []  # wait: false children to cancel with this run
        self.result: RunResult | None = None

    def cancel_scope(self) -> anyio.CancelScope:
        """The scope the run waits in from its first await on (:meth:`cancel` and
        :meth:`hand_back` cancel it), already cancelled if either came before."""
        scope = self.scope = anyio.CancelScope()
        if self.cancel_requested or self.handing_back:
            scope.cancel()
        return scope

    async def wait(self) -> None:
        """Wait until the run has ended here (finished, or handed back)."""
        if not self.finished:
            if self._done is None:
                self._done = anyio.Event()
            await self._done.wait()

    def set_finished(self) -> None:
        self.finished = True
        if self._done is not None:
            self._done.set()

    def cancel(self) -> None:
        self.cancel_requested = True
        if self.scope is not None:
            self.scope.cancel()

    def hand_back(self) -> None:
        """Stop running here at once; the run's last checkpoint stands for another worker."""
        self.handing_back = True
        if self.scope is not None:
            self.scope.cancel()


class _StateTrace(Trace):
    """A trace as a run in this process records it (``interpreter.Entry`` or ``Slice``):
    start and end perf-counter readings, made a Unix start and a duration when an entry
    is read. Slices are spread into entries on first use, not when the run ends."""

    __slots__ = ("_spread",)

    def __init__(self, raw: Any, offset: float) -> None:
        self._raw = tuple(raw)  # as Trace.__init__ does, without the call
        self._offset = offset
        self._spread = False

    def _entries(self) -> None:
        if not self._spread:
            self._raw = tuple(entries(self._raw))  # type: ignore[arg-type]
            self._spread = True

    def __len__(self) -> int:
        self._entries()
        return super().__len__()

    def __getitem__(self, index: Any) -> Any:
        self._entries()
        return super().__getitem__(index)

    def __iter__(self) -> Iterator[TraceEntry]:
        self._entries()
        return super().__iter__()

    def dicts(self) -> list[dict[str, Any]]:
        self._entries()
        offset = self._offset
        return [
            {
                "block": block,
                "type": kind,
                "start": start + offset,
                "duration": end - start,
                "outcome": outcome,
            }
            for (block, kind, outcome), start, end in cast(Any, self._raw)
        ]

    def _entry(self, raw: Any) -> TraceEntry:
        (block, kind, outcome), start, end = raw
        return TraceEntry(block, kind, start + self._offset, end - start, outcome)


_RANDOM_DIGITS = 13  # of a run id's 24 hex digits: 52 bits from the system's random source
_DRAWN = (_RANDOM_DIGITS + 1) // 2  # bytes read for each: 14 hex digits, of which 13 kept
_ids: list[str] = []
_millisecond, _digits = 0, ""  # the last millisecond an id was made in, and its 11 digits


def new_run_id() -> str:
    """A new run id: 24 hex digits, the millisecond it is made (11 digits, enough until
    the year 2527), then 13 random ones (52 bits from ``os.urandom``, read 256 at a time,
    since one system call a run costs more than the rest of making its id).

    An id made in a later millisecond sorts after: what the stores key on the run id
    (the run's row, its checkpoints, steps and trace) grows at one end of each index, so
    the runs committed together share pages there, rather than each writing a page of
    its own anywhere in every index. The random part keeps ids unique and unguessable
    among those of the same millisecond, in every process."""
    global _millisecond, _digits
    if not _ids:
        pool = os.urandom(_DRAWN * 256).hex()
        _ids.extend(pool[i : i + _RANDOM_DIGITS] for i in range(0, len(pool), 2 * _DRAWN))
    now = time.time_ns() // 1_000_000
    if now != _millisecond:  # formatted once a millisecond, not once a run
        _millisecond, _digits = now, f"{now:011x}"
    return _digits + _ids.pop()


# a forked child must not hand out the ids its parent has in hand
os.register_at_fork(after_in_child=_ids.clear)


def log_fields(header: RunHeader) -> dict[str, Any]:
    """What a run's events are logged with."""
    return {"run_id": header.run_id, "flow": header.flow, "version": header.version}


def result_of_state(state: RunState) -> RunResult:
    """The caller's view of a run in flight (or just ended) in this process."""
    header = state.header
    return run_result(
        header,
        state.status,
        output=state.output,
        error=state.error,
        has_errors=state.has_errors,
        trace=_StateTrace(cast(Any, state.trace), header.created_at - state.clock0),
        log=state.log,
        started_at=state.started_at,
        finished_at=state.finished_at,
    )


def record_of(
    state: RunState, owner: str | None, lease: float | None = None, *, epoch: int = 0
) -> RunRecord:
    """The stored form of a run as it stands now (without its trace), held by ``owner``
    under claim ``epoch``; an owned run being created is leased for ``lease`` seconds
    from now, like a claimed one."""
    return RunRecord(
        header=state.header,
        status=state.status,
        started_at=state.started_at,
        finished_at=state.finished_at,
        output=state.output,
        error=state.error.to_dict() if state.error is not None else None,
        has_errors=state.has_errors,
        # a finished run keeps only its log of what the checkpoint held
        checkpoint=state.snapshot() if not state.status.finished else {"log": state.log},
        owner=owner,
        lease_expires=time.time() + lease if owner is not None and lease is not None else None,
        lease_epoch=epoch,
    )


def state_of(record: RunRecord) -> RunState:
    """A run's state rebuilt from its record and last checkpoint, to be resumed."""
    state = RunState(record.header, status=RunStatus.RUNNING)
    state.restore(record.checkpoint or {}, list(record.trace))
    return state


def child_outcome(
    status: RunStatus, output: Any, error: RunError | None, run_id: str, flow: str
) -> Any:
    """What a waiting Call Flow block gets from its child's end."""
    if status is RunStatus.COMPLETED:
        return output
    child = f"child run {run_id} of flow {flow!r}"
    if status is RunStatus.CANCELLED:
        raise BlockError("child_cancelled", f"{child} was cancelled", child_run_id=run_id)
    code, message = (error.code, error.message) if error is not None else (None, None)
    raise BlockError("child_failed", f"{child} failed: [{code}] {message}", child_run_id=run_id)
