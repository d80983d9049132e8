"""Resuming durable runs in one process, on the durable in-memory store: quick checks of
what the crash tests show with real processes and databases."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from blocks import BlockContext, BlockDefinition, BlockRegistry, Params
from engine import Engine, RunResult, RunStatus, Worker
from engine._model.errors import LeaseLost, StoreUnavailable
from engine._store.memory import MemoryStore

PARENT = {
    "flow": "parent",
    "start": "a",
    "blocks": {
        "a": {"type": "set", "values": {"n": 0}, "next": "loop"},
        "loop": {"type": "for_each", "items": "[1, 2, 3]", "body": "step", "next": "child"},
        "step": {"type": "set", "values": {"n": "=vars.n + item"}, "next": "pause"},
        "pause": {"type": "wait", "seconds": 0.05},
        "child": {
            "type": "call_flow",
            "flow": "kid",
            "inputs": {"n": "=vars.n"},
            "result": "k",
            "next": "done",
        },
        "done": {"type": "return", "value": {"n": "=vars.n", "k": "=vars.k"}},
    },
}
KID = {
    "flow": "kid",
    "start": "w",
    "blocks": {
        "w": {"type": "wait", "seconds": 0.3, "next": "r"},
        "r": {"type": "return", "value": "=inputs.n * 2"},
    },
}


async def one_worker_runs(engine: Engine, run_id: str) -> tuple[RunResult, Worker]:
    """The result of ``run_id`` as a worker of one slot on ``engine`` runs it, and
    that worker, stopped."""
    worker = Worker(engine, concurrency=1, poll_interval=0.02)
    async with anyio.create_task_group() as group:
        group.start_soon(worker.run)
        with anyio.fail_after(10):
            result = await engine.wait_for(run_id)
        worker.stop()
    return result, worker


async def crash_after(store: MemoryStore, seconds: float) -> str:
    """Start a parent run, then stop running it as a killed process would: no outcome,
    no hand-back; its lease simply runs out."""
    async with Engine(store, lease=0.3) as engine:
        for document in (PARENT, KID):
            await engine.start(document["flow"], await engine.add_version(document))
        run_id = await engine.call_flow("parent", {}, wait=False)
        await anyio.sleep(seconds)
        for held in list(engine.active_runs()):
            active = engine.local_run(held)
            assert active is not None
            active.state.abandoned = True
            assert active.scope is not None
            active.scope.cancel()
        await anyio.sleep(0.05)
    await anyio.sleep(0.4)  # the leases expire
    return run_id


@pytest.mark.parametrize("seconds", [0.12, 0.4])
async def test_a_single_slot_worker_resumes_a_parent_and_the_child_it_waits_for(
    seconds: float,
) -> None:
    store = MemoryStore(durable=True)
    run_id = await crash_after(store, seconds)
    async with Engine(store, lease=0.3) as engine:
        result, _ = await one_worker_runs(engine, run_id)
    assert (result.status, result.output) == (RunStatus.COMPLETED, {"n": 6, "k": 12})
    children = [r for r in store._records.values() if r.header.parent_run_id == run_id]
    assert len(children) == 1  # the same child, not a second one
    steps = [entry.block for entry in result.trace if entry.block == "step"]
    assert steps == ["step", "step", "step"]  # no completed iteration ran again


async def test_a_queue_only_engine_leaves_runs_that_do_not_wait_to_workers(tmp_path: Path) -> None:
    (tmp_path / "kid.yaml").write_text(
        "flow: kid\nstatus: LIVE\nstart: r\nblocks:\n  r: {type: return, value: '=inputs.n'}\n"
    )
    url = f"sqlite:///{tmp_path / 'store.db'}"
    async with await Engine.open_workspace(tmp_path, store=url, execute=False) as engine:
        run_id = await engine.call_flow("kid", {"n": 7}, wait=False)
        assert (await engine.get_run(run_id)).status is RunStatus.QUEUED
        assert list(engine.active_runs()) == []
        result, worker = await one_worker_runs(engine, run_id)
    assert (result.status, result.output, worker.claimed) == (RunStatus.COMPLETED, 7, 1)


class _LosesLeaseBeforeChild(MemoryStore):
    """A durable store whose lease on a run is gone when it checkpoints a Call Flow."""

    async def checkpoint(self, run_id, owner, checkpoint, trace):  # type: ignore[no-untyped-def]
        if checkpoint.get("waiting"):
            raise LeaseLost(f"run {run_id!r} is held by another worker")
        await super().checkpoint(run_id, owner, checkpoint, trace)


async def test_a_lease_lost_at_a_call_flow_block_abandons_the_run_rather_than_failing_it() -> None:
    store = _LosesLeaseBeforeChild(durable=True)
    async with Engine(store) as engine:
        for document in (PARENT, KID):
            await engine.start(document["flow"], await engine.add_version(document))
        run_id = await engine.call_flow("parent", {}, wait=False)
        active = engine.local_run(run_id)
        assert active is not None
        with anyio.fail_after(10):
            await active.wait()  # it stopped here, with no outcome
        record = await store.get_run_record(run_id)
    assert record is not None
    assert record.status is RunStatus.RUNNING  # left for whoever holds it now
    assert record.error is None
    assert [r for r in store._records.values() if r.header.parent_run_id == run_id] == []


# Two blocks that touch nothing outside the run, then the end.
SETS = {
    "flow": "sets",
    "start": "a",
    "blocks": {
        "a": {"type": "set", "values": {"x": "=inputs.n"}, "next": "b"},
        "b": {"type": "set", "values": {"x": "=vars.x * 2"}, "next": "done"},
        "done": {"type": "return", "value": "=vars.x"},
    },
}


class _CountsWrites(MemoryStore):
    """A durable store that counts checkpoints and can refuse to write finishes."""

    def __init__(self) -> None:
        super().__init__(durable=True)
        self.checkpoints: list[list[str]] = []  # the blocks of each checkpoint's new trace
        self.refuse_finish = False

    async def checkpoint(self, run_id, owner, checkpoint, trace, **fence):  # type: ignore[no-untyped-def]
        self.checkpoints.append([row[0] for row in trace])
        await super().checkpoint(run_id, owner, checkpoint, trace, **fence)

    async def finish_run(self, record, trace, **steps):  # type: ignore[no-untyped-def]
        if self.refuse_finish:
            raise StoreUnavailable("the store is away")
        return await super().finish_run(record, trace, **steps)


async def test_the_block_before_a_return_is_checkpointed_by_the_run_s_finish() -> None:
    store = _CountsWrites()
    async with Engine(store) as engine:
        await engine.start("sets", await engine.add_version(SETS))
        result = await engine.call_flow("sets", {"n": 3})
    assert (result.status, result.output) == (RunStatus.COMPLETED, 6)
    assert [entry.block for entry in result.trace] == ["a", "b", "done"]
    assert store.checkpoints == [["a"]]  # after b, the run returns next: its finish writes it


async def test_a_run_stopped_before_its_finish_is_resumed_from_its_last_checkpoint() -> None:
    store = _CountsWrites()
    store.refuse_finish = True  # as a process that dies after b, before its finish
    async with Engine(store, lease=0.3) as engine:
        await engine.start("sets", await engine.add_version(SETS))
        run_id = await engine.call_flow("sets", {"n": 3}, wait=False)
        active = engine.local_run(run_id)
        assert active is not None
        with anyio.fail_after(10):
            await active.wait()  # it gave up writing the finish: nothing more from here
    record = await store.get_run_record(run_id)
    assert record is not None
    assert (record.status, [row[0] for row in record.trace]) == (RunStatus.RUNNING, ["a"])
    store.refuse_finish = False
    await anyio.sleep(0.4)  # the lease expires
    async with Engine(store, lease=0.3) as engine:
        result, _ = await one_worker_runs(engine, run_id)
    assert (result.status, result.output) == (RunStatus.COMPLETED, 6)
    assert [entry.block for entry in result.trace] == ["a", "b", "done"]  # b again, once


# Four branches of two blocks each, whose first blocks end at once, then the end.
BRANCHES = {
    "flow": "branches",
    "start": "par",
    "blocks": {
        "par": {"type": "parallel", "branches": ["a", "b", "c", "d"], "next": "done"},
        **{name: {"type": "set", "values": {name: 1}, "next": f"{name}2"} for name in "abcd"},
        **{f"{name}2": {"type": "set", "values": {name: 2}} for name in "abcd"},
        "done": {"type": "return", "value": "=vars"},
    },
}


class _SlowCheckpoints(MemoryStore):
    """A durable store whose checkpoints take longer the earlier they were asked for, so
    that checkpoints written at the same time would land newest first."""

    def __init__(self) -> None:
        super().__init__(durable=True)
        self.writing = 0
        self.overlapped = False
        self.landed: list[list[str]] = []  # the blocks of each checkpoint's new trace

    async def checkpoint(self, run_id, owner, checkpoint, trace, **fence):  # type: ignore[no-untyped-def]
        self.writing += 1
        self.overlapped |= self.writing > 1
        try:
            await anyio.sleep(0.04 / (len(self.landed) + self.writing))
            await super().checkpoint(run_id, owner, checkpoint, trace, **fence)
            self.landed.append([row[0] for row in trace])
        finally:
            self.writing -= 1


async def test_each_block_of_parallel_branches_is_checkpointed_one_at_a_time() -> None:
    store = _SlowCheckpoints()
    async with Engine(store) as engine:
        await engine.start("branches", await engine.add_version(BRANCHES))
        result = await engine.call_flow("branches", {})
        record = await store.get_run_record(result.run_id)
    assert result.status is RunStatus.COMPLETED
    assert result.output == {"a": 2, "b": 2, "c": 2, "d": 2}
    # every branch's blocks; the parallel block ends just before the return, so the
    # run's finish writes it (and the return)
    written = sorted(block for blocks in store.landed for block in blocks)
    assert written == ["a", "a2", "b", "b2", "c", "c2", "d", "d2"], store.landed
    assert not store.overlapped
    # a checkpoint whose turn comes after a newer one was written has nothing to add
    assert len(store.landed) < len(written), store.landed
    assert record is not None and len(record.trace) == len(result.trace)


class TickParams(Params):
    pass


def _ticker(ticks: list[str]) -> BlockDefinition:
    """A block that needs no await and touches the world: it notes each time it runs."""

    def tick(ctx: BlockContext, params: TickParams) -> None:
        ticks.append(ctx.block_id)

    return BlockDefinition("tick", TickParams, tick)


# One branch waits between its blocks; the other never waits.
WAITING_BRANCH = {
    "flow": "waiting_branch",
    "start": "par",
    "blocks": {
        "par": {"type": "parallel", "branches": ["a1", "b1"], "next": "done"},
        "a1": {"type": "tick", "next": "pause"},
        "pause": {"type": "wait", "seconds": 0.3, "next": "a2"},
        "a2": {"type": "tick"},
        "b1": {"type": "tick", "next": "b2"},
        "b2": {"type": "tick"},
        "done": {"type": "return", "value": "resumed"},
    },
}


async def test_a_parallel_run_resumed_mid_branch_runs_no_finished_block_again() -> None:
    store = MemoryStore(durable=True)
    ticks: list[str] = []
    registry = BlockRegistry([_ticker(ticks)])
    async with Engine(store, lease=0.3, registry=registry) as engine:
        await engine.start("waiting_branch", await engine.add_version(WAITING_BRANCH))
        run_id = await engine.call_flow("waiting_branch", {}, wait=False)
        await anyio.sleep(0.12)  # one branch has ended, the other waits
        active = engine.local_run(run_id)
        assert active is not None and active.scope is not None
        active.state.abandoned = True  # as a process killed here: no outcome, no hand-back
        active.scope.cancel()
        await anyio.sleep(0.05)
    assert sorted(ticks) == ["a1", "b1", "b2"]
    await anyio.sleep(0.4)  # the lease expires
    async with Engine(store, lease=0.3, registry=registry) as engine:
        result, _ = await one_worker_runs(engine, run_id)
    assert (result.status, result.output) == (RunStatus.COMPLETED, "resumed")
    assert sorted(ticks) == ["a1", "a2", "b1", "b2"]  # each ran once, across the two
