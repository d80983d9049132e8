"""``Engine.start_flow``: a run whose caller waits for it next begins in the caller's task.

Its blocks up to the first that needs an await run before ``start_flow`` returns. A run
that ends so comes back as its result, the same as ``call_flow`` gives when it waits;
a run that must wait for something comes back as its id and goes on in a task of its
own, which outlives the caller. With a durable store, or when nobody runs runs here,
nothing runs in the caller's task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import Engine, Limits, RunResult, RunStatus
from engine._store.memory import MemoryStore
from engine.testing import deploy

PURE = {
    "first": {"type": "set", "values": {"x": "=inputs.n + 1"}, "next": "second"},
    "second": {"type": "set", "values": {"y": 2}, "next": "done"},
    "done": {"type": "return", "value": {"x": "=vars.x", "y": "=vars.y"}},
}
WAITS = {
    "first": {"type": "set", "values": {"x": 1}, "next": "hold"},
    "hold": {"type": "wait", "seconds": 0.2, "next": "done"},
    "done": {"type": "return", "value": "=vars.x"},
}
FAILS = {
    "first": {"type": "set", "values": {"x": 1}, "next": "boom"},
    "boom": {"type": "fail", "code": "out_of_luck", "message": "no luck"},
}


def outline(result: RunResult) -> tuple[Any, ...]:
    """What a run ended with and which blocks ran how, without ids and times."""
    error = result.error.code if result.error is not None else None
    blocks = [(entry.block, entry.outcome) for entry in result.trace]
    return result.status, result.output, error, blocks


@pytest.mark.parametrize("blocks", [PURE, FAILS], ids=["completes", "fails"])
async def test_a_run_that_ends_without_an_await_comes_back_as_its_result(
    engine: Engine, blocks: dict[str, Any]
) -> None:
    await deploy(engine, blocks, flow="job")
    waited = await engine.call_flow("job", {"n": 1})

    started = await engine.start_flow("job", {"n": 1})

    assert isinstance(started, RunResult)
    assert outline(started) == outline(waited)
    assert started.run_id != waited.run_id
    assert list(engine.active_runs()) == []  # ended and kept: nothing left in flight
    assert outline(await engine.get_run(started.run_id)) == outline(waited)


async def test_the_step_limit_stops_a_run_begun_here_where_it_stops_any_run() -> None:
    async with Engine(limits=Limits(max_steps=2)) as engine:
        await deploy(engine, PURE, flow="job")
        waited = await engine.call_flow("job", {"n": 1})
        started = await engine.start_flow("job", {"n": 1})
        # the block over the limit is counted where awaits may be: in the run's task
        with anyio.fail_after(5):
            result = started if isinstance(started, RunResult) else await engine.wait_for(started)
    assert result.error is not None and result.error.code == "step_limit"
    assert outline(result) == outline(waited)


async def test_a_run_that_waits_has_run_its_first_blocks_when_its_id_comes_back(
    engine: Engine,
) -> None:
    await deploy(engine, WAITS, flow="job")

    run_id = await engine.start_flow("job")

    assert isinstance(run_id, str)
    now = await engine.get_run(run_id)
    assert now.status is RunStatus.RUNNING
    assert [(entry.block, entry.outcome) for entry in now.trace] == [("first", "ok")]
    with anyio.fail_after(5):
        result = await engine.wait_for(run_id)
    assert outline(result) == (
        RunStatus.COMPLETED,
        1,
        None,
        [("first", "ok"), ("hold", "ok"), ("done", "ok")],
    )


async def test_a_run_that_waits_outlives_its_caller(engine: Engine) -> None:
    await deploy(engine, WAITS, flow="job")

    with anyio.CancelScope() as caller:
        run_id = await engine.start_flow("job")
        caller.cancel()  # the caller goes (a client that hung up, say)
        await anyio.sleep(5)
    assert caller.cancelled_caught

    with anyio.fail_after(5):
        result = await engine.wait_for(run_id)
    assert result.status is RunStatus.COMPLETED
    assert result.output == 1


async def test_a_run_begun_here_is_cancelled_in_the_block_it_waits_in(engine: Engine) -> None:
    await deploy(
        engine, {**WAITS, "hold": {"type": "wait", "seconds": 30, "next": "done"}}, flow="job"
    )

    run_id = await engine.start_flow("job")
    assert isinstance(run_id, str)
    await engine.cancel(run_id)
    with anyio.fail_after(5):
        result = await engine.wait_for(run_id)

    assert result.status is RunStatus.CANCELLED
    assert [(entry.block, entry.outcome) for entry in result.trace] == [
        ("first", "ok"),
        ("hold", "cancelled"),
    ]


async def test_a_durable_run_runs_nothing_in_the_callers_task() -> None:
    async with Engine(MemoryStore(durable=True)) as engine:
        await deploy(engine, PURE, flow="job")
        run_id = await engine.start_flow("job", {"n": 1})
        assert isinstance(run_id, str)  # checkpointed block by block, in its own task
        with anyio.fail_after(5):
            result = await engine.wait_for(run_id)
    assert outline(result) == (
        RunStatus.COMPLETED,
        {"x": 2, "y": 2},
        None,
        [("first", "ok"), ("second", "ok"), ("done", "ok")],
    )


async def test_with_runs_left_to_workers_the_run_stays_queued(tmp_path: Path) -> None:
    async with Engine(f"sqlite:///{tmp_path / 'runs.db'}", execute=False) as engine:
        await deploy(engine, PURE, flow="job")
        run_id = await engine.start_flow("job", {"n": 1})
        assert isinstance(run_id, str)
        assert (await engine.get_run(run_id)).status is RunStatus.QUEUED


async def test_call_flow_blocks_cannot_be_claimed_as_the_activation_edge(engine: Engine) -> None:
    await deploy(engine, PURE, flow="job")
    with pytest.raises(ValueError, match="Call Flow blocks only"):
        await engine.start_flow("job", via="call_flow")
