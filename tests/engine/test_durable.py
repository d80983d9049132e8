"""Durable runs with real processes: kill a worker, stop one, change things from another.

Workers are ``flowwarden worker`` processes on a SQLite file or a PostgreSQL schema.
Runs are enqueued by an engine that does not execute (``execute=False``), so each is a
QUEUED row before ``call_flow`` returns. Blocks POST to a recorder in this process, so
the tests count how often each block ran (see ``durable_support``).
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from durable_support import (
    HITS_BLOCKS,
    HITS_FLOW,
    LINE_FLOW,
    PARENT_FLOW,
    Recorder,
    WorkerProcess,
    query,
    worker_processes,
)

from engine import ActivationDenied, Engine, FlowNotLive, Identity, RunStatus
from engine._model.records import RunRecord
from engine._store import open_store
from engine._store.schema import MIGRATIONS, SCHEMA_VERSION
from engine._store.sqlite import SQLiteStore
from permissions import Permission, User

LINE_BLOCKS = {**{f"hit{i}": 1 for i in range(1, 5)}, **{f"pause{i}": 1 for i in range(1, 5)}}
LINE_BLOCKS["done"] = 1


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # psycopg's async connections need asyncio


async def publish(engine: Engine, *documents: dict[str, Any]) -> None:
    for document in documents:
        await engine.start(document["flow"], await engine.add_version(document))


async def enqueue(engine: Engine, flow: str, url: str, count: int) -> list[str]:
    """Accept ``count`` runs; each is a row before its call returns."""
    run_ids = []
    for n in range(count):
        run_id = await engine.call_flow(flow, {"url": url, "n": n}, wait=False)
        assert await engine.store.get_run_record(run_id) is not None
        run_ids.append(run_id)
    return run_ids


async def all_finished(
    engine: Engine, run_ids: list[str], workers: list[WorkerProcess], seconds: float = 180.0
) -> dict[str, RunRecord]:
    """Every run's record once all have finished (polling the store)."""
    records: dict[str, RunRecord] = {}
    try:
        with anyio.fail_after(seconds):
            while True:
                for run_id in run_ids:
                    record = await engine.store.get_run_record(run_id)
                    assert record is not None
                    records[run_id] = record
                if all(record.status.finished for record in records.values()):
                    return records
                await anyio.sleep(0.1)
    except TimeoutError:
        statuses = Counter(record.status.value for record in records.values())
        logs = "\n".join(f"--- {w.name}\n{w.output()[-3000:]}" for w in workers)
        raise AssertionError(f"runs unfinished: {dict(statuses)}\n{logs}") from None


async def owned_by(engine: Engine, run_ids: list[str], owner: str | None) -> set[str]:
    held = set()
    for run_id in run_ids:
        record = await engine.store.get_run_record(run_id)
        if record is not None and record.status is RunStatus.RUNNING and record.owner == owner:
            held.add(run_id)
    return held


def trace_counts(record: RunRecord) -> dict[str, int]:
    return dict(Counter(entry[0] for entry in record.trace))


async def kill_mid_block(
    engine: Engine, recorder: Recorder, workers: list[WorkerProcess], run_ids: list[str]
) -> tuple[str, str, set[str], float]:
    """SIGKILL the worker running the first ``hit-3`` request while that request is in
    flight; the held run, the survivor's name, the victim's runs and the kill time."""
    held = recorder.hold(lambda hit: hit.label == "hit-3")
    hit = await held.wait(120)
    record = await engine.store.get_run_record(hit.run)
    assert record is not None and record.status is RunStatus.RUNNING
    victim = next(worker for worker in workers if worker.owner == record.owner)
    survivor = next(worker for worker in workers if worker is not victim)
    victim_runs = await owned_by(engine, run_ids, victim.owner)
    victim.signal(signal.SIGKILL)
    await victim.exited(30)
    killed_at = time.time()  # dead by now, and no lease of it has expired yet
    held.release()
    victim_runs |= await owned_by(engine, run_ids, victim.owner)
    assert hit.run in victim_runs
    return hit.run, survivor.name, victim_runs, killed_at


def check_effects(
    recorder: Recorder, run_ids: list[str], held_run: str, victim_runs: set[str], killed_at: float
) -> None:
    """Each block ran once, but for blocks in flight at the kill (at most one per run of
    the killed worker, the held one among them), which ran twice with the same key."""
    counts = recorder.counts()
    assert set(counts) == {(run, f"hit-{i}") for run in run_ids for i in range(1, 5)}
    repeated = {pair: count for pair, count in counts.items() if count > 1}
    assert (held_run, "hit-3") in repeated
    assert set(repeated.values()) == {2}
    assert {run for run, _ in repeated} <= victim_runs
    assert len({run for run, _ in repeated}) == len(repeated)  # one block per run at most
    for pair in repeated:
        times = sorted(hit.at for hit in recorder.snapshot() if (hit.run, hit.label) == pair)
        assert times[0] < killed_at < times[1]  # sent before the worker died, and after
    keys = recorder.keys()
    assert all(len(sent) == 1 for sent in keys.values()), {
        pair: sent for pair, sent in keys.items() if len(sent) > 1
    }


# -- crashes -----------------------------------------------------------------------------


@dataclass
class Crash:
    """What a crash scenario left: every run's end, and what the kill touched."""

    recorder: Recorder
    run_ids: list[str]
    records: dict[str, RunRecord]
    held_run: str
    survivor: str
    victim_runs: set[str]
    killed_at: float
    owners: dict[str, str]


async def crash(durable_url: str, tmp_path: Path, document: dict[str, Any], count: int) -> Crash:
    """Two worker processes drain ``count`` runs of ``document``; the one running the
    first ``hit-3`` request is killed while that request is in flight."""
    with Recorder() as recorder, worker_processes() as workers:
        async with Engine(durable_url, execute=False) as engine:
            await publish(engine, document)
            workers += [WorkerProcess(durable_url, tmp_path, name) for name in ("a", "b")]
            for worker in workers:
                await worker.started()
            run_ids = await enqueue(engine, document["flow"], recorder.url, count)
            held_run, survivor, victim_runs, killed_at = await kill_mid_block(
                engine, recorder, workers, run_ids
            )
            records = await all_finished(engine, run_ids, workers)
        owners = {worker.name: worker.owner for worker in workers}
    return Crash(recorder, run_ids, records, held_run, survivor, victim_runs, killed_at, owners)


@pytest.mark.parametrize(
    ("document", "count", "output", "blocks"),
    [
        pytest.param(LINE_FLOW, 8, lambda n: {"n": n}, LINE_BLOCKS, id="a line of blocks"),
        pytest.param(HITS_FLOW, 4, lambda n: {"n": n, "count": 4}, HITS_BLOCKS, id="inside a loop"),
    ],
)
async def test_a_killed_worker_s_runs_finish_exactly_once_elsewhere(
    durable_url: str,
    tmp_path: Path,
    document: dict[str, Any],
    count: int,
    output: Callable[[int], Any],
    blocks: dict[str, int],
) -> None:
    """Only the block in flight at the kill runs again, with the same key (in a loop too)."""
    seen = await crash(durable_url, tmp_path, document, count)
    for n, run_id in enumerate(seen.run_ids):
        record = seen.records[run_id]
        assert (record.status, record.output, record.error) == (
            RunStatus.COMPLETED,
            output(n),
            None,
        )
        assert trace_counts(record) == blocks  # finished once, nothing twice
        if run_id in seen.victim_runs:
            assert record.owner == seen.owners[seen.survivor]
        else:
            assert record.owner in seen.owners.values()
    check_effects(seen.recorder, seen.run_ids, seen.held_run, seen.victim_runs, seen.killed_at)


async def test_loop_runs_of_a_killed_worker_resume_where_they_stood(
    durable_url: str, tmp_path: Path
) -> None:
    """As above, inside a ``repeat``: iterations done before the kill are not run again."""
    seen = await crash(durable_url, tmp_path, HITS_FLOW, 6)
    for n, run_id in enumerate(seen.run_ids):
        record = seen.records[run_id]
        assert (record.status, record.output) == (RunStatus.COMPLETED, {"n": n, "count": 4})
        assert trace_counts(record) == HITS_BLOCKS
    counts = seen.recorder.counts()
    assert set(counts) == {(run, f"hit-{i}") for run in seen.run_ids for i in range(1, 5)}
    repeated = {pair for pair, count in counts.items() if count > 1}
    assert (seen.held_run, "hit-3") in repeated and set(counts.values()) <= {1, 2}
    assert {run for run, _ in repeated} <= seen.victim_runs
    assert len({run for run, _ in repeated}) == len(repeated)
    for pair in repeated:
        times = sorted(hit.at for hit in seen.recorder.snapshot() if (hit.run, hit.label) == pair)
        assert times[0] < seen.killed_at < times[1]


async def test_a_killed_worker_s_runs_have_one_step_per_block_after_the_takeover(
    durable_url: str, tmp_path: Path
) -> None:
    """The survivor resumes at the last checkpoint: every block but the closing
    ``return`` has exactly one step, in trace order, with the variables of that point."""
    seen = await crash(durable_url, tmp_path, HITS_FLOW, 4)
    async with Engine(durable_url, execute=False) as engine:
        for run_id in seen.run_ids:
            trace = seen.records[run_id].trace
            steps = await engine.run_steps(run_id)
            assert steps is not None
            assert [step.trace_index for step in steps] == list(range(len(trace) - 1))
            assert [step.block for step in steps] == [entry[0] for entry in trace[:-1]]
            counts = [step.variables["count"] for step in steps if step.block == "count"]
            assert counts == [1, 2, 3, 4]  # not one repeated, none lost
            assert all(step.kept for step in steps)


async def test_a_parent_resumed_after_a_kill_waits_for_the_same_child(
    durable_url: str, tmp_path: Path
) -> None:
    with Recorder() as recorder, worker_processes() as workers:
        async with Engine(durable_url, execute=False) as engine:
            await publish(engine, HITS_FLOW, PARENT_FLOW)
            workers += [WorkerProcess(durable_url, tmp_path, name) for name in ("a", "b")]
            for worker in workers:
                await worker.started()
            parents = await enqueue(engine, "parent", recorder.url, 2)

            held = recorder.hold(lambda hit: hit.label == "hit-3")
            hit = await held.wait(120)
            child = await engine.store.get_run_record(hit.run)
            assert child is not None and child.header.parent_run_id in parents
            parent = await engine.store.get_run_record(child.header.parent_run_id)
            assert parent is not None and parent.owner == child.owner  # a waiting child
            assert parent.checkpoint is not None  # runs in its parent's task
            assert parent.checkpoint["waiting"] == {"": child.run_id}
            victim = next(worker for worker in workers if worker.owner == child.owner)
            victim.signal(signal.SIGKILL)
            await victim.exited(30)
            killed_at = time.time()
            held.release()
            children_of_victim = {
                run_id
                for (run_id,) in query(
                    durable_url, "SELECT run_id FROM runs WHERE owner = ?", (victim.owner,)
                )
            }
            records = await all_finished(engine, parents, workers)

        children = []
        for n, parent_id in enumerate(parents):
            record = records[parent_id]
            assert (record.status, record.output) == (RunStatus.COMPLETED, {"n": n, "count": 4})
            rows = query(
                durable_url, "SELECT run_id, status FROM runs WHERE parent_run_id = ?", (parent_id,)
            )
            assert len(rows) == 1 and rows[0][1] == "COMPLETED"  # the same child
            assert trace_counts(record) == {"call": 1, "done": 1}
            children.append(rows[0][0])
        assert child.run_id in children
        check_effects(recorder, children, child.run_id, children_of_victim, killed_at)


async def test_a_run_an_engine_executes_itself_is_leased_from_the_start(durable_url: str) -> None:
    slow = {"flow": "slow", "start": "w", "blocks": {"w": {"type": "wait", "seconds": 30}}}
    async with Engine(durable_url, lease=30.0) as engine:
        await publish(engine, slow)
        before = time.time()
        run_id = await engine.call_flow("slow", wait=False)  # runs here, not in a worker
        other = open_store(durable_url)
        try:
            record = await other.get_run_record(run_id)
            assert record is not None and record.owner == engine.owner
            assert record.lease_expires is not None and record.lease_expires >= before + 30
            assert await other.claim_runs("another-worker", 10, 30.0) == []
        finally:
            await other.close()
            await engine.cancel(run_id)


# -- graceful shutdown -------------------------------------------------------------------


async def test_sigterm_hands_runs_back_after_their_blocks_and_another_worker_ends_them(
    durable_url: str, tmp_path: Path
) -> None:
    with Recorder() as recorder, worker_processes() as workers:
        async with Engine(durable_url, execute=False) as engine:
            await publish(engine, HITS_FLOW)
            first = WorkerProcess(durable_url, tmp_path, "first")
            workers.append(first)
            owner = await first.started()
            run_ids = await enqueue(engine, "hits", recorder.url, 4)
            held = recorder.hold(lambda hit: hit.label == "hit-2")
            hit = await held.wait(120)
            assert await owned_by(engine, run_ids, owner) == set(run_ids)
            first.signal(signal.SIGTERM)
            await anyio.sleep(0.5)  # the worker is stopping while the request is in flight
            assert first.process.poll() is None
            held.release()
            assert await first.exited(60) == 0, first.output()

            for run_id in run_ids:  # handed back: queued, nobody's, checkpoint kept
                record = await engine.store.get_run_record(run_id)
                assert record is not None
                assert (record.status, record.owner) == (RunStatus.QUEUED, None)
                assert record.checkpoint is not None and record.trace
            held_record = await engine.store.get_run_record(hit.run)
            assert held_record is not None and held_record.checkpoint is not None
            assert trace_counts(held_record).get("hit") == 2  # the block in flight finished

            second = WorkerProcess(durable_url, tmp_path, "second")
            workers.append(second)
            await second.started()
            records = await all_finished(engine, run_ids, workers)

        for n, run_id in enumerate(run_ids):
            record = records[run_id]
            assert (record.status, record.output) == (RunStatus.COMPLETED, {"n": n, "count": 4})
            assert record.owner == second.owner
            assert trace_counts(record) == HITS_BLOCKS
        counts = recorder.counts()  # nothing ran twice: every block was let finish
        assert counts == Counter({(run, f"hit-{i}"): 1 for run in run_ids for i in range(1, 5)})


# -- one store, several processes ------------------------------------------------------------


async def test_status_and_permission_changes_reach_every_engine_at_its_next_activation(
    durable_url: str,
) -> None:
    flow = {"flow": "f", "start": "r", "blocks": {"r": {"type": "return", "value": "v1"}}}
    alice = Identity(user_id="alice")
    async with Engine(durable_url) as admin, Engine(durable_url) as other:
        await publish(admin, flow)
        assert (await other.call_flow("f", identity=alice)).output == "v1"

        await admin.pause("f")
        with pytest.raises(FlowNotLive):
            await other.call_flow("f", identity=alice)
        await admin.resume("f")
        assert (await other.call_flow("f", identity=alice)).status is RunStatus.COMPLETED

        await admin.permissions.deny(User("alice"), flow="f")
        with pytest.raises(ActivationDenied):
            await other.call_flow("f", identity=alice)
        await admin.permissions.inherit(User("alice"), flow="f")
        await admin.permissions.set_default(Permission.DENY)
        with pytest.raises(ActivationDenied):
            await other.call_flow("f", identity=alice)
        await admin.permissions.grant(User("alice"))
        assert (await other.call_flow("f", identity=alice)).output == "v1"

        v2 = await admin.add_version({**flow, "blocks": {"r": {"type": "return", "value": "v2"}}})
        await admin.start("f", v2)  # a switchover made elsewhere
        assert (await other.call_flow("f", identity=alice)).output == "v2"
        await admin.stop("f")
        with pytest.raises(FlowNotLive):
            await other.call_flow("f", identity=alice)


# -- schema ------------------------------------------------------------------------------


async def test_a_version_1_sqlite_database_keeps_its_running_runs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for statement in MIGRATIONS[1]["sqlite"]:
            db.execute(statement)
        db.execute("INSERT INTO schema_version (version) VALUES (1)")
        db.execute(
            "INSERT INTO runs (run_id, flow, version, status, roles, inputs, depth, via, "
            "created_at, has_errors, checkpoint, cancel_requested, owner, lease_expires, "
            "trace_len) VALUES ('r', 'f', 1, 'RUNNING', '[]', '{}', 0, 'api', 1.0, 0, "
            "'{\"steps\":1}', 0, 'old', 0.0, 1)"
        )
        db.execute("INSERT INTO run_trace VALUES ('r', 0, 'a', 'set', 1.0, 0.1, 'ok')")
    db.close()

    store = SQLiteStore(path)
    try:
        (claimed,) = await store.claim_runs("new", 1, 30.0)  # the lease had expired
        assert (claimed.checkpoint, claimed.trace) == ({"steps": 1}, [("a", "set", 1.0, 0.1, "ok")])
        await store.checkpoint("r", "new", {"steps": 2}, [("b", "set", 2.0, 0.1, "ok")])
        record = await store.get_run_record("r")
        assert record is not None and record.checkpoint == {"steps": 2}
        assert [entry[0] for entry in record.trace] == ["a", "b"]
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    db.close()


async def test_a_finished_run_read_from_the_store_keeps_its_log(durable_url: str) -> None:
    logs = {
        "flow": "logs",
        "start": "say",
        "blocks": {
            "say": {"type": "log", "message": "hello", "next": "done"},
            "done": {"type": "return", "value": 1},
        },
    }
    async with Engine(durable_url) as engine:
        await publish(engine, logs)
        result = await engine.call_flow("logs")
        assert [entry["message"] for entry in result.log] == ["hello"]
    async with Engine(durable_url) as other:
        stored = await other.get_run(result.run_id)
        assert [entry["message"] for entry in stored.log] == ["hello"]
