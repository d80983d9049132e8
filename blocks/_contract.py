"""The block contract: what a block is handed, what it returns, how it is registered.

A block is ``async def run(ctx, params) -> port``: ``params`` is the block's frozen
pydantic parameter model, ``ctx`` a :class:`BlockContext` onto the run it belongs to, and
the returned port (``None`` for the ordinary ``next``) names where the path goes on. A
block keeps no run state of its own: everything that changes lives behind ``ctx``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Literal,
    NamedTuple,
    Protocol,
    TypeVar,
    runtime_checkable,
)

from pydantic import BaseModel, ConfigDict

from ._values import Expression, Template

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ENTRY_POINT_GROUP",
    "BlockContext",
    "BlockDefinition",
    "BlockError",
    "BlockFunction",
    "Params",
    "Port",
    "RunInfo",
    "block",
]

ENTRY_POINT_GROUP = "flowwarden.blocks"


PortRole = Literal["path", "body", "branch"]


class Port(NamedTuple):
    """A way out of a block besides ``next`` and ``on_error``.

    ``field`` names it in documents and problems (``then``, ``routes.a``,
    ``branches[0]``) and is unique within the block; ``label`` is what traces and graphs
    call it (``then``, ``a``, ``default``, ``body``); ``role`` says what starts there:
    the rest of the path (``path``), a loop body (``body``) or a parallel branch
    (``branch``). ``target`` is a block id, or None where the path ends.
    """

    field: str
    label: str
    target: str | None
    role: PortRole


PortShape = Literal["one", "map", "list"]


class Params(BaseModel):
    """Base of every block's parameter model: frozen, and unknown fields are errors.

    A block type with ports declares them once in ``PORTS`` as ``(field, shape, role)``:
    the field holds one block id (``one``), a mapping of labels to ids (``map``) or a
    list of ids (``list``). Validation, the interpreter, traces and graphs all read a
    block's topology from :meth:`ports`.
    """

    # built on first use: a command builds the validators of the block types its
    # documents use, not those of the whole palette at import
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True)

    PORTS: ClassVar[tuple[tuple[str, PortShape, PortRole], ...]] = ()

    def ports(self) -> tuple[Port, ...]:
        """This block's ports, in the order they are declared."""
        fields = type(self).model_fields
        attribute = {(info.alias or name): name for name, info in fields.items()}
        return _ports(type(self).PORTS, lambda name: getattr(self, attribute[name]))

    @classmethod
    def raw_ports(cls, raw: Mapping[str, Any]) -> tuple[Port, ...]:
        """The ports a block's raw fields name, read even when they do not validate
        (values that are not block ids are left out)."""
        return _ports(cls.PORTS, raw.get)


def _ports(
    declared: Iterable[tuple[str, PortShape, PortRole]], read: Callable[[str], Any]
) -> tuple[Port, ...]:
    found: list[Port] = []
    for name, shape, role in declared:
        value = read(name)
        if shape == "one":
            if value is None or isinstance(value, str):
                found.append(Port(name, name, value, role))
        elif shape == "map" and isinstance(value, Mapping):
            found.extend(
                Port(f"{name}.{key}", str(key), target, role)
                for key, target in value.items()
                if isinstance(target, str)
            )
        elif shape == "list" and isinstance(value, list):
            found.extend(
                Port(f"{name}[{i}]", f"{name}[{i}]", target, role)
                for i, target in enumerate(value)
                if isinstance(target, str)
            )
    return tuple(found)


class BlockError(Exception):
    """A block failed. ``code`` is what ``on_error`` handlers and callers branch on."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        block: str | None = None,
        child_run_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.block = block
        self.child_run_id = child_run_id

    def as_dict(self) -> dict[str, Any]:
        """The error object a run records and ``vars.error`` holds."""
        error: dict[str, Any] = {"code": self.code, "message": self.message, "block": self.block}
        if self.child_run_id is not None:
            error["child_run_id"] = self.child_run_id
        return error

    def __repr__(self) -> str:
        return f"BlockError(code={self.code!r}, message={self.message!r}, block={self.block!r})"


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What a block may know about its run; also the ``run`` name in expressions."""

    id: str
    flow: str
    version: int
    depth: int
    user_id: str | None
    roles: tuple[str, ...]


@runtime_checkable
class BlockContext(Protocol):
    """The run as a block sees it. The engine provides the implementation."""

    @property
    def block_id(self) -> str:
        """The id of the block being run."""
        ...

    @property
    def run(self) -> RunInfo:
        """The run the block belongs to."""
        ...

    @property
    def vars(self) -> dict[str, Any]:
        """The run variables, shared by every branch of the run."""
        ...

    @property
    def attempt(self) -> int:
        """1 for the first attempt, 2 for the first retry, …"""
        ...

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and resumption of this block step in this run."""
        ...

    @property
    def http(self) -> httpx.AsyncClient:
        """The engine's shared HTTP client."""
        ...

    def evaluate(self, value: Template | Expression) -> Any:
        """Evaluate a template or expression in the block's scope (BlockError on failure)."""
        ...

    def log(self, level: str, message: str, **fields: Any) -> None:
        """Write an event into the run's log."""
        ...

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
        """Activate a child flow through the engine's gate under the run's identity."""
        ...


P = TypeVar("P", bound=Params)
BlockFunction = Callable[[BlockContext, Any], Awaitable[str | None] | str | None]
BoundBlock = Callable[[BlockContext], None]
Kind = Literal["action", "structural"]


@dataclass(frozen=True, slots=True)
class BlockDefinition:
    """A block type: its name, its parameter model and, for action blocks, ``run``.

    Structural blocks (condition, loops, parallel, break, return) are carried out by the
    interpreter itself; their definitions exist so documents are validated uniformly.

    ``bind``, optional, is for a quick block whose ``run`` is a plain function: given
    one block's parameters it returns ``run`` with them bound, a function of the
    context alone that does what ``run(ctx, params)`` does. The engine calls it once
    per block when a version is compiled, so work that depends only on the parameters
    is done once, not at every step (``set`` with literal values).
    """

    name: str
    params: type[Params]
    run: BlockFunction | None = None
    kind: Kind = "action"
    ports: tuple[str, ...] = ()
    description: str = ""
    bind: Callable[[Any], BoundBlock] | None = None


def block(
    name: str, *, params: type[P], description: str = ""
) -> Callable[[Callable[[BlockContext, P], Any]], BlockDefinition]:
    """Declare a custom block from an ``async def run(ctx, params)`` function, or from a
    class whose instances have ``async def run(self, ctx, params)``. An action block
    goes on at its ``next``; what ``run`` returns is ignored. A plain (not async)
    function is called without an await: right for quick blocks that never wait.

    The result is a :class:`BlockDefinition` to hand to :class:`BlockRegistry`::

        class Greet(Params):
            name: str

        @block("greet", params=Greet)
        async def greet(ctx: BlockContext, params: Greet) -> None:
            ctx.vars["greeting"] = f"hello {params.name}"
    """

    def decorate(function: Callable[[BlockContext, P], Any]) -> BlockDefinition:
        target: Any = function
        if isinstance(target, type):
            target = target()  # a class with an async ``run(self, ctx, params)``
        run = getattr(target, "run", None) if not inspect.isfunction(target) else target
        if run is None or not callable(run):
            raise TypeError(f"block {name!r}: expected a function or a class with a 'run'")
        doc = description or (function.__doc__ or "").strip()
        return BlockDefinition(name=name, params=params, run=run, description=doc)

    return decorate
