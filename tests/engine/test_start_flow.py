"""``Engine.start_flow``: a run whose caller waits for it next begins in the caller's task.

Its blocks up to the first that needs an await run before ``start_flow`` returns. A run
that ends so comes back as its result, the same as ``call_flow`` gives when it waits;
a run that must wait for something comes back as its id and goes on in a task of its
own, which outlives the caller. With a durable store, or when nobody runs runs here,
nothing runs in the caller's task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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


# -- a durable run whose caller says how long it waits ------------------------------------
#
# Its blocks run in the caller's task, each with its checkpoint, until the first that
# needs an await of its own, or until the caller's wait (at most a slice) has passed;
# then the run goes on in a task of its own, from that block, and outlives the caller.

CHAIN = {
    **{
        f"b{i}": {"type": "set", "values": {"n": f"=vars.n + {i}" if i else 0}, "next": f"b{i + 1}"}
        for i in range(120)
    },
    "b120": {"type": "return", "value": "=vars.n"},
}
CHAIN_BLOCKS = [(f"b{i}", "ok") for i in range(121)]
CHAIN_OUTPUT = sum(range(120))


@pytest.fixture
async def durable(durable_url: str) -> Any:
    async with Engine(durable_url) as engine:
        yield engine


async def finished(engine: Engine, run: RunResult | str) -> RunResult:
    """The run's result once it has ended, read back from the store."""
    run_id = run if isinstance(run, str) else run.run_id
    with anyio.fail_after(30):
        await engine.wait_for(run_id)
    return await engine.get_run(run_id)


async def under_way(engine: Engine) -> str:
    """The id of the run in flight, once there is one (looked for at every loop turn)."""
    while not (ids := list(engine.active_runs())):
        await anyio.lowlevel.checkpoint()
    return ids[0]


async def test_a_durable_run_its_caller_waits_for_ends_in_the_callers_task(
    durable: Engine,
) -> None:
    await deploy(durable, PURE, flow="job")

    started = await durable.start_flow("job", {"n": 1}, waiting=10)

    assert isinstance(started, RunResult)  # no task of its own: it ended here
    expected = (RunStatus.COMPLETED, {"x": 2, "y": 2}, None, [(b, "ok") for b in PURE])
    assert outline(started) == expected
    assert list(durable.active_runs()) == []
    assert outline(await durable.get_run(started.run_id)) == expected  # as stored
    steps = await durable.run_steps(started.run_id)
    assert [(step.trace_index, step.block) for step in steps] == [(0, "first"), (1, "second")]


async def test_a_durable_run_goes_on_in_a_task_of_its_own_at_its_first_await(
    durable: Engine,
) -> None:
    await deploy(durable, WAITS, flow="job")

    run_id = await durable.start_flow("job", waiting=10)

    assert isinstance(run_id, str)
    now = await durable.get_run(run_id)  # the block before the wait ran here, checkpointed
    assert now.status is RunStatus.RUNNING
    assert [(entry.block, entry.outcome) for entry in now.trace] == [("first", "ok")]
    assert outline(await finished(durable, run_id)) == (
        RunStatus.COMPLETED,
        1,
        None,
        [("first", "ok"), ("hold", "ok"), ("done", "ok")],
    )


@pytest.mark.parametrize("waiting", [0.0, 0.001], ids=["no-wait", "past-its-wait"])
async def test_a_durable_run_past_its_callers_wait_goes_on_in_a_task_of_its_own(
    durable: Engine, waiting: float
) -> None:
    await deploy(durable, CHAIN, flow="chain")

    run_id = await durable.start_flow("chain", waiting=waiting)

    assert isinstance(run_id, str)  # 121 checkpointed blocks take longer than that
    result = await finished(durable, run_id)
    assert outline(result) == (RunStatus.COMPLETED, CHAIN_OUTPUT, None, CHAIN_BLOCKS)
    steps = await durable.run_steps(run_id)
    assert [step.trace_index for step in steps] == list(range(120))  # one after each block


async def chain_meanwhile(
    engine: Engine, meanwhile: Callable[[anyio.CancelScope, str], Awaitable[None]]
) -> tuple[bool, RunResult]:
    """Start the chain in a caller that then waits for it, while ``meanwhile(caller,
    run_id)`` runs as soon as the run is under way in the caller's task: whether the
    caller was cancelled, and the run's result as stored once it has ended."""
    await deploy(engine, CHAIN, flow="chain")
    got: list[RunResult | str] = []
    async with anyio.create_task_group() as group:
        caller = anyio.CancelScope()

        async def interfere() -> None:
            await meanwhile(caller, await under_way(engine))

        group.start_soon(interfere)
        with caller:
            got.append(await engine.start_flow("chain", waiting=10))
            # a caller cancelled meanwhile is cancelled here at the latest: where the
            # run ended in its task, the wait below has nothing to await
            await anyio.lowlevel.checkpoint()
            with anyio.fail_after(30):
                await engine.wait_for(got[0] if isinstance(got[0], str) else got[0].run_id)
    return caller.cancelled_caught, await finished(engine, got[0])


async def test_a_durable_run_outlives_a_caller_cancelled_while_it_runs_there(
    durable: Engine,
) -> None:
    async def hang_up(caller: anyio.CancelScope, run_id: str) -> None:
        caller.cancel()  # while the run is in the caller's task

    hung_up, result = await chain_meanwhile(durable, hang_up)

    assert hung_up
    assert outline(result) == (RunStatus.COMPLETED, CHAIN_OUTPUT, None, CHAIN_BLOCKS)


async def test_a_durable_run_cancelled_while_it_runs_in_its_callers_task_is_cancelled(
    durable: Engine,
) -> None:
    async def cancel(caller: anyio.CancelScope, run_id: str) -> None:
        await durable.cancel(run_id)

    hung_up, result = await chain_meanwhile(durable, cancel)

    assert not hung_up
    assert result.status is RunStatus.CANCELLED
    assert result.error is not None and result.error.code == "cancelled"
    ran = [(entry.block, entry.outcome) for entry in result.trace]
    assert 0 < len(ran) < len(CHAIN_BLOCKS)  # stopped part of the way: where it was
    assert ran[:-1] == CHAIN_BLOCKS[: len(ran) - 1]


async def test_a_traced_durable_run_keeps_to_one_task_and_its_spans_to_one_tree(
    tmp_path: Path,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with Engine(f"sqlite:///{tmp_path / 'runs.db'}", tracer_provider=provider) as engine:
        await deploy(engine, WAITS, flow="job")
        run_id = await engine.start_flow("job", waiting=10)
        assert isinstance(run_id, str)  # its span is current in the task it runs in
        assert [entry.block for entry in (await engine.get_run(run_id)).trace] == []
        result = await finished(engine, run_id)
    assert result.status is RunStatus.COMPLETED

    spans = exporter.get_finished_spans()
    (run,) = [span for span in spans if span.name == "flow.run"]
    blocks = [span for span in spans if span.name == "flow.block"]
    assert len(blocks) == 3
    assert {span.parent.span_id for span in blocks if span.parent} == {run.context.span_id}
    assert {span.context.trace_id for span in spans} == {run.context.trace_id}
