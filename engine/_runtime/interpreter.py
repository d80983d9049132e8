"""The interpreter: walks a compiled flow's block graph for one run, on anyio.

Definitions are data, runs are state. A :class:`Program` is compiled once per version
from the frozen document (blocks linked to their successors, parameters validated,
expressions compiled). Everything that changes while a run runs lives in one
:class:`RunState` — variables, step count, trace, the position of every live path, loop
counters — plain data that a durable store can checkpoint after every block.

A *path* runs block to block along ``next`` until a block has none. The main path,
every loop iteration and every parallel branch is a path with a scope of its own (loop
variables) over the run's shared variables. Structural blocks (condition, router,
repeat, for_each, break, parallel, return) are carried out here; action blocks are
``run(ctx, params)`` functions from the block registry, with ``ctx`` the path.

The hot loop is kept lean on purpose. With the store in memory and no recording tracer,
blocks that need no await (plain-function action blocks such as ``set``, and condition,
router, break and return) run in :meth:`Interpreter._run_inline`: each is a call with
its parameters bound at compile time, one clock reading and two appends (a
:class:`Slice` holds the trace entries of blocks run one after another), and a
cancellation checkpoint is taken about every millisecond of them, so a run of blocks
that never yield can still be cancelled. A parallel branch or loop iteration that ends
without awaiting is run there too, in the task of the block that started it; only a
branch that has to wait gets a task. Every other block (and every block of a durable or
traced run) takes the general path: one awaited call, a trace tuple, two clock reads, a
checkpoint every 64 steps, and for a durable store its positions and a checkpoint after
it; a traced run puts each block in a ``flow.block`` span.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.lowlevel

from blocks import BlockDefinition, BlockError, BlockRegistry, Expression, RunInfo, Template
from blocks._builtins import SetParams, run_set
from blocks._values import ExpressionError

from .._model.document import FlowDocument, RetryPolicy
from .._model.inputs import InputsValidator
from .._model.logs import get_logger
from .._model.records import RunHeader
from .._model.types import Limits, RunError, RunStatus

if TYPE_CHECKING:
    import httpx

    pass

__all__ = ["Abandon", "Entry", "Host", "Interpreter", "Program", "RunState", "Slice", "entries"]

_perf = time.perf_counter
_INLINE_SLICE = 0.001  # seconds of blocks run inline, at most, between two checkpoints
# statuses a run takes on, looked up once: a member read off its enum class costs more
_RUNNING, _COMPLETED, _FAILED = RunStatus.RUNNING, RunStatus.COMPLETED, RunStatus.FAILED
_checkpoint = anyio.lowlevel.checkpoint


class RunTrace(Protocol):
    """A run's span: current while it runs; ``tracer`` (for block spans) is ``None``
    unless the span records."""

    tracer: Any
    current: bool  # entering makes it the current span: the run keeps to one task

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...

    def end(self, state: RunState) -> None: ...


class Tracing(Protocol):
    def start_run(self, state: RunState) -> RunTrace: ...


class Host(Protocol):
    """What the interpreter needs from the engine that runs it."""

    @property
    def http(self) -> httpx.AsyncClient: ...

    limits: Limits

    @property
    def telemetry(self) -> Tracing: ...

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
        """Start a child run through the gate (BlockError when refused or failed)."""
        ...

    async def checkpoint(self, state: RunState) -> None:
        """Persist the run state after a block (durable stores only); raises
        :class:`Abandon` when this process must stop running the run."""
        ...


@dataclass(slots=True, init=False)
class RunState:
    """Everything about one run that changes while it runs. Plain data only. The
    fields' first values are set in ``__init__``."""

    header: RunHeader
    status: RunStatus
    vars: dict[str, Any]
    steps: int
    # (block, type, outcome), start, end: perf-counter readings (one small tuple per
    # entry, as cheap to make as it can be: a run may make 100,000 of them), or a Slice
    # of the entries of blocks run inline one after another (read with ``entries``)
    trace: list[Entry | Slice]
    log: list[dict[str, Any]]
    positions: dict[str, str | None]
    started: dict[str, int]
    loops: dict[str, list[int]]
    waiting: dict[str, str]
    children: list[str]
    has_errors: bool
    output: Any
    error: RunError | None
    started_at: float | None
    finished_at: float | None
    clock0: float
    saved_trace: int
    abandoned: bool

    def __init__(self, header: RunHeader, status: RunStatus = RunStatus.QUEUED) -> None:
        # written out: every run makes one, and the generated __init__, with a default
        # factory per container, costs half as much again
        self.header = header
        self.status = status
        self.vars = {}
        self.steps = 0
        self.trace = []
        self.log = []
        self.positions = {}
        self.started = {}
        self.loops = {}
        self.waiting = {}
        self.children = []
        self.has_errors = False
        self.output = None
        self.error = None
        self.started_at = None
        self.finished_at = None
        # the perf-counter reading at the header's creation time
        self.clock0 = _perf() - (time.time() - header.created_at)
        self.saved_trace = 0
        self.abandoned = False

    def wall(self, perf: float) -> float:
        """A perf-counter reading taken during this run, as a Unix time."""
        return self.header.created_at + (perf - self.clock0)

    def snapshot(self) -> dict[str, Any]:
        """The part of the state a checkpoint keeps (the trace is kept apart)."""
        return {
            "vars": self.vars,
            "steps": self.steps,
            "has_errors": self.has_errors,
            "log": self.log,
            "positions": self.positions,
            "started": self.started,
            "loops": self.loops,
            "waiting": self.waiting,
            "children": self.children,
            "started_at": self.started_at,
        }

    def restore(
        self, snapshot: dict[str, Any], trace: list[tuple[str, str, float, float, str]]
    ) -> None:
        """Continue from a checkpoint taken by another process (trace starts are Unix)."""
        self.vars.clear()
        self.vars.update(snapshot.get("vars", {}))
        self.steps = int(snapshot.get("steps", 0))
        self.has_errors = bool(snapshot.get("has_errors", False))
        self.log = list(snapshot.get("log", []))
        self.positions = dict(snapshot.get("positions", {}))
        self.started = {key: int(step) for key, step in snapshot.get("started", {}).items()}
        self.loops = {key: list(done) for key, done in snapshot.get("loops", {}).items()}
        self.waiting = dict(snapshot.get("waiting", {}))
        self.children = list(snapshot.get("children", []))
        self.started_at = snapshot.get("started_at")
        self.clock0 = _perf() - (time.time() - self.header.created_at)
        offset = self.header.created_at - self.clock0
        self.trace = [((b, t, o), s - offset, s - offset + d) for b, t, s, d, o in trace]
        self.saved_trace = len(self.trace)

    def unsaved_trace(self) -> list[tuple[str, str, float, float, str]]:
        """Trace entries since the last checkpoint as stored (block, type, Unix start,
        duration, outcome); marks them saved."""
        offset = self.header.created_at - self.clock0
        # a durable run has no Slice (its blocks never run inline): items are entries
        unsaved = entries(self.trace[self.saved_trace :])
        rows = [(b, t, s + offset, e - s, o) for (b, t, o), s, e in unsaved]
        self.saved_trace = len(self.trace)
        return rows


class _Start:
    """Where :meth:`Interpreter.run` goes on from when nothing has run yet."""


_START = _Start()


class _Signal(Exception):
    """Base of the interpreter's own control-flow signals."""


class _Break(_Signal):
    pass


class _Detach(_Signal):
    """The main path stops before its next block, for the run to go on in a task of its
    own (see :meth:`Interpreter.run`'s ``until``)."""


class _Return(_Signal):
    def __init__(self, value: Any) -> None:
        self.value = value


class _StepLimit(_Signal):
    """Fatal: cannot be handled by ``on_error`` or retried."""


class Abandon(_Signal):
    """Raised by the host: stop running this run here and record no outcome (its lease
    was lost, or the worker is handing it back). Its last checkpoint stands."""


Entry = tuple[tuple[str, str, str], float, float]
"""A trace entry as a run records it: ``(block, type, outcome), start, end``."""


Label = tuple[str, str, str]
"""A trace entry's block, type and outcome."""


class Slice:
    """The trace entries of blocks run inline one after another, with no other path
    running between them: the i-th label ran from ``times[i]`` to ``times[i + 1]``.

    An item of ``labels`` is one block's label, or the labels of a whole stretch of
    literal ``set`` blocks (a tuple of them, see ``_Stretch``), put there once for all.
    A clock reading a block and no tuple: a tuple is an object the garbage collector
    counts, and a chain of cheap blocks making one each would be paying for its
    collections.
    """

    __slots__ = ("labels", "times")

    def __init__(self, labels: list[Label | tuple[Label, ...]], times: list[float]) -> None:
        self.labels = labels
        self.times = times


def entries(trace: Iterable[Entry | Slice]) -> list[Entry]:
    """A run's trace as entries, its slices spread out."""
    found: list[Entry] = []
    for item in trace:
        if type(item) is Slice:
            times = item.times
            labels: list[Label] = []
            for label in item.labels:
                if type(label[0]) is str:
                    labels.append(label)
                else:
                    labels.extend(label)  # type: ignore[arg-type]
            found.extend(zip(labels, times[:-1], times[1:], strict=True))
        else:
            found.append(item)  # type: ignore[arg-type]
    return found


_Execute = Callable[["_Node", "_Path"], Awaitable[str | None]]
_Choose = Callable[["_Node", "_Path"], str | None]

# A router's port for "no route matched": a name no route key can take (keys are the
# string forms of values, so they are never this).


class _Node:
    """A block, compiled: parameters, linked successors and how to execute it."""

    __slots__ = (
        "call",
        "definition",
        "execute",
        "id",
        "inline",
        "labels",
        "next",
        "ok",
        "on_error",
        "params",
        "plain",
        "ports",
        "retry",
        "returns",
        "run",
        "stretch",
        "sync",
        "timeout",
        "type",
        "update",
    )

    def __init__(self, block_id: str, kind: str, params: Any, definition: BlockDefinition) -> None:
        self.id = block_id
        self.type = kind
        self.params = params
        self.definition = definition
        self.run = definition.run
        # plain functions are called without an await: cheaper for blocks like ``set``
        self.sync = self.run is not None and not inspect.iscoroutinefunction(self.run)
        self.next: _Node | None = None
        self.ok = (block_id, kind, "ok")  # the label of its trace entries that went well
        self.on_error: _Node | None = None
        self.ports: dict[str, _Node | None] = {}  # by port field: ``then``, ``routes.a``
        self.labels: dict[str, str] = {}  # a port's trace label, where not its field
        self.timeout: float | None = None
        self.retry: RetryPolicy | None = None
        self.plain = False
        # carried out without an await (see Interpreter._run_inline): a plain action
        # block that is a plain function, or a structural block that only chooses a port
        self.inline = False
        # an inline block with its parameters bound: ``call(path)`` runs it and gives the
        # port it takes (None: ``next``)
        self.call: Callable[[_Path], str | None] | None = None
        # a built-in ``set`` of literal values, the commonest block there is: the values
        # it sets, which the inline loop hands to ``dict.update`` itself (a call less)
        self.update: dict[str, Any] | None = None
        # a literal ``set`` of one variable that begins a stretch of them (_stretches)
        self.stretch: _Stretch | None = None
        self.returns = kind == "return" and definition.kind == "structural"
        self.execute: _Execute = _run_action


class Program:
    """A version compiled for the interpreter; built once, shared by all its runs."""

    def __init__(self, document: FlowDocument, registry: BlockRegistry) -> None:
        self.document = document
        self.flow = document.flow
        self.callable_by = (
            frozenset(document.callable_by) if document.callable_by is not None else None
        )
        self.input_validator: InputsValidator | None = None
        if document.inputs is not None:
            self.input_validator = InputsValidator(document.inputs)
        nodes: dict[str, _Node] = {}
        for block_id, spec in document.blocks.items():
            definition = registry.get(spec.type)
            if definition is None:  # validated before; a registry change is a usage error
                raise ValueError(f"block {block_id!r}: unknown block type {spec.type!r}")
            node = _Node(block_id, spec.type, spec.params, definition)
            node.timeout = spec.timeout
            node.retry = spec.retry
            if definition.kind == "structural":
                node.execute = _STRUCTURAL[spec.type]
            node.plain = definition.kind == "action" and node.timeout is None and not node.retry
            if node.timeout is None and not node.retry:
                node.call = _inline_call(node)
                node.inline = node.call is not None
                if definition.run is run_set and isinstance(spec.params, SetParams):
                    node.update = spec.params.values.scalar_object
            nodes[block_id] = node
        for block_id, spec in document.blocks.items():
            node = nodes[block_id]
            node.next = nodes[spec.next] if spec.next else None
            node.on_error = nodes[spec.on_error] if spec.on_error else None
            ports = spec.params.ports()
            node.ports = {port.field: _link(nodes, port.target) for port in ports}
            node.labels = {port.field: port.label for port in ports if port.label != port.field}
        # What the inline loop reads of each block, made again here one block after the
        # other so that it lies together in memory, in the order runs mostly take: a
        # chain of cheap blocks is paced by the processor's cache misses, not the work.
        # (one kind of object at a time: each then lies in a run of its own)
        for node in nodes.values():
            node.ok = (node.id, node.type, "ok")
        for node in nodes.values():
            if node.update is not None:
                node.update = dict(node.update)
        _stretches(nodes)
        self.nodes = nodes
        self.start = nodes[document.start]


_STRETCH = 64  # literal ``set`` blocks run as one stretch, at most


class _Stretch:
    """Literal ``set`` blocks of one variable each, one the ``next`` of the other, run
    by the inline loop with a ``for`` over their variables and values. Each still ends
    with a clock reading of its own; their labels go into the trace as one item."""

    __slots__ = ("labels", "last", "pairs", "size")

    def __init__(self, members: list[_Node]) -> None:
        self.pairs = tuple(next(iter(member.update.items())) for member in members)  # type: ignore[union-attr]
        self.labels = tuple(member.ok for member in members)
        self.size = len(members)
        self.last = members[-1]


def _stretches(nodes: Mapping[str, _Node]) -> None:
    """Cut each chain of literal ``set`` blocks of one variable into stretches of at
    most ``_STRETCH``. A run that enters a chain in the middle runs block by block up
    to the next stretch's first block; every block is in one stretch at most."""
    taken: set[str] = set()
    for head in nodes.values():
        members: list[_Node] = []
        node: _Node | None = head
        while node is not None and node.id not in taken and len(members) < _STRETCH:
            if node.update is None or len(node.update) != 1:
                break
            members.append(node)
            taken.add(node.id)
            node = node.next
        if len(members) > 1:
            head.stretch = _Stretch(members)


def _inline_call(node: _Node) -> Callable[[_Path], str | None] | None:
    """How an inline block is run, its parameters bound (None: it needs an await)."""
    definition = node.definition
    if definition.kind == "structural":
        choose = _CHOOSE.get(node.type)
        return functools.partial(choose, node) if choose is not None else None
    if not node.sync:
        return None
    if definition.bind is not None:
        bound: Callable[[_Path], None] = definition.bind(node.params)
        return bound
    run, params = node.run, node.params

    def call(path: _Path) -> None:
        run(path, params)  # type: ignore[misc]

    return call


def _link(nodes: Mapping[str, _Node], target: str | None) -> _Node | None:
    return nodes[target] if target is not None else None


class _Path:
    """One path of a run (main path, loop iteration or parallel branch).

    It is the :class:`blocks.BlockContext` handed to action blocks: at any moment a path
    runs one block, so the same object serves every block along it.
    """

    __slots__ = ("attempt", "interpreter", "key", "node", "scope", "step", "vars")

    def __init__(self, interpreter: Interpreter, scope: dict[str, Any], key: str) -> None:
        self.interpreter = interpreter
        self.scope = scope
        self.key = key
        self.node: _Node | None = None
        self.attempt = 1
        self.step = 0  # the run's step number when the current block started
        self.vars: dict[str, Any] = interpreter.state.vars

    @property
    def block_id(self) -> str:
        return self.node.id if self.node is not None else ""

    @property
    def run(self) -> RunInfo:
        return self.interpreter.info

    @property
    def http(self) -> httpx.AsyncClient:
        return self.interpreter.host.http

    @property
    def idempotency_key(self) -> str:
        state = self.interpreter.state
        return f"{state.header.run_id}:{self.key or '/'}:{self.block_id}:{self.step}"

    def evaluate(self, value: Template | Expression, scope: Mapping[str, Any] | None = None) -> Any:
        try:
            return value.evaluate(self.scope if scope is None else scope)
        except ExpressionError as exc:
            raise BlockError("expression", f"block {self.block_id!r}: {exc}") from exc

    def log(self, level: str, message: str, **fields: Any) -> None:
        interpreter = self.interpreter
        entry = {"block": self.block_id, "level": level, "message": message, **fields}
        entry["time"] = time.time()
        interpreter.state.log.append(entry)
        method = getattr(interpreter.logger, level, interpreter.logger.info)
        method("flow.log", block=self.block_id, message=message, **fields)

    async def call_flow(
        self,
        flow: str,
        inputs: Any,
        *,
        version: int | None,
        wait: bool,
        anonymous: bool,
        cancel_with_parent: bool,
    ) -> Any:
        interpreter = self.interpreter
        return await interpreter.host.activate_child(
            interpreter.state,
            self.key,
            flow,
            inputs,
            version=version,
            wait=wait,
            anonymous=anonymous,
            cancel_with_parent=cancel_with_parent,
        )


class Interpreter:
    """Runs one :class:`RunState` through one :class:`Program`."""

    def __init__(
        self,
        program: Program,
        state: RunState,
        host: Host,
        *,
        durable: bool = False,
    ) -> None:
        self.program = program
        self.state = state
        self.host = host
        # durable: every path's position is recorded as it moves and the host checkpoints
        # after every block; a restored state is resumed from those positions
        self.durable = durable
        self._resume: dict[str, str | None] = dict(state.positions) if durable else {}
        # an OpenTelemetry tracer that records, or None: every block in a span of its own
        self.tracer: Any = None
        # blocks that need no await run in _run_inline: not when a durable store wants a
        # checkpoint after each of them, nor when each wants a span (set again by run)
        self.inline = not durable
        # when the last cancellation checkpoint was taken for blocks run inline
        self.checked = _perf()
        self.limits = host.limits
        header = state.header
        identity = header.identity
        self._info: RunInfo | None = None  # made when a block asks (most never do)
        self._logger: Any = None
        run_scope = {
            "id": header.run_id,
            "flow": header.flow,
            "version": header.version,
            "depth": header.depth,
            "user_id": identity.user_id,
            "roles": list(identity.sorted_roles),
        }
        self.root_scope: dict[str, Any] = {
            "inputs": header.inputs,
            "vars": state.vars,
            "run": run_scope,
        }
        self.main = _Path(self, self.root_scope, "")
        self._span: RunTrace | None = None  # made by start() or run()
        self._next: _Node | _Start | None = _START  # where run() goes on from
        self._until: float | None = None  # see run

    @property
    def info(self) -> RunInfo:
        """What a block may know about its run (``BlockContext.run``)."""
        if self._info is None:
            header = self.state.header
            self._info = RunInfo(
                id=header.run_id,
                flow=header.flow,
                version=header.version,
                depth=header.depth,
                user_id=header.identity.user_id,
                roles=header.identity.sorted_roles,
            )
        return self._info

    @property
    def logger(self) -> Any:
        """The run's structlog logger, bound on first use (most runs never log)."""
        if self._logger is None:
            header = self.state.header
            self._logger = get_logger("flowwarden").bind(
                run_id=header.run_id, flow=header.flow, version=header.version
            )
        return self._logger

    def start(self) -> bool:
        """Begin the run here, in the caller's task and without an await: the blocks up to
        the first that needs an await run now. True when the run ended so (its state says
        how, and :meth:`run` is not called); False when :meth:`run` goes on from there,
        in this task or in one of its own. Only an untraced run in memory runs anything here: a
        durable one is checkpointed block by block, and a run span is made current in
        the one task the whole run must then keep to."""
        span = self._trace()
        if span.current or not self.inline:
            return False
        state = self.state
        try:
            node = self._first()
        except Exception as exc:
            self._outcome(exc)
        else:
            if node is not None:
                self._next = node
                return False
            self._outcome(None)
        if not state.abandoned:
            state.finished_at = time.time()
        span.end(state)
        del self.main  # see run
        return True

    async def run(
        self, cancel_scope: Callable[[], anyio.CancelScope], until: float | None = None
    ) -> bool:
        """Run to the end (or on from where :meth:`start` stopped), in the run's span; the
        outcome is written into the state (never raised). A cancelled run is left
        unfinished, for the engine to record. True once the run has ended here.

        ``cancel_scope()`` makes the scope the run is cancelled through. It is entered
        at the first block that needs an await, not before: until then nothing else
        runs, so nothing could cancel the run, and a run that ends without an await
        (the blocks run inline) does without one, which costs several microseconds.

        ``until`` (a ``time.perf_counter()`` reading; durable and untraced runs, see
        :attr:`can_detach`): the main path stops before the first block that needs an
        await of its own (its checkpoint apart), or before any block once that time has
        come, and False is returned; ``run()`` then goes on from that block, in a task of
        its own. So a caller about to wait for the run runs its blocks in its own task,
        and only a run still going then needs one.
        """
        span = self._span if self._span is not None else self._trace()
        self._until = until
        ended = True
        try:
            with span:  # current: a Call Flow child's span goes under its block's
                await self._run(cancel_scope)
        except _Detach:
            ended = False
        finally:
            self._until = None
            if ended:
                span.end(self.state)
                # the main path refers back here: left as it is, the pair (and the
                # state with it) would wait for the garbage collector, whose passes then
                # come every few dozen runs and cost more than the run's own bookkeeping
                del self.main
        return ended

    @property
    def can_detach(self) -> bool:
        """Whether :meth:`run` may stop for the run to go on in another task: a durable,
        untraced run (a traced one keeps to the task its span was made current in)."""
        return self.durable and self._span is not None and not self._span.current

    def _trace(self) -> RunTrace:
        """The run's span, and whether its blocks can run inline (see ``self.inline``)."""
        span = self._span = self.host.telemetry.start_run(self.state)
        self.tracer = span.tracer
        self.inline = not self.durable and self.tracer is None
        return span

    async def _run(self, cancel_scope: Callable[[], anyio.CancelScope]) -> None:
        state = self.state
        detached = False
        try:
            node = self._first() if isinstance(self._next, _Start) else self._next
            if node is not None:
                with cancel_scope() as scope:
                    await self.walk(node, self.main)
                if scope.cancelled_caught:
                    return  # left RUNNING: the engine records the cancellation
        except _Detach:
            detached = True  # it goes on from self._next
            raise
        except Exception as exc:
            self._outcome(exc)
        else:
            self._outcome(None)
        finally:
            if not (state.abandoned or detached):
                state.finished_at = time.time()

    def _first(self) -> _Node | None:
        """Mark the run started and run its first blocks that need no await: the block
        the run goes on from, or None when it has ended."""
        state = self.state
        state.status = _RUNNING
        if state.started_at is None:
            state.started_at = time.time()
        if self.inline:
            return self._run_inline(self.program.start, self.main)
        return self.program.start

    def _outcome(self, exc: Exception | None) -> None:
        """Write into the state how the run ended: ``exc`` is what left its main path
        (None when the path came to its end)."""
        state = self.state
        if exc is None:
            state.status = _COMPLETED
        elif isinstance(exc, Abandon):
            state.abandoned = True
        elif isinstance(exc, _Return):
            state.output = exc.value
            state.status = _COMPLETED
        elif isinstance(exc, BlockError):
            state.error = RunError.of(exc)
            state.status = _FAILED
            _forget_frames(exc)
        elif isinstance(exc, _StepLimit):
            limit = self.limits.max_steps
            message = f"the run exceeded its limit of {limit} block steps"
            state.error = RunError("step_limit", message, self.last_block)
            state.status = _FAILED
        elif isinstance(exc, _Break):
            state.error = RunError("break", "'break' outside a loop")
            state.status = _FAILED
        else:  # a bug in a block or here: the run fails, the engine lives
            self.logger.exception("run.internal_error", block=self.last_block, exc_info=exc)
            state.error = RunError("internal", _describe(exc))
            state.status = _FAILED
            _forget_frames(exc)

    @property
    def last_block(self) -> str | None:
        """The block the main path was at (where a fatal error stopped the run)."""
        return self.main.block_id or None

    async def walk(self, node: _Node | None, path: _Path) -> None:
        """Run one path from ``node`` until it ends (or a signal leaves it)."""
        if self.inline:
            node = self._run_inline(node, path)
            if node is None:
                return
        state = self.state
        trace = state.trace
        positions = state.positions
        key = path.key
        max_steps = self.limits.max_steps
        durable = self.durable
        step = self._step if self.tracer is None else self._traced_step
        fast = self.tracer is None  # plain blocks inline, without a span
        resumed_step: int | None = None
        if durable:
            node, resumed_step = self._resume_at(node, key)
        inline = self.inline
        until = self._until if not key else None  # see run: the main path may stop
        try:
            while node is not None:
                if until is not None and (not node.inline or _perf() > until):
                    self._next = node
                    raise _Detach
                if inline and node.inline and resumed_step is None:
                    node = self._run_inline(node, path)
                    if node is None:
                        break
                    if node.inline and state.steps < max_steps:  # a checkpoint is due
                        await self._inline_checkpoint()
                        continue
                if resumed_step is None:
                    steps = state.steps = state.steps + 1
                    if steps > max_steps:
                        raise _StepLimit
                    if not steps & 63:
                        await _checkpoint()
                else:  # the block this path was in when the run stopped, already counted
                    steps, resumed_step = resumed_step, None
                path.node = node
                path.step = steps
                if durable:
                    positions[key] = node.id
                    state.started[key] = steps
                if node.plain and fast:
                    start = _perf()
                    try:
                        if node.sync:
                            node.run(path, node.params)  # type: ignore[misc]
                        else:
                            await node.run(path, node.params)  # type: ignore[misc]
                    except BlockError as exc:
                        _fill(exc, node)
                        trace.append(((node.id, node.type, exc.code), start, _perf()))
                        node = self._handle(node, exc)
                    except _Signal:  # the host abandoning the run, say: not a block error
                        raise
                    except Exception as exc:
                        error = _wrap(exc, node)
                        trace.append(((node.id, node.type, error.code), start, _perf()))
                        node = self._handle(node, error)
                    except BaseException:
                        trace.append(((node.id, node.type, "cancelled"), start, _perf()))
                        raise
                    else:
                        trace.append((node.ok, start, _perf()))
                        node = node.next
                else:
                    try:
                        port = await step(node, path)
                    except BlockError as exc:
                        node = self._handle(node, exc)
                    else:
                        node = node.next if port is None else node.ports.get(port)
                if durable:
                    positions[key] = node.id if node is not None else None
                    state.started.pop(key, None)
                    await self.host.checkpoint(state)
        finally:
            positions.pop(key, None)
            state.started.pop(key, None)

    def _run_inline(self, node: _Node | None, path: _Path) -> _Node | None:
        """Run the path's blocks that need no await (``_Node.inline``) one after another,
        here, without an await; return the first block that needs one, or None where the
        path ended. In memory and untraced only (see ``self.inline``).

        Blocks run inline for at most about a millisecond between two cancellation
        checkpoints (``self.checked``, across paths): the block that would start later,
        or one over the step limit, is returned uncounted, and the caller takes the
        checkpoint (:meth:`_inline_checkpoint`) or counts it and fails. A checkpoint is
        an event-loop turn, some microseconds: taken by time, not every so many blocks,
        its cost stays a small share however cheap the blocks are, and so does how long
        a cancel request waits. Between two blocks one clock reading is both the end of
        the one and the start of the next, so an entry costs one reading and two appends
        to the slice's lists (:class:`Slice`), which goes into the trace on the way out;
        the entries stay in order and never overlap.
        """
        if node is None or not node.inline:
            return node
        state = self.state
        variables = state.vars
        update_vars = variables.update
        labels: list[Label | tuple[Label, ...]] = []  # this slice's entries (see Slice)
        add = labels.append
        # the step count is kept in a local while no other path can run, and written
        # back on the way out, however that is
        steps = state.steps
        stop = self.limits.max_steps
        deadline = self.checked + _INLINE_SLICE
        # the last block run, when it was a literal ``set``: those do not keep the path's
        # block and step up to date as they go (nothing reads them during a
        # ``dict.update``), so they are written once on the way out
        last: _Node | None = None
        start = _perf()
        times = [start]
        tick = times.append
        try:
            while node is not None and node.inline:
                if steps >= stop or start > deadline:
                    return node
                stretch = node.stretch
                if stretch is not None and steps + stretch.size <= stop:
                    # a stretch of literal ``set`` blocks: a loop turn, an assignment and
                    # a clock reading each; the deadline is looked at again after it (at
                    # most _STRETCH assignments, microseconds), the step limit before it
                    add(stretch.labels)
                    ticked = len(times)
                    try:
                        for name, value in stretch.pairs:
                            variables[name] = value
                            tick(_perf())
                    except BaseException:  # an interrupt: the block it came in is cancelled
                        done = len(times) - ticked
                        steps += done
                        if done < stretch.size:  # (else it came after the last block)
                            block, kind, _ = stretch.labels[done]
                            if done:
                                labels[-1] = stretch.labels[:done]
                            else:
                                labels.pop()
                            add((block, kind, "cancelled"))
                            tick(_perf())
                            steps += 1
                        raise
                    steps += stretch.size
                    start = times[-1]
                    last = stretch.last
                    node = last.next
                    continue
                steps += 1
                values = node.update
                if values is not None:  # a literal ``set``: the commonest block there is
                    try:
                        update_vars(values)
                    except BaseException:  # an interrupt, say (a try costs nothing)
                        add((node.id, node.type, "cancelled"))
                        tick(_perf())
                        raise
                    add(node.ok)
                    tick(start := _perf())
                    last = node
                    node = node.next
                    continue
                last = None
                path.node = node
                path.step = steps
                try:
                    if node.returns and not path.key:  # a ``return`` on the main path
                        state.output = _returned(node, path)
                        add(node.ok)
                        tick(_perf())
                        return None  # the path ends, and the run with it: no _Return
                    port = node.call(path)  # type: ignore[misc]
                except BlockError as exc:
                    _fill(exc, node)
                    add((node.id, node.type, exc.code))
                    tick(start := _perf())
                    node = self._handle(node, exc)
                    continue
                except _Signal:  # break or return: the block itself went as it should
                    add(node.ok)
                    tick(_perf())
                    raise
                except Exception as exc:
                    error = _wrap(exc, node)
                    add((node.id, node.type, error.code))
                    tick(start := _perf())
                    node = self._handle(node, error)
                    continue
                except BaseException:
                    add((node.id, node.type, "cancelled"))
                    tick(_perf())
                    raise
                if port is None:
                    add(node.ok)
                    node = node.next
                else:
                    add((node.id, node.type, node.labels.get(port, port)))
                    node = node.ports.get(port)
                tick(start := _perf())
            return node
        finally:
            if labels:
                state.trace.append(Slice(labels, times))
            state.steps = steps
            if last is not None:
                path.node = last
                path.step = steps

    async def _inline_checkpoint(self) -> None:
        """The cancellation checkpoint due after a slice of blocks run inline."""
        await _checkpoint()
        self.checked = _perf()

    def _resume_at(self, node: _Node | None, key: str) -> tuple[_Node | None, int | None]:
        """Where a path picks up: its checkpointed position, if the run is resuming, and
        the step at which the block there had started (its idempotency key's step)."""
        resume = self._resume
        step = None
        if key in resume:
            saved = resume.pop(key)
            node = self.program.nodes[saved] if saved is not None else None
            step = self.state.started.get(key)
        self.state.positions[key] = node.id if node is not None else None
        return node, step

    def _done(self, loop_key: str) -> list[int]:
        """The iterations (or branches) of a loop block already completed."""
        return self.state.loops.setdefault(loop_key, []) if self.durable else []

    def _resuming(self, sub_key: str) -> bool:
        return sub_key in self._resume

    def _handle(self, node: _Node, error: BlockError) -> _Node:
        """Send a failed block to its ``on_error`` block, or let the error rise."""
        handler = node.on_error
        if handler is None:
            raise error
        state = self.state
        state.vars["error"] = RunError.of(error).to_dict()
        state.has_errors = True
        self.logger.info("block.error_handled", block=node.id, code=error.code, handler=handler.id)
        return handler

    async def _traced_step(self, node: _Node, path: _Path) -> str | None:
        """:meth:`_step` in a ``flow.block`` span, current while the block runs (so a
        Call Flow child's run span goes under it); the outcome is the last attempt's."""
        attributes = {"flowwarden.block.id": node.id, "flowwarden.block.type": node.type}
        with self.tracer.start_as_current_span(
            "flow.block",
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,  # a return or break is not an error
        ) as span:
            outcome = "ok"
            try:
                port = await self._step(node, path)
            except BlockError as exc:
                from opentelemetry.trace import StatusCode

                outcome = exc.code
                span.set_status(StatusCode.ERROR, exc.code)
                raise
            except _StepLimit:
                outcome = "step_limit"
                raise
            except _Signal:
                raise
            except BaseException:
                outcome = "cancelled"
                raise
            else:
                if port:
                    outcome = node.labels.get(port, port)
                return port
            finally:
                span.set_attribute("flowwarden.block.outcome", outcome)

    async def _step(self, node: _Node, path: _Path) -> str | None:
        """One block with its timeout and retries; each attempt is a trace entry."""
        trace = self.state.trace
        retry = node.retry
        attempts = retry.max_attempts if retry is not None else 1
        delay = retry.backoff if retry is not None else 0.0
        attempt = 1
        while True:
            path.attempt = attempt
            start = _perf()
            try:
                if node.timeout is not None:
                    try:
                        with anyio.fail_after(node.timeout):
                            port = await node.execute(node, path)
                    except TimeoutError as exc:
                        message = f"block {node.id!r} timed out after {node.timeout:g} s"
                        raise BlockError("timeout", message, block=node.id) from exc
                else:
                    port = await node.execute(node, path)
            except BlockError as exc:
                _fill(exc, node)
                trace.append(((node.id, node.type, exc.code), start, _perf()))
                if attempt >= attempts:
                    raise
                self.logger.info("block.retry", block=node.id, attempt=attempt, code=exc.code)
                if delay > 0:
                    await anyio.sleep(delay)
                delay *= retry.multiplier if retry is not None else 1.0
                attempt += 1
                continue
            except _Signal as signal:
                outcome = "step_limit" if isinstance(signal, _StepLimit) else "ok"
                trace.append(((node.id, node.type, outcome), start, _perf()))
                raise
            except BaseException:
                trace.append(((node.id, node.type, "cancelled"), start, _perf()))
                raise
            finally:
                path.node = node
            outcome = node.labels.get(port, port) if port else "ok"
            trace.append(((node.id, node.type, outcome), start, _perf()))
            return port

    # -- structural blocks -------------------------------------------------------------

    async def _repeat(self, node: _Node, path: _Path) -> str | None:
        params = node.params
        limit = params.max_iterations or self.limits.max_iterations
        body = node.ports["body"]
        loop_key = f"{path.key}/{node.id}"
        done = self._done(loop_key)
        iteration = len(done) + 1
        try:
            while True:
                scope = {**path.scope, "iteration": iteration}
                sub_key = f"{loop_key}#{iteration}"
                if not self._resuming(sub_key):
                    holds = path.evaluate(params.while_, scope)
                    if not isinstance(holds, bool):
                        message = f"'while' must give a boolean, got {holds!r}"
                        raise BlockError("expression", message)
                    if not holds:
                        return None
                    if iteration > limit:
                        message = f"block {node.id!r} exceeded {limit} iterations"
                        raise BlockError("max_iterations", message, block=node.id)
                try:
                    await self.walk(body, _Path(self, scope, sub_key))
                except _Break:
                    return None
                finally:
                    path.node = node
                done.append(iteration)
                iteration += 1
        finally:
            self.state.loops.pop(loop_key, None)

    async def _for_each(self, node: _Node, path: _Path) -> str | None:
        params = node.params
        items = path.evaluate(params.items)
        if isinstance(items, dict):
            items = list(items)
        if not isinstance(items, list):
            raise BlockError("expression", f"'items' must give a list, got {type(items).__name__}")
        body = node.ports["body"]
        name = params.as_
        loop_key = f"{path.key}/{node.id}"
        done = self._done(loop_key)
        skip = set(done)
        try:
            if params.concurrency == 1:
                for index, item in enumerate(items):
                    if index in skip:
                        continue
                    scope = {**path.scope, name: item, "index": index}
                    try:
                        await self.walk(body, _Path(self, scope, f"{loop_key}#{index}"))
                    except _Break:
                        break
                    finally:
                        path.node = node
                    done.append(index)
                return None

            def paths() -> Iterator[tuple[_Node | None, _Path, int]]:
                for index, item in enumerate(items):
                    if index not in skip:
                        scope = {**path.scope, name: item, "index": index}
                        yield body, _Path(self, scope, f"{loop_key}#{index}"), index

            await self._together(paths(), done, params.concurrency, stop_on_break=True)
            path.node = node
            return None
        finally:
            self.state.loops.pop(loop_key, None)

    async def _parallel(self, node: _Node, path: _Path) -> str | None:
        loop_key = f"{path.key}/{node.id}"
        done = self._done(loop_key)
        skip = set(done)
        paths = [
            (start, _Path(self, path.scope, f"{loop_key}|{i}"), i)
            for i, start in enumerate(node.ports.values())
            if i not in skip
        ]
        try:
            await self._together(iter(paths), done, None, stop_on_break=False)
        finally:
            self.state.loops.pop(loop_key, None)
        path.node = node
        return None

    async def _together(
        self,
        paths: Iterator[tuple[_Node | None, _Path, int]],
        done: list[int],
        limit: int | None,
        *,
        stop_on_break: bool,
    ) -> None:
        """Run paths concurrently (at most ``limit`` at once: that many tasks take the
        paths in turn); each one that ends has its index added to ``done``; the first
        failure or signal cancels the others.

        A task is made only for a path that has to wait. Each path is first run here,
        in this task, as far as it goes without an await (:meth:`_run_inline`); one that
        ends there never becomes a task. One that reaches a block that must wait goes on
        from that block in a task of its own, and this loop lets that task run up to its
        first wait before it looks at the next path. So the paths run in the order, and
        as far, as they did with a task for each (which ran in turn until each waited):
        the same failure comes first, the step limit is reached at the same block, and
        a failure (or ``return``) stops the paths that had not begun, as cancelling
        their tasks did — here, by cancelling this loop at one of its awaits. The other
        await is the cancellation checkpoint due after a slice of blocks run inline.
        """
        first: list[BaseException] = []
        inline = self.inline
        max_steps = self.limits.max_steps

        async with anyio.create_task_group() as group:

            def stop(exc: BaseException) -> None:
                if not first:
                    first.append(exc)
                group.cancel_scope.cancel()

            async def worker(mine: Iterator[tuple[_Node | None, _Path, int]]) -> None:
                try:
                    for start, sub, index in mine:
                        await self.walk(start, sub)
                        done.append(index)
                except (BlockError, _Signal) as exc:
                    stop(exc)

            tasks = 0
            for start, sub, index in paths:
                try:
                    rest = start
                    if inline:  # (else each block is checkpointed, in the path's own task)
                        rest = self._run_inline(rest, sub)
                        while rest is not None and rest.inline and self.state.steps < max_steps:
                            await self._inline_checkpoint()  # others may run: see the docstring
                            rest = self._run_inline(rest, sub)
                except (BlockError, _Signal) as exc:
                    stop(exc)
                    break
                if rest is None:
                    done.append(index)
                    continue
                tasks += 1
                if limit is None:
                    group.start_soon(worker, iter(((rest, sub, index),)))
                else:  # this task goes on with the paths not yet begun, in turn
                    group.start_soon(worker, itertools.chain(((rest, sub, index),), paths))
                    if tasks == limit:
                        break  # the tasks take the rest
                await _checkpoint()  # the new task runs up to its first wait
        if first and not (stop_on_break and isinstance(first[0], _Break)):
            raise first[0]


async def _run_action(node: _Node, path: _Path) -> str | None:
    """An action block with a timeout or retry: it always goes on at ``next``."""
    try:
        outcome = node.run(path, node.params)  # type: ignore[misc]
        if node.sync is False:
            await outcome  # type: ignore[misc]
    except (BlockError, _Signal):
        raise
    except Exception as exc:
        raise _wrap(exc, node) from exc
    return None


def _forget_frames(exc: BaseException) -> None:
    """Drop the tracebacks of an error the run has ended on, and of the errors it came
    from. A frame a block error passed through often holds that same error in a local
    (a handler that raised it again), a cycle only the garbage collector would free,
    and with it the frames, the run's state and its interpreter."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        error = error.__cause__ or error.__context__


def _fill(error: BlockError, node: _Node) -> None:
    if error.block is None:
        error.block = node.id


def _wrap(exc: Exception, node: _Node) -> BlockError:
    """A custom block's own exception becomes a block error naming the block."""
    if isinstance(exc, BlockError):
        _fill(exc, node)
        return exc
    error = BlockError("error", f"block {node.id!r} ({node.type}) raised {_describe(exc)}")
    error.block = node.id
    error.__cause__ = exc
    return error


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _route_key(value: Any) -> str:
    """The string form a router matches: ``true``, ``1``, ``"a"`` → ``"a"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


# -- structural blocks that only choose a port: no await, so they can run inline --------


def _condition(node: _Node, path: _Path) -> str | None:
    value = path.evaluate(node.params.if_)
    if not isinstance(value, bool):
        raise BlockError("expression", f"'if' must give a boolean, got {value!r}")
    return "then" if value else "else"


def _router(node: _Node, path: _Path) -> str | None:
    key = _route_key(path.evaluate(node.params.value))
    return f"routes.{key}" if key in node.params.routes else "default"


def _break(node: _Node, path: _Path) -> str | None:
    raise _Break


def _return(node: _Node, path: _Path) -> str | None:
    raise _Return(_returned(node, path))


def _returned(node: _Node, path: _Path) -> Any:
    """The value a ``return`` block gives its run."""
    value = node.params.value
    return path.evaluate(value) if value is not None else None


_CHOOSE: dict[str, _Choose] = {
    "condition": _condition,
    "router": _router,
    "break": _break,
    "return": _return,
}


def _structural(name: str) -> _Execute:
    choose = _CHOOSE.get(name)
    if choose is not None:

        async def chosen(node: _Node, path: _Path) -> str | None:
            return choose(node, path)

        return chosen
    method = getattr(Interpreter, f"_{name}")

    async def execute(node: _Node, path: _Path) -> str | None:
        port: str | None = await method(path.interpreter, node, path)
        return port

    return execute


_STRUCTURAL: dict[str, _Execute] = {
    name: _structural(name)
    for name in ("condition", "router", "repeat", "for_each", "parallel", "break", "return")
}
