"""The :class:`Engine`: versions and their lifecycle, activations through the gate, runs."""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

import anyio
import anyio.abc

from blocks import BlockRegistry
from permissions import ANONYMOUS, Identity

from .._model.errors import ActivationError, FlowError, StoreError
from .._model.logs import get_logger
from .._model.records import CANCELLED, RunHeader, RunRecord
from .._model.types import Limits, RunResult, RunStatus
from .._runtime.workspace import WorkspaceReport
from .._store import Store, open_store
from .children import activate_child
from .gate import Activation, Admission, Gate, Via, hypothetical, outside
from .interpreter import Abandon, Interpreter, RunState
from .keeping import keeper_for
from .listing import RunListing
from .permissions import PermissionsAPI
from .runs import ActiveRun, log_fields, new_run_id, result_of_state, state_of
from .telemetry import Telemetry, TracerProvider
from .versions import VersionMethods, Versions

if TYPE_CHECKING:
    import httpx

__all__ = ["MIN_LEASE", "Engine"]

MIN_LEASE = 0.1  # seconds, renewed every third; the worker command asks for at least 1
_CALLER_SLICE = 0.05  # seconds a durable run may run in a waiting caller's task, at most


class Engine(VersionMethods, RunListing):
    """Runs flows. Use as ``async with Engine() as engine:``.

    ``store`` is a :class:`Store` or a store URL (in memory by default); ``registry`` the
    block types documents may use (built-ins plus any you give); ``limits`` the depth,
    step, iteration and size limits; ``tracer_provider`` where spans go (else the global one).
    """

    def __init__(
        self,
        store: Store | str | None = None,
        *,
        registry: BlockRegistry | None = None,
        limits: Limits | None = None,
        http: httpx.AsyncClient | None = None,
        execute: bool = True,
        lease: float = 30.0,
        worker_id: str | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.limits = limits if limits is not None else Limits()
        if not (isinstance(lease, int | float) and math.isfinite(lease) and lease >= MIN_LEASE):
            raise ValueError(f"lease must be a number of seconds, at least {MIN_LEASE:g}")
        if store is None or isinstance(store, str):
            store = open_store(store, keep_finished_runs=self.limits.keep_finished_runs)
        self.store: Store = store
        # with a durable store: how long a claim lasts without renewal, and the name
        # this process holds its claims under
        self.lease = float(lease)
        self.owner = worker_id or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._active: dict[str, ActiveRun] = {}
        self._keeper = keeper_for(self.store, self.owner, self.lease, self._active)
        self.durable = self._keeper.durable
        # whether this engine runs the runs it accepts without waiting: False leaves
        # them QUEUED for workers, which only a durable store has
        self.execute = execute or not self.durable
        self.registry = registry if registry is not None else BlockRegistry()
        self.permissions = PermissionsAPI(self.store)
        self._versions = Versions(self.store, self.registry)
        self.telemetry = Telemetry(self.store, self._active, tracer_provider)
        self._gate = Gate(self.store, self._versions.program, self.limits, self.telemetry)
        self._group: anyio.abc.TaskGroup | None = None
        self._http = http  # made on first use when not given: most runs make no request
        self._own_http = http is None
        self._logger = get_logger("flowwarden")
        self.workspace_report: WorkspaceReport | None = None  # set by open_workspace

    @property
    def http(self) -> httpx.AsyncClient:
        """The HTTP client ``http`` blocks use (the one given, or one of the engine's own)."""
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(timeout=30.0)
        return self._http

    # -- context -------------------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        if self._group is not None:
            raise FlowError("the engine is already running")
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        group.start_soon(self._keeper.keep_alive, name="lease renewal")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group = self._group
        try:
            # durable: handed back at once, for a worker to resume; in memory: cancelled
            with anyio.CancelScope(shield=True):
                await self._keeper.release(list(self._active.values()), 0.0)
            self._group = None
            if group is not None:
                group.cancel_scope.cancel()
                await group.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                if self._own_http and self._http is not None:
                    await self._http.aclose()
                await self.store.close()

    @classmethod
    async def open_workspace(
        cls,
        path: str | Path,
        *,
        store: Store | str | None = None,
        registry: BlockRegistry | None = None,
        limits: Limits | None = None,
        execute: bool = True,
    ) -> Engine:
        """An engine holding a workspace's flows (started as their documents say) and
        ``permissions.yaml``. Enter it with ``async with``."""
        from .workspace import load_workspace

        engine = cls(store, registry=registry, limits=limits, execute=execute)
        engine.workspace_report = await load_workspace(engine, Path(path))
        return engine

    async def hand_back(self, grace: float = 10.0) -> None:
        """Stop running the runs in flight here, Call Flow children included: each
        finishes the block it is in (for up to ``grace`` seconds, then it stops where
        it stands). With a durable store each is handed back at its last checkpoint for
        a worker to resume, and nothing is recorded CANCELLED; in memory, where nobody
        could resume them, what is left after ``grace`` is cancelled."""
        await self._keeper.release(list(self._active.values()), grace)

    # -- runs ----------------------------------------------------------------------------

    @overload
    async def call_flow(
        self,
        flow: str,
        inputs: Mapping[str, Any] | bytes | None = ...,
        *,
        identity: Identity = ...,
        wait: Literal[True] = ...,
        version: int | None = ...,
        via: Via = ...,
    ) -> RunResult: ...

    @overload
    async def call_flow(
        self,
        flow: str,
        inputs: Mapping[str, Any] | bytes | None = ...,
        *,
        identity: Identity = ...,
        wait: Literal[False],
        version: int | None = ...,
        via: Via = ...,
    ) -> str: ...

    async def call_flow(
        self,
        flow: str,
        inputs: Mapping[str, Any] | bytes | None = None,
        *,
        identity: Identity = ANONYMOUS,
        wait: bool = True,
        version: int | None = None,
        via: Via = "api",
    ) -> RunResult | str:
        """Activate a flow through the gate under ``identity``.

        Raises an :class:`ActivationError` when the gate refuses (then no run exists).
        With ``wait=True`` returns the run's result, whatever its end status; with
        ``wait=False`` returns the run id at once.
        """
        local = wait or self.execute
        active = await self._activate(outside(flow, inputs, identity, via, version), local=local)
        if not wait:
            if local:
                self._spawn(active)
            return active.state.header.run_id
        await self.execute_run(active)
        assert active.result is not None
        return active.result

    async def start_flow(
        self,
        flow: str,
        inputs: Mapping[str, Any] | bytes | None = None,
        *,
        identity: Identity = ANONYMOUS,
        version: int | None = None,
        via: Via = "api",
        waiting: float | None = None,
    ) -> RunResult | str:
        """Activate like ``call_flow(wait=False)``, for a caller about to wait for the
        result (the HTTP API's activate-blocking): the run begins in the caller's task,
        whose blocks up to the first that needs an await run before this returns (with
        ``waiting``, the seconds the caller waits, a durable run's too, each checkpointed,
        for at most a twentieth of a second, shielded from the caller's cancellation);
        only a run still going then gets a task of its own, which outlives the caller.
        Returns the run's result when it has ended by then, else its id."""
        activation = outside(flow, inputs, identity, via, version)
        active = await self._activate(activation, local=self.execute)
        if self.execute:
            await self._start(active, waiting)
        return active.result if active.result is not None else active.state.header.run_id

    async def examine(
        self,
        flow: str,
        identity: Identity = ANONYMOUS,
        *,
        version: int | None = None,
        caller: str | None = None,
        depth: int = 0,
    ) -> Admission | ActivationError:
        """What the gate would answer now for an activation of ``flow`` — from a Call
        Flow block of ``caller`` at call depth ``depth`` when a caller is named — short
        of the inputs: the admission, or the refusal. Nothing is logged or created."""
        activation = hypothetical(flow, identity, version=version, caller=caller, depth=depth)
        return await self._gate.examine(activation)

    async def activate_child(
        self,
        parent: RunState,
        path_key: str,
        flow: str,
        inputs: Any,
        *,
        version: int | None,
        wait: bool,
        anonymous: bool,
        cancel_with_parent: bool,
    ) -> Any:
        """A Call Flow block's activation: the gate, under the caller's identity.

        With a durable store the child's id is checkpointed in the parent before the
        child exists, so a parent resumed elsewhere waits for that same child.
        """
        try:
            return await activate_child(
                self, parent, path_key, flow, inputs, version, wait, cancel_with_parent, anonymous
            )
        except StoreError as exc:  # not the run's outcome: it stops here, to be resumed
            raise Abandon from exc

    async def _activate(
        self,
        activation: Activation,
        *,
        local: bool = True,
        run_id: str | None = None,
        waiting_key: str | None = None,
    ) -> ActiveRun:
        if self._group is None:
            raise FlowError("the engine is not running: use it as 'async with Engine() as engine'")
        admission = await self._gate.admit(activation)
        parent = activation.parent
        run_id = run_id or new_run_id()
        if parent is not None and waiting_key is not None:
            # before the child exists: see activate_child
            await self._keeper.reserve_child(parent, waiting_key, run_id)
        header = RunHeader(  # by position, in the header's order: one for every run
            run_id,
            admission.flow,
            admission.version,
            activation.identity,
            admission.inputs,
            parent.header.run_id if parent is not None else None,  # parent_run_id
            parent.header.root_run_id if parent is not None else run_id,  # root_run_id
            admission.depth,
            activation.via,
            time.time(),  # created_at
        )
        state = RunState(header, status=RunStatus.RUNNING if local else RunStatus.QUEUED)
        active = ActiveRun(state, admission.program)
        await self._keeper.accepted(state, local=local)
        if local:
            self._active[run_id] = active
        return active

    async def checkpoint(self, state: RunState) -> None:
        """Persist a durable run's state after a block (the interpreter calls this)."""
        await self._keeper.checkpoint(state, self._active.get(state.header.run_id))

    def _spawn(self, active: ActiveRun, interpreter: Interpreter | None = None) -> None:
        assert self._group is not None
        run = self.execute_run
        self._group.start_soon(run, active, interpreter, name=f"run {active.state.header.run_id}")

    def _begin(self, active: ActiveRun) -> Interpreter | None:
        """Begin a run here: its blocks up to the first that needs an await run now,
        without an await (in memory and untraced, see :meth:`Interpreter.start`). The
        interpreter to go on with, or None when the run has ended so, or never runs
        (cancelled or handed back before it began)."""
        if active.cancel_requested or active.handing_back:
            return None
        interpreter = Interpreter(active.program, active.state, self, durable=self.durable)
        return None if interpreter.start() else interpreter

    async def _start(self, active: ActiveRun, waiting: float | None = None) -> None:
        """Begin a run in the caller's task (a durable one with ``waiting``: start_flow):
        one that ends so is finished here; only one that waits for something gets a task
        of its own, going on from that block."""
        try:
            interpreter = self._begin(active)
            if interpreter is not None and waiting is not None and interpreter.can_detach:
                until = time.perf_counter() + min(waiting, _CALLER_SLICE)
                with anyio.CancelScope(shield=True):  # the run outlives its caller
                    if await interpreter.run(active.cancel_scope, until):
                        interpreter = None
        except BaseException:  # an interrupt between two blocks: recorded, as in a task
            await self._ended(active)
            raise
        if interpreter is None:
            await self._ended(active)
        else:
            self._spawn(active, interpreter)

    async def execute_run(self, active: ActiveRun, interpreter: Interpreter | None = None) -> None:
        """Run an admitted (or resumed) run here to its end, or until it is handed back
        (``interpreter``: the run's, begun by :meth:`_start`; else it begins here)."""
        try:
            if interpreter is None:
                interpreter = self._begin(active)
            if interpreter is not None:
                await interpreter.run(active.cancel_scope)
        finally:
            await self._ended(active)

    async def _ended(self, active: ActiveRun) -> None:
        """Record how the run ended here: cancelled when it stopped without an outcome
        (unless handed back), then kept, counted and announced to whoever waits."""
        state = active.state
        if active.handing_back and not state.status.finished:
            state.abandoned = True
        if not state.status.finished and not state.abandoned:
            state.status = RunStatus.CANCELLED
            state.error = CANCELLED
            state.finished_at = time.time()
        header = state.header
        try:
            await self._keeper.finished(active)
        except Exception:
            self._logger.exception("run.save_failed", **log_fields(header))
        finally:
            self._active.pop(header.run_id, None)
            active.set_finished()
        self.telemetry.run_ended(state)
        if state.status is RunStatus.CANCELLED:
            for child in active.detached:
                child_run = self._active.get(child)
                if child_run is not None:
                    child_run.cancel()
        if state.status is RunStatus.FAILED:
            error = state.error.to_dict() if state.error is not None else None
            self._logger.info("run.failed", error=error, **log_fields(header))

    async def wait_for(self, run_id: str) -> RunResult:
        """The run's result once it has ended (bound the wait with ``anyio.fail_after``)."""
        active = self._active.get(run_id)
        if active is not None:
            await active.wait()
            if active.result is not None:
                return active.result
        return await self._keeper.wait_elsewhere(run_id)

    async def get_run(self, run_id: str) -> RunResult:
        """The run's result now, finished or not (:class:`RunNotFound` if there is none)."""
        active = self._active.get(run_id)
        if active is not None:
            return result_of_state(active.state)
        return await self._keeper.result(run_id)

    async def cancel(self, run_id: str) -> None:
        """Cancel a run in flight (and the children it waits for). A finished run is left
        as it is; an unknown run raises :class:`RunNotFound`."""
        active = self._active.get(run_id)
        if active is not None:
            active.cancel()
        elif not await self._keeper.request_cancel(run_id):
            await self.get_run(run_id)

    def active_runs(self) -> Iterable[str]:
        """Ids of the runs in flight in this engine."""
        return list(self._active)

    def local_run(self, run_id: str) -> ActiveRun | None:
        """The run in flight in this engine with that id, if any."""
        return self._active.get(run_id)

    async def take_over(self, record: RunRecord) -> ActiveRun:
        """Take over a claimed run: rebuild its state from its last checkpoint. Run it
        with :meth:`execute_run` (a :class:`Worker` does both)."""
        program = await self.program(record.header.flow, record.header.version)
        active = ActiveRun(state_of(record), program)
        active.epoch = record.lease_epoch
        if record.cancel_requested:
            active.cancel_requested = True
        self._active[record.run_id] = active
        return active
