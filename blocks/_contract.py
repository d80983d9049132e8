"""The block contract: what a block is handed, what it returns, how it is registered.

A block is ``async def run(ctx, params) -> port``: ``params`` is the block's frozen
pydantic parameter model, ``ctx`` a :class:`BlockContext` onto the run it belongs to, and
the returned port (``None`` for the ordinary ``next``) names where the path goes on. A
block keeps no run state of its own: everything that changes lives behind ``ctx``.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict

from ._values import Expression, Template

__all__ = [
    "ENTRY_POINT_GROUP",
    "BlockContext",
    "BlockDefinition",
    "BlockError",
    "BlockFunction",
    "BlockRegistry",
    "Params",
    "RunInfo",
    "block",
]

ENTRY_POINT_GROUP = "flowwarden.blocks"


class Params(BaseModel):
    """Base of every block's parameter model: frozen, and unknown fields are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


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
Kind = Literal["action", "structural"]


@dataclass(frozen=True, slots=True)
class BlockDefinition:
    """A block type: its name, its parameter model and, for action blocks, ``run``.

    Structural blocks (condition, loops, parallel, break, return) are carried out by the
    interpreter itself; their definitions exist so documents are validated uniformly.
    """

    name: str
    params: type[Params]
    run: BlockFunction | None = None
    kind: Kind = "action"
    ports: tuple[str, ...] = ()
    description: str = ""


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


class BlockRegistry:
    """The block types a document may use, by name. Built-ins are always included.

    Registries are values handed to ``Engine(registry=...)``; nothing is global.
    """

    def __init__(self, definitions: Iterable[BlockDefinition] = (), *, builtins: bool = True):
        from ._builtins import BUILTINS

        self._definitions: dict[str, BlockDefinition] = {}
        for definition in (*(BUILTINS if builtins else ()), *definitions):
            self._add(definition)

    def _add(self, definition: BlockDefinition) -> None:
        if not isinstance(definition, BlockDefinition):
            raise TypeError(f"not a block definition: {definition!r}")
        if definition.name in self._definitions:
            raise ValueError(f"block type {definition.name!r} is registered twice")
        if definition.kind == "action" and definition.run is None:
            raise ValueError(f"block type {definition.name!r} has no run function")
        self._definitions[definition.name] = definition

    @classmethod
    def from_entry_points(cls, extra: Iterable[BlockDefinition] = ()) -> BlockRegistry:
        """Built-ins, the blocks packages publish under ``flowwarden.blocks``, and ``extra``."""
        found: list[BlockDefinition] = []
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            loaded = entry.load()
            found.extend(loaded if isinstance(loaded, list | tuple) else [loaded])
        return cls([*found, *extra])

    def with_blocks(self, *definitions: BlockDefinition) -> BlockRegistry:
        """A new registry holding this one's blocks and ``definitions``."""
        return BlockRegistry([*self._definitions.values(), *definitions], builtins=False)

    def get(self, name: str) -> BlockDefinition | None:
        return self._definitions.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._definitions

    def __iter__(self) -> Iterator[str]:
        return iter(self._definitions)

    def __len__(self) -> int:
        return len(self._definitions)

    @property
    def definitions(self) -> Mapping[str, BlockDefinition]:
        return dict(self._definitions)
