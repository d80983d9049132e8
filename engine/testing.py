"""Helpers for testing flows and blocks: log capture and a scriptable fake block.

``capture_logs`` is structlog's own (a context manager yielding the list of events)::

    with capture_logs() as events:
        await engine.call_flow("order-approval", {"amount": 5})
    assert any(e["event"] == "activation.allowed" for e in events)

:class:`FakeBlock` stands in for a block with outside effects (a payment, an e-mail)::

    fake = FakeBlock("charge", failures=2, code="declined")
    async with Engine(registry=BlockRegistry([fake.definition])) as engine:
        ...
    assert len(fake.calls) == 3

:class:`HoldBlock` parks a path until the test releases it, to catch a run mid-flight
without sleeping::

    hold = HoldBlock()
    run_id = await engine.call_flow("waits-on-hold", wait=False)
    await hold.reached.wait()      # the run is inside the hold block now
    hold.release.set()

:func:`deploy` adds a document (or just its blocks), checks it is valid and makes it
LIVE, in one line::

    await deploy(engine, {"hello": {"type": "return", "value": "hi"}}, flow="greet")
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from structlog.testing import capture_logs

from blocks import BlockContext, BlockDefinition, BlockError, Params, Template

if TYPE_CHECKING:
    from ._runtime.engine import Engine

__all__ = ["FakeBlock", "FakeCall", "FakeParams", "HoldBlock", "capture_logs", "deploy"]


async def deploy(
    engine: Engine,
    document: Mapping[str, Any],
    *,
    flow: str | None = None,
    **extra: Any,
) -> int:
    """Add a version, assert it is valid (READY, no problems) and start it; its number.

    ``document`` is a whole flow document, or only its ``blocks`` when ``flow`` names
    the flow: the first block is then the start, and ``extra`` adds top-level fields
    (``inputs``, ``callable_by`` …).
    """
    if flow is not None:
        document = {"flow": flow, "start": next(iter(document)), "blocks": dict(document)}
    document = {**document, **extra}
    version = await engine.add_version(document)
    info = await engine.get_version(document["flow"], version)
    assert info.problems == (), info.problems
    await engine.start(info.flow, version)
    return version


class FakeParams(Params):
    """``value`` is evaluated like any value field and recorded; ``result`` receives it."""

    value: Template | None = None
    result: str | None = None


@dataclass(frozen=True, slots=True)
class FakeCall:
    """One call of a fake block: the run, the block, the attempt and the evaluated value."""

    run_id: str
    block: str
    attempt: int
    value: Any


@dataclass
class FakeBlock:
    """A block type named ``name`` that records its calls.

    The first ``failures`` calls fail with ``code``; each call first sleeps ``delay``
    seconds (cancellable), so timeouts and cancellation can be exercised.
    """

    name: str
    failures: int = 0
    code: str = "fake"
    delay: float = 0.0
    calls: list[FakeCall] = field(default_factory=list)

    @property
    def definition(self) -> BlockDefinition:
        return BlockDefinition(self.name, FakeParams, self._run, description="a fake block")

    async def _run(self, ctx: BlockContext, params: FakeParams) -> None:
        value = ctx.evaluate(params.value) if params.value is not None else None
        self.calls.append(FakeCall(ctx.run.id, ctx.block_id, ctx.attempt, value))
        if self.delay:
            await anyio.sleep(self.delay)
        if len(self.calls) <= self.failures:
            raise BlockError(self.code, f"fake failure {len(self.calls)} of {self.failures}")
        if params.result is not None:
            ctx.vars[params.result] = value


class HoldParams(Params):
    """A hold block takes no parameters."""


@dataclass
class HoldBlock:
    """A block type named ``name`` that parks its path until ``release`` is set,
    recording the runs that reached it (``reached`` is set when the first one does)."""

    name: str = "hold"
    reached: anyio.Event = field(default_factory=anyio.Event)
    release: anyio.Event = field(default_factory=anyio.Event)
    run_ids: list[str] = field(default_factory=list)

    @property
    def definition(self) -> BlockDefinition:
        return BlockDefinition(self.name, HoldParams, self._run, description="a hold block")

    async def _run(self, ctx: BlockContext, params: HoldParams) -> None:
        self.run_ids.append(ctx.run.id)
        self.reached.set()
        await self.release.wait()
