"""A run's steps (the variables after each block) on every store: kept in order by the
durable ones, within their bounds, until the run is pruned; none by the memory store.

The store-level tests drive a store as a worker does (create or claim, checkpoint after
each block, finish); the engine-level ones run real flows.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from engine import Engine, RunNotFound, RunStep
from engine._model.errors import LeaseLost
from engine._model.records import RunRecord, TraceRow
from engine._model.steps import RUN_STEP_BYTES, STEP_BYTES, STEPS_KEPT
from engine._model.types import RunStatus
from engine._store.base import Store
from engine._store.schema import MIGRATIONS, SCHEMA_VERSION
from engine._store.sqlite import SQLiteStore
from engine._store.sqlite_log import FOLD_EVERY
from engine.testing import capture_logs

if TYPE_CHECKING:
    from conftest import Backend

from test_store import claim_one, record


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # psycopg's async connections need asyncio


def durable_only(backend: Backend) -> None:
    if not backend.persistent:
        pytest.skip("the memory store keeps no steps")


def entry(block: str, n: int = 0) -> TraceRow:
    return (block, "set", 100.0 + n, 0.001, "ok")


async def running(store: Store, run_id: str = "r", owner: str = "w1") -> None:
    await store.create_run(record(run_id, 1.0, status=RunStatus.RUNNING, owner=owner))


def finished(run_id: str = "r", owner: str = "w1") -> RunRecord:
    return record(run_id, 1.0, status=RunStatus.COMPLETED, owner=owner, output=1)


async def test_the_memory_store_keeps_no_steps(backend: Backend, store: Store) -> None:
    if backend.persistent:
        pytest.skip("a database store keeps steps")
    await running(store)
    await store.checkpoint("r", "w1", {"vars": {"x": 1}}, [entry("a")])
    assert await store.run_steps("r") is None


async def test_a_finished_runs_steps_are_all_there_in_order(backend: Backend, store: Store) -> None:
    durable_only(backend)
    await running(store)
    count = FOLD_EVERY + 40  # SQLite folds its checkpoint rows once on the way
    for n in range(count):
        await store.checkpoint("r", "w1", {"vars": {"n": n, "s": "é" * n}}, [entry(f"b{n}", n)])
        if n == 3:  # a run in flight shows its steps so far
            assert [s.block for s in await store.run_steps("r") or []] == ["b0", "b1", "b2", "b3"]
    assert await store.finish_run(finished(), [entry("done", count)]) is True

    steps = await store.run_steps("r")
    assert steps is not None and len(steps) == count
    assert [s.trace_index for s in steps] == list(range(count))
    assert [s.block for s in steps] == [f"b{n}" for n in range(count)]
    assert [s.variables for s in steps] == [{"n": n, "s": "é" * n} for n in range(count)]
    assert all(isinstance(s, RunStep) and s.kept and s.size > 0 for s in steps)
    assert await backend.open().run_steps("r") == steps  # what another process reads


async def test_a_checkpoint_without_a_new_trace_entry_is_no_step(
    backend: Backend, store: Store
) -> None:
    durable_only(backend)
    await running(store)
    await store.checkpoint("r", "w1", {"vars": {"x": 1}}, [entry("a")])
    await store.checkpoint("r", "w1", {"vars": {"x": 1}, "waiting": {"k": "c"}}, [])
    await store.checkpoint("r", "w1", {"vars": {"x": 2}}, [entry("b"), entry("c")])
    await store.finish_run(finished(), [])
    steps = await store.run_steps("r") or []
    assert [(s.trace_index, s.block, s.variables) for s in steps] == [
        (0, "a", {"x": 1}),
        (2, "c", {"x": 2}),  # two branches ended at once: one step, after the later
    ]


async def test_steps_are_kept_for_the_first_entries_of_the_trace_only(
    backend: Backend, store: Store
) -> None:
    durable_only(backend)
    await running(store)
    await store.checkpoint("r", "w1", {"vars": {"i": 0}}, [entry("a")] * (STEPS_KEPT - 2))
    for i in range(1, 5):
        await store.checkpoint("r", "w1", {"vars": {"i": i}}, [entry(f"b{i}")])
    await store.finish_run(finished(), [])
    steps = await store.run_steps("r") or []
    assert [(s.trace_index, s.block) for s in steps] == [
        (STEPS_KEPT - 3, "a"),
        (STEPS_KEPT - 2, "b1"),
        (STEPS_KEPT - 1, "b2"),  # the last entry with a step
    ]
    assert len((await store.get_run_record("r") or finished()).trace) == STEPS_KEPT + 2


async def test_oversize_variables_are_not_kept_nor_past_a_runs_budget(
    backend: Backend, store: Store
) -> None:
    durable_only(backend)
    await running(store)
    big = {"blob": "x" * (STEP_BYTES + 1)}
    await store.checkpoint("r", "w1", {"vars": big}, [entry("big")])
    half = {"blob": "y" * (STEP_BYTES // 2)}
    fits = RUN_STEP_BYTES // (STEP_BYTES // 2 + 20)  # how many half-size steps fit
    for n in range(fits + 3):
        await store.checkpoint("r", "w1", {"vars": half}, [entry(f"h{n}")])
    await store.checkpoint("r", "w1", {"vars": {"small": 1}}, [entry("last")])
    await store.finish_run(finished(), [])
    steps = await store.run_steps("r") or []
    assert len(steps) == fits + 5
    assert (steps[0].block, steps[0].kept, steps[0].variables) == ("big", False, None)
    assert steps[0].size > STEP_BYTES
    kept = [s for s in steps if s.kept]
    assert sum(s.size for s in kept) <= RUN_STEP_BYTES
    assert len(kept) >= fits - 2 and not steps[-2].kept  # the budget ran out
    assert all(s.size > 0 for s in steps)


async def test_prune_removes_a_runs_steps(backend: Backend, store: Store) -> None:
    durable_only(backend)
    await running(store)
    await store.checkpoint("r", "w1", {"vars": {"x": 1}}, [entry("a")])
    await store.finish_run(finished(), [])
    await running(store, "young")
    await store.checkpoint("young", "w1", {"vars": {"y": 1}}, [entry("a")])
    assert await store.prune_runs(before=2.0) == 1
    assert await store.run_steps("r") == []
    assert backend.execute("SELECT run_id FROM run_steps WHERE run_id = 'r'") == []
    assert [s.variables for s in await store.run_steps("young") or []] == [{"y": 1}]


async def test_a_worker_taking_over_a_run_does_not_duplicate_its_steps(
    backend: Backend, store: Store
) -> None:
    durable_only(backend)
    await store.create_run(record("r", 1.0))
    await claim_one(store, "dead", lease=-1.0)  # its lease expires at once
    await store.checkpoint("r", "dead", {"vars": {"x": 1}}, [entry("a")])
    await store.checkpoint("r", "dead", {"vars": {"x": 2}}, [entry("b")])
    other = backend.open()  # another process
    taken = await claim_one(other, "w2")
    assert taken.checkpoint == {"vars": {"x": 2}}
    with pytest.raises(LeaseLost):  # the stalled worker's late write is not kept
        await store.checkpoint("r", "dead", {"vars": {"x": 99}}, [entry("late")])
    await other.checkpoint("r", "w2", {"vars": {"x": 3}}, [entry("c")], epoch=taken.lease_epoch)
    done = record("r", 1.0, status=RunStatus.COMPLETED, owner="w2", lease_epoch=taken.lease_epoch)
    assert await other.finish_run(done, []) is True
    steps = await store.run_steps("r") or []
    assert [(s.trace_index, s.block, s.variables) for s in steps] == [
        (0, "a", {"x": 1}),
        (1, "b", {"x": 2}),
        (2, "c", {"x": 3}),
    ]


# -- the engine ---------------------------------------------------------------------------

FLOW: dict[str, Any] = {
    "flow": "f",
    "start": "a",
    "blocks": {
        "a": {"type": "set", "values": {"x": 1}, "next": "b"},
        "b": {"type": "set", "values": {"secret": "=vars.x + 1"}, "next": "loop"},
        "loop": {"type": "repeat", "while": "iteration <= 2", "body": "c", "next": "done"},
        "c": {"type": "set", "values": {"x": "=vars.x + 1"}},
        "done": {"type": "return", "value": "=vars.x"},
    },
}


async def test_an_engine_gives_each_blocks_variables(durable_url: str) -> None:
    async with Engine(durable_url) as engine:
        await engine.start("f", await engine.add_version(FLOW))
        result = await engine.call_flow("f")
        steps = await engine.run_steps(result.run_id)
    assert [entry.block for entry in result.trace] == ["a", "b", "c", "c", "loop", "done"]
    assert steps is not None
    # every block but the one that ended the run has the variables after it
    assert [(s.trace_index, s.block, s.variables) for s in steps] == [
        (0, "a", {"x": 1}),
        (1, "b", {"x": 1, "secret": 2}),
        (2, "c", {"x": 2, "secret": 2}),
        (3, "c", {"x": 3, "secret": 2}),
        (4, "loop", {"x": 3, "secret": 2}),
    ]


async def test_the_variables_kept_as_steps_are_never_logged(durable_url: str) -> None:
    secret = {
        **FLOW,
        "blocks": {
            **FLOW["blocks"],
            "a": {**FLOW["blocks"]["a"], "values": {"x": 1, "pin": "=inputs.pin"}},
        },
    }
    with capture_logs() as events:
        async with Engine(durable_url) as engine:
            await engine.start("f", await engine.add_version(secret))
            result = await engine.call_flow("f", {"pin": "4711-s3cret"})
            steps = await engine.run_steps(result.run_id)
    assert steps is not None and steps[0].variables == {"x": 1, "pin": "4711-s3cret"}
    assert events and "4711-s3cret" not in repr(events)


async def test_an_engine_on_the_memory_store_has_no_steps_and_knows_its_runs() -> None:
    async with Engine() as engine:
        await engine.start("f", await engine.add_version(FLOW))
        result = await engine.call_flow("f")
        assert await engine.run_steps(result.run_id) is None
        with pytest.raises(RunNotFound):
            await engine.run_steps("no-such-run")


async def test_an_unknown_run_has_no_steps(durable_url: str) -> None:
    async with Engine(durable_url) as engine:
        with pytest.raises(RunNotFound):
            await engine.run_steps("no-such-run")


# -- schema -------------------------------------------------------------------------------


async def test_a_version_4_sqlite_file_is_migrated_and_keeps_its_checkpoints(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v4.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for number in range(1, 5):
            for statement in MIGRATIONS[number]["sqlite"]:
                db.execute(statement)
        db.execute("INSERT INTO schema_version (version) VALUES (4)")
        db.execute(
            "INSERT INTO runs (run_id, flow, version, status, roles, inputs, depth, via, "
            "created_at, has_errors, checkpoint, cancel_requested, owner, lease_expires, "
            "trace_len, lease_epoch) VALUES ('r', 'f', 1, 'RUNNING', '[]', '{}', 0, 'api', "
            "1.0, 0, '{\"vars\":{\"x\":1}}', 0, 'old', 0.0, 1, 1)"
        )
        db.execute("INSERT INTO run_trace VALUES ('r', 0, 'a', 'set', 1.0, 0.1, 'ok')")
        db.execute(  # a checkpoint row written by the old version, not folded yet
            "INSERT INTO checkpoints VALUES ('r', 1, '{\"vars\":{\"x\":2}}', "
            '\'[["b","set",2.0,0.1,"ok"]]\')'
        )
    db.close()

    store = SQLiteStore(path)
    try:
        claimed = await claim_one(store, "new")  # the old owner's lease had expired
        assert claimed.checkpoint == {"vars": {"x": 2}}
        await store.checkpoint("r", "new", {"vars": {"x": 3}}, [entry("c")])
        done = record("r", 1.0, status=RunStatus.COMPLETED, owner="new", lease_epoch=2)
        assert await store.finish_run(done, []) is True
        steps = await store.run_steps("r") or []
    finally:
        await store.close()
    # the step before the new version (folded into the run's row) is gone; the rest are kept
    assert [(s.trace_index, s.block, s.variables) for s in steps] == [
        (1, "b", {"x": 2}),
        (2, "c", {"x": 3}),
    ]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    db.close()


async def test_a_version_4_postgresql_database_is_migrated(backend: Backend) -> None:
    if backend.kind != "postgresql":
        pytest.skip("the PostgreSQL migration")
    backend.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for number in range(1, 5):
        for statement in MIGRATIONS[number]["postgresql"]:
            backend.execute(statement)
    backend.execute("INSERT INTO schema_version (version) VALUES (4)")
    store = backend.open()
    await store.create_run(record("r", 1.0))
    claimed = await claim_one(store, "w")
    await store.checkpoint("r", "w", {"vars": {"x": 1}}, [entry("a")], epoch=claimed.lease_epoch)
    assert [(s.block, s.variables) for s in await store.run_steps("r") or []] == [("a", {"x": 1})]
    assert backend.execute("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
