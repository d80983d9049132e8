"""Call Flow children: activating one from a block, and waiting for it wherever it runs.

A child that waits runs in its parent's task, so cancelling the parent cancels it, and
handing the parent back (a stopping process) hands it back too. A parent resumed
elsewhere waits for the child it had reserved, through the store; cancelling it then
asks for the child to be cancelled too, wherever that runs.
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio

from blocks import BlockError
from permissions import ANONYMOUS

from .._model.errors import ActivationError, FlowError
from .._model.logs import get_logger
from .._model.types import RunResult
from .._store import Store
from .gate import Activation
from .interpreter import Abandon, RunState
from .runs import ActiveRun, child_outcome

__all__ = ["activate_child"]


class Runs(Protocol):
    """What of the engine a Call Flow activation uses."""

    store: Store

    async def _activate(
        self, activation: Activation, *, run_id: str | None = ..., waiting_key: str | None = ...
    ) -> ActiveRun: ...

    def _spawn(self, active: ActiveRun) -> None: ...

    def local_run(self, run_id: str) -> ActiveRun | None: ...

    async def execute_run(self, active: ActiveRun) -> None: ...

    async def wait_for(self, run_id: str) -> RunResult: ...

    async def cancel(self, run_id: str) -> None: ...


async def activate_child(
    runs: Runs,
    parent: RunState,
    path_key: str,
    flow: str,
    inputs: Any,
    version: int | None,
    wait: bool,
    cancel_with_parent: bool,
    anonymous: bool,
) -> Any:
    """A Call Flow block's activation (see ``Engine.activate_child``)."""
    pending = parent.waiting.get(path_key)  # durable: reserved before a crash
    if pending is not None and await runs.store.get_run_record(pending) is not None:
        if not wait:
            parent.waiting.pop(path_key, None)
            return {"run_id": pending}
        return await _wait_for_child(runs, parent, path_key, pending, flow)
    identity = ANONYMOUS if anonymous else parent.header.identity
    activation = Activation(flow, inputs, identity, "call_flow", version, parent)
    try:
        active = await runs._activate(activation, run_id=pending, waiting_key=path_key)
    except ActivationError as exc:
        raise BlockError(exc.code, str(exc)) from exc
    state = active.state
    run_id = state.header.run_id
    parent.children.append(run_id)
    if not wait:
        if cancel_with_parent:
            holder = runs.local_run(parent.header.run_id)
            if holder is not None:
                holder.detached.append(run_id)
        runs._spawn(active)
        parent.waiting.pop(path_key, None)
        return {"run_id": run_id}
    await runs.execute_run(active)
    if state.abandoned:  # handed back, or its store failed: the parent stops too
        raise Abandon
    parent.waiting.pop(path_key, None)
    return child_outcome(state.status, state.output, state.error, run_id, flow)


async def _wait_for_child(
    runs: Runs, parent: RunState, path_key: str, child: str, flow: str
) -> Any:
    """Wait for a child some other claim runs (a resumed parent)."""
    holder = runs.local_run(parent.header.run_id)
    if holder is not None:
        holder.waiting_elsewhere = True
    try:
        result = await runs.wait_for(child)
    except anyio.get_cancelled_exc_class():
        if holder is not None and holder.cancel_requested and not holder.handing_back:
            with anyio.CancelScope(shield=True):
                try:
                    await runs.cancel(child)
                except FlowError:
                    get_logger("flowwarden").exception("run.child_cancel_failed", run_id=child)
        raise
    finally:
        if holder is not None:
            holder.waiting_elsewhere = False
    parent.waiting.pop(path_key, None)
    return child_outcome(result.status, result.output, result.error, child, flow)
