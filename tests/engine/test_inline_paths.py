"""Paths run inline: blocks that need no await, and parallel branches or loop iterations
that end without one, run in the task of the block that started them.

Each flow mixes branches that block (``wait``) with branches that never do, and is run
twice: with the plain in-memory store, where the inline paths are taken, and with a
durable in-memory store, where every block is checkpointed and so every branch still
gets a task of its own (the way all runs went before). What the run ends with, and
which blocks ran with which outcome, must be the same.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from engine import Engine, Limits, RunResult, RunStatus
from engine._model.records import RunHeader
from engine._model.types import Trace
from engine._runtime import interpreter as interpreter_module
from engine._runtime.interpreter import Interpreter, RunState, entries
from engine._runtime.runs import _StateTrace
from engine._store.memory import MemoryStore
from engine.testing import deploy
from permissions import ANONYMOUS

SLOW = {"type": "wait", "seconds": 10}


async def run_both(
    blocks: Mapping[str, Any], *, limits: Limits | None = None
) -> tuple[RunResult, RunResult]:
    """The flow's result with inline paths (plain memory store), then without (durable)."""
    results = []
    for store in (MemoryStore(), MemoryStore(durable=True)):
        async with Engine(store, limits=limits) as engine:
            await deploy(engine, blocks, flow="mixed")
            with anyio.fail_after(5):
                results.append(await engine.call_flow("mixed"))
    inline, tasks = results
    return inline, tasks


def ended(result: RunResult) -> tuple[Any, ...]:
    error = result.error
    return (
        result.status,
        result.output,
        (error.code, error.message, error.block) if error is not None else None,
    )


def ran(result: RunResult) -> Counter[tuple[str, str]]:
    """Every (block, outcome) the trace holds, however the branches interleaved."""
    return Counter((entry.block, entry.outcome) for entry in result.trace)


async def cancelled_while_running(blocks: Mapping[str, Any]) -> tuple[RunResult, float]:
    """The result of a run of ``blocks`` cancelled 0.2 s after it started (no step
    limit to stop it first), and the seconds from the cancel request to its end."""
    async with Engine(limits=Limits(max_steps=10**9)) as engine:
        await deploy(engine, blocks, flow="running")
        run_id = await engine.call_flow("running", wait=False)
        await anyio.sleep(0.2)
        began = time.monotonic()
        await engine.cancel(run_id)
        with anyio.fail_after(5):
            result = await engine.wait_for(run_id)
        return result, time.monotonic() - began


def same(inline: RunResult, tasks: RunResult) -> None:
    assert ended(inline) == ended(tasks)
    assert ran(inline) == ran(tasks)


async def test_a_failing_branch_that_never_waits_cancels_the_waiting_ones() -> None:
    inline, tasks = await run_both(
        {
            "par": {"type": "parallel", "branches": ["slow", "quick", "bad", "later"]},
            "slow": {**SLOW, "next": "after_slow"},
            "after_slow": {"type": "set", "values": {"late": True}},
            "quick": {"type": "set", "values": {"quick": True}},
            "bad": {"type": "fail", "code": "broken", "message": "branch broke"},
            "later": {"type": "set", "values": {"later": True}},
        }
    )

    same(inline, tasks)
    assert ended(inline)[0] is RunStatus.FAILED
    assert ran(inline) == Counter(
        {("par", "broken"): 1, ("slow", "cancelled"): 1, ("quick", "ok"): 1, ("bad", "broken"): 1}
    )


async def test_a_branch_failing_after_a_wait_fails_after_the_inline_ones_ended() -> None:
    inline, tasks = await run_both(
        {
            "par": {"type": "parallel", "branches": ["a", "pause", "b"], "next": "never"},
            "a": {"type": "set", "values": {"a": True}},
            "pause": {"type": "wait", "seconds": 0.05, "next": "bad"},
            "bad": {"type": "fail", "code": "late_failure"},
            "b": {"type": "set", "values": {"b": True}},
            "never": {"type": "set", "values": {"never": True}},
        }
    )

    same(inline, tasks)
    assert inline.error is not None and inline.error.code == "late_failure"
    assert ran(inline)[("a", "ok")] == ran(inline)[("b", "ok")] == 1
    assert ("never", "ok") not in ran(inline)


async def test_return_in_a_branch_that_never_waits_cancels_the_rest() -> None:
    inline, tasks = await run_both(
        {
            "par": {"type": "parallel", "branches": ["slow", "first", "quick", "last"]},
            "slow": {**SLOW, "next": "after_slow"},
            "after_slow": {"type": "set", "values": {"late": True}},
            "first": {"type": "set", "values": {"first": True}},
            "quick": {"type": "return", "value": "=vars"},
            "last": {"type": "set", "values": {"last": True}},
        }
    )

    same(inline, tasks)
    assert inline.status is RunStatus.COMPLETED
    assert inline.output == {"first": True}
    assert ran(inline)[("slow", "cancelled")] == 1
    assert ("last", "ok") not in ran(inline)


async def test_a_parallel_timeout_keeps_what_inline_branches_did() -> None:
    started = time.monotonic()
    inline, tasks = await run_both(
        {
            "par": {
                "type": "parallel",
                "branches": ["quick", "slow", "check"],
                "timeout": 0.2,
                "on_error": "handled",
            },
            "quick": {"type": "set", "values": {"quick": True}},
            "slow": SLOW,
            "check": {"type": "condition", "if": "vars.quick", "then": "mark"},
            "mark": {"type": "set", "values": {"checked": True}},
            "handled": {"type": "return", "value": ["=vars.error.code", "=vars"]},
        }
    )

    same(inline, tasks)
    assert time.monotonic() - started < 5
    code, variables = inline.output
    assert code == "timeout"
    assert (variables["quick"], variables["checked"]) == (True, True)
    assert ran(inline)[("slow", "cancelled")] == 1
    assert ran(inline)[("check", "then")] == 1


async def test_for_each_with_concurrency_mixes_inline_and_waiting_iterations() -> None:
    inline, tasks = await run_both(
        {
            "loop": {
                "type": "for_each",
                "items": "[0, 1, 2, 3, 4, 5, 6, 7]",
                "body": "which",
                "concurrency": 2,
                "next": "done",
            },
            "which": {"type": "condition", "if": "item % 3 == 0", "then": "pause", "else": "mark"},
            "pause": {"type": "wait", "seconds": 0.02, "next": "mark"},
            "mark": {"type": "set", "values": {"last": "=item"}},
            "done": {"type": "return", "value": "done"},
        }
    )

    same(inline, tasks)
    assert inline.output == "done"
    assert ran(inline)[("mark", "ok")] == 8
    waits = sorted((e.start, e.start + e.duration) for e in inline.trace if e.block == "pause")
    assert len(waits) == 3


async def test_break_in_an_inline_iteration_stops_the_waiting_ones() -> None:
    inline, tasks = await run_both(
        {
            "loop": {
                "type": "for_each",
                "items": "[0, 1, 2, 3]",
                "body": "which",
                "concurrency": 3,
                "next": "done",
            },
            "which": {"type": "condition", "if": "item == 1", "then": "stop", "else": "slow"},
            "stop": {"type": "break"},
            "slow": SLOW,
            "done": {"type": "return", "value": "left"},
        }
    )

    same(inline, tasks)
    assert inline.output == "left"
    assert ran(inline)[("slow", "cancelled")] == 1
    assert ("slow", "ok") not in ran(inline)


async def test_the_step_limit_counts_inline_branches() -> None:
    branches = [f"b{i}" for i in range(40)]
    blocks: dict[str, Any] = {"par": {"type": "parallel", "branches": ["slow", *branches]}}
    blocks["slow"] = SLOW
    blocks.update({name: {"type": "set", "values": {name: True}} for name in branches})

    inline, tasks = await run_both(blocks, limits=Limits(max_steps=20))

    same(inline, tasks)
    assert inline.error is not None and inline.error.code == "step_limit"
    assert len(inline.trace) == len(tasks.trace)


@pytest.mark.parametrize("branches", [1, 200])
async def test_cancelling_a_run_stops_branches_that_never_wait(branches: int) -> None:
    """Inline branches that loop forever still reach a cancellation checkpoint."""
    names = [f"spin{i}" for i in range(branches)]
    blocks: dict[str, Any] = {"par": {"type": "parallel", "branches": ["slow", *names]}}
    blocks["slow"] = SLOW
    for name in names:
        blocks[name] = {
            "type": "repeat",
            "while": "true",
            "body": f"{name}_body",
            "max_iterations": 10**6,
        }
        blocks[f"{name}_body"] = {"type": "set", "values": {name: "=iteration"}}
    result, took = await cancelled_while_running(blocks)

    assert took < 5
    assert result.status is RunStatus.CANCELLED
    assert ran(result)[("slow", "cancelled")] == 1
    assert len(result.trace) > 100


@pytest.fixture
def one_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inline blocks run in slices of at most a millisecond, with a turn of the event
    loop between two: the block after that turn starts after it, a real gap in the
    trace. A test of how entries follow each other inside a slice runs its flow in one,
    whatever the machine does meanwhile."""
    monkeypatch.setattr(interpreter_module, "_INLINE_SLICE", 60.0)


@pytest.mark.usefixtures("one_slice")
async def test_blocks_run_inline_trace_like_blocks_run_one_by_one() -> None:
    """Literal sets, a failing block sent to its handler, a condition and a router: the
    same entries in the same order, each starting where the one before ended."""
    blocks = {
        "a": {"type": "set", "values": {"x": 1}, "next": "b"},
        "b": {"type": "set", "values": {"y": "=vars.missing"}, "on_error": "c"},
        "c": {"type": "set", "values": {"z": 2}, "next": "d"},
        "d": {"type": "condition", "if": "vars.x == 1", "then": "e", "else": "a"},
        "e": {"type": "router", "value": "vars.z", "routes": {"2": "f"}, "default": "a"},
        "f": {"type": "return", "value": {"x": "=vars.x", "z": "=vars.z"}},
    }
    inline, tasks = await run_both(blocks)

    same(inline, tasks)
    assert [(e.block, e.type, e.outcome) for e in inline.trace] == [
        (e.block, e.type, e.outcome) for e in tasks.trace
    ]
    assert [entry.block for entry in inline.trace] == ["a", "b", "c", "d", "e", "f"]
    assert inline.trace[1].outcome == "expression"
    assert inline.trace[-1] == inline.trace[5] and inline.trace[0:2] == list(inline.trace)[:2]
    for before, after in zip(inline.trace, inline.trace[1:], strict=False):
        assert before.duration >= 0
        assert after.start == pytest.approx(before.start + before.duration, abs=1e-6)
    assert inline.output == {"x": 1, "z": 2}


def literal_chain(count: int, *, loop: bool = False) -> dict[str, Any]:
    """``count`` literal sets of one variable each, b0 → b1 → …, the last one going
    back to b0 when ``loop``; each sets ``x`` to its index and its own ``v<index>``
    every other block (a chain the inline loop runs in stretches, broken where a
    block sets two variables)."""
    blocks: dict[str, Any] = {}
    for i in range(count):
        values: dict[str, Any] = {"x": i} if i % 7 else {"x": i, f"v{i}": i}
        block: dict[str, Any] = {"type": "set", "values": values}
        if i + 1 < count:
            block["next"] = f"b{i + 1}"
        elif loop:
            block["next"] = "b0"
        blocks[f"b{i}"] = block
    return blocks


@pytest.mark.usefixtures("one_slice")
async def test_a_chain_of_literal_sets_traces_every_block_in_order() -> None:
    """Entered at its start and again in its middle (through a condition), a chain of
    literal sets sets what each block says and traces each block once, in order, each
    entry starting where the one before ended."""
    blocks = literal_chain(200)
    blocks["b199"]["next"] = "again"
    again = {"type": "condition", "if": "!('seen' in vars)", "then": "mid", "else": "end"}
    blocks["again"] = again
    blocks["mid"] = {"type": "set", "values": {"seen": True}, "next": "b101"}
    blocks["end"] = {"type": "return", "value": "=vars"}
    blocks = {"b0": blocks.pop("b0"), **blocks}  # b0 first: the flow's start

    inline, tasks = await run_both(blocks)

    same(inline, tasks)
    order = [*(f"b{i}" for i in range(200)), "again", "mid"]
    order += [*(f"b{i}" for i in range(101, 200)), "again", "end"]
    assert [entry.block for entry in inline.trace] == order
    assert [(e.block, e.outcome) for e in inline.trace] == [
        (e.block, e.outcome) for e in tasks.trace
    ]
    assert inline.output == tasks.output
    assert inline.output["x"] == 199
    assert inline.output["v7"] == 7 and inline.output["v196"] == 196
    for before, after in zip(inline.trace, inline.trace[1:], strict=False):
        assert before.duration >= 0
        assert after.start == pytest.approx(before.start + before.duration, abs=1e-6)


async def test_a_chain_cut_into_slices_traces_each_block_once_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a clock that moves 0.3 ms a reading, slices of a millisecond end every few
    readings and the chain goes on after a turn of the event loop each time: every
    block traced once, in order, none starting before the one before ended, and a gap
    where a slice ended."""
    now = [time.perf_counter()]

    def slow_clock() -> float:
        now[0] += 0.0003
        return now[0]

    monkeypatch.setattr(interpreter_module, "_perf", slow_clock)
    inline, tasks = await run_both(literal_chain(200))

    same(inline, tasks)
    assert [entry.block for entry in inline.trace] == [f"b{i}" for i in range(200)]
    gaps = 0
    for before, after in zip(inline.trace, inline.trace[1:], strict=False):
        ended = before.start + before.duration
        assert after.start >= ended - 1e-9
        gaps += after.start > ended + 1e-9
    assert gaps > 10  # the chain ran in many slices


@pytest.mark.parametrize("max_steps", [1, 63, 64, 65, 130])
async def test_the_step_limit_stops_a_chain_of_literal_sets_at_its_block(max_steps: int) -> None:
    inline, tasks = await run_both(literal_chain(300), limits=Limits(max_steps=max_steps))

    same(inline, tasks)
    assert inline.error is not None and inline.error.code == "step_limit"
    assert inline.error.block == tasks.error.block == f"b{max_steps - 1}"  # type: ignore[union-attr]
    assert len(inline.trace) == len(tasks.trace) == max_steps


async def test_cancelling_a_run_stops_a_cycle_of_literal_sets() -> None:
    result, took = await cancelled_while_running(literal_chain(100, loop=True))

    assert took < 5
    assert result.status is RunStatus.CANCELLED
    blocks = [entry.block for entry in result.trace]
    assert len(blocks) > 1000
    assert blocks[:250] == [f"b{i % 100}" for i in range(250)]


@pytest.mark.parametrize("handled", [False, True])
async def test_a_return_on_the_main_path_ends_the_run_like_one_run_block_by_block(
    handled: bool,
) -> None:
    """Its value, its failure (handled or not) and its trace entry, as on the general path."""
    blocks: dict[str, Any] = {
        "a": {"type": "set", "values": {"x": 1}, "next": "b"},
        "b": {"type": "return", "value": {"x": "=vars.x", "y": "=vars.missing"}},
    }
    if handled:
        blocks["b"]["on_error"] = "c"
        blocks["c"] = {"type": "return", "value": "=vars.x + 1"}
    inline, tasks = await run_both(blocks)

    same(inline, tasks)
    assert [(e.block, e.outcome) for e in inline.trace] == [
        (e.block, e.outcome) for e in tasks.trace
    ]
    if handled:
        assert inline.status is RunStatus.COMPLETED and inline.output == 2
    else:
        assert inline.status is RunStatus.FAILED and inline.error is not None
        assert inline.error.block == "b"
    plain = {"a": {"type": "set", "values": {"x": 1}, "next": "d"}, "d": {"type": "return"}}
    inline, tasks = await run_both(plain)
    same(inline, tasks)
    assert inline.status is RunStatus.COMPLETED and inline.output is None


@pytest.mark.parametrize("at", [0, 1, 5, 9])
async def test_an_interrupt_inside_a_stretch_cancels_the_block_it_came_in(
    at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupt (here raised by the clock reading that ends block ``at``) leaves
    the blocks before it traced as done, that one as cancelled, and the steps counted."""
    blocks = {f"b{i}": {"type": "set", "values": {"x": i}, "next": f"b{i + 1}"} for i in range(10)}
    del blocks["b9"]["next"]
    async with Engine() as engine:
        version = await deploy(engine, blocks, flow="chain")
        program = await engine.program("chain", version)
        assert program.start.stretch is not None and program.start.stretch.size == 10
        header = RunHeader("r" * 24, "chain", version, ANONYMOUS, None)
        state = RunState(header, status=RunStatus.RUNNING)
        interpreter = Interpreter(program, state, engine)
        readings = 0
        clock = interpreter_module._perf

        def interrupting() -> float:
            nonlocal readings
            readings += 1
            if readings == at + 2:  # the slice's start, then one reading a block
                raise KeyboardInterrupt
            return clock()

        monkeypatch.setattr(interpreter_module, "_perf", interrupting)
        with pytest.raises(KeyboardInterrupt):
            interpreter._run_inline(program.start, interpreter.main)

    traced = [(block, outcome) for (block, _, outcome), _, _ in entries(state.trace)]
    assert traced == [(f"b{i}", "ok") for i in range(at)] + [(f"b{at}", "cancelled")]
    assert state.steps == at + 1


async def test_an_answers_trace_holds_each_entrys_own_json_object() -> None:
    """``RunResult.to_json`` writes the trace from the recorded entries without making
    a ``TraceEntry`` of each: the same objects as each entry's ``to_dict``, for a trace
    recorded in slices and spread on reading (a run's own result) and for one read
    back from the run's record (a durable store's)."""
    results = []
    for store in (MemoryStore(), MemoryStore(durable=True)):
        async with Engine(store) as engine:
            await deploy(engine, literal_chain(40), flow="mixed")
            with anyio.fail_after(5):
                result = await engine.call_flow("mixed")
            results += [result, await engine.get_run(result.run_id)]
    assert {type(result.trace) for result in results} == {_StateTrace, Trace}
    for result in results:
        assert len(result.trace) == 40
        assert result.to_json()["trace"] == [entry.to_dict() for entry in result.trace]
    shifted = Trace([("a", "set", 1.0, 0.5, "ok"), ("b", "return", 1.5, 0.25, "ok")], 10.0)
    assert shifted.dicts() == [entry.to_dict() for entry in shifted]
    assert shifted.dicts()[1]["start"] == 11.5
