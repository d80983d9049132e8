"""A run in flight in this process, and the results callers get from run state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

from blocks import BlockError

from .._model.types import RunError, RunResult, RunStatus, Trace
from .interpreter import Program, RunState

__all__ = ["ActiveRun", "child_outcome", "result_of_state"]


class ActiveRun:
    """A run in flight in this process: its state, cancel scope and completion."""

    __slots__ = (
        "_done",
        "cancel_requested",
        "checkpointing",
        "detached",
        "finished",
        "handing_back",
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
        # durable: checkpoints of one run are written one at a time, in order, even when
        # parallel branches finish blocks at once (a newer state is never overwritten)
        self.checkpointing: anyio.Lock | None = None
        # a resumed parent waiting for a child some other claim must run: it holds no
        # worker slot meanwhile, so the child can be claimed even by this worker
        self.waiting_elsewhere = False
        self.detached: list[str] = []  # wait: false children to cancel with this run
        self.result: RunResult | None = None

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


def result_of_state(state: RunState) -> RunResult:
    return RunResult(
        run_id=state.run_id,
        flow=state.flow,
        version=state.version,
        status=state.status,
        output=state.output,
        error=RunError.from_dict(state.error),
        has_errors=state.has_errors,
        user_id=state.identity.user_id,
        roles=state.identity.sorted_roles,
        parent_run_id=state.parent_run_id,
        root_run_id=state.root_run_id,
        depth=state.depth,
        inputs=state.inputs,
        trace=Trace(state.trace, state.created_at - state.clock0),
        log=tuple(state.log),
        created_at=state.created_at,
        finished_at=state.finished_at,
    )


def child_outcome(
    status: RunStatus, output: Any, error: Mapping[str, Any] | None, run_id: str, flow: str
) -> Any:
    """What a waiting Call Flow block gets from its child's end."""
    if status is RunStatus.COMPLETED:
        return output
    child = f"child run {run_id} of flow {flow!r}"
    if status is RunStatus.CANCELLED:
        raise BlockError("child_cancelled", f"{child} was cancelled", child_run_id=run_id)
    error = error or {}
    raise BlockError(
        "child_failed",
        f"{child} failed: [{error.get('code')}] {error.get('message')}",
        child_run_id=run_id,
    )
