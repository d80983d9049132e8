"""Seeing runs: listing with filters and keyset pages, pruning, the memory store's bound.

Store-level tests run on every store (the memory store as durable records, SQLite and
PostgreSQL); engine-level ones on a non-durable in-memory engine and durable engines.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

from blocks import BlockRegistry
from engine import Engine, Identity, Limits, RunPage, RunStatus, RunSummary
from engine._model.listing import RunQuery, decode_cursor, encode_cursor
from engine._model.records import RunHeader, RunRecord
from engine._model.types import RunError, RunResult, Trace
from engine._store.base import Store
from engine._store.memory import MemoryStore
from engine.testing import HoldBlock

if TYPE_CHECKING:
    from conftest import Backend

FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # psycopg's async connections need asyncio


def record(run_id: str, created_at: float, **changes: Any) -> RunRecord:
    head: dict[str, Any] = {
        "run_id": run_id,
        "flow": changes.pop("flow", "orders"),
        "version": changes.pop("version", 1),
        "identity": Identity(changes.pop("user_id", "alice"), ()),
        "inputs": {},
        "parent_run_id": changes.pop("parent_run_id", None),
        "root_run_id": changes.pop("root_run_id", run_id),
        "depth": changes.pop("depth", 0),
        "created_at": created_at,
    }
    status = changes.pop("status", RunStatus.COMPLETED)
    if status.finished:
        changes.setdefault("started_at", created_at + 0.5)
        changes.setdefault("finished_at", created_at + 1.0)
    return RunRecord(RunHeader(**head), status, **changes)


async def listed(store: Store, **filters: Any) -> list[str]:
    return [run.run_id for run in await store.list_runs(RunQuery.build(limit=500, **filters))]


async def family(store: Store) -> None:
    """Seven runs: a root with a child and a grandchild, and others around it."""
    failed = {"code": "out_of_stock", "message": "gone", "block": "b"}
    await store.create_run(record("a", 100.0, user_id="ann"))
    await store.create_run(record("b", 101.0, flow="billing", user_id="bob"))
    await store.create_run(record("c", 102.0, status=RunStatus.FAILED, error=failed))
    await store.create_run(
        record("d", 103.0, flow="billing", parent_run_id="c", root_run_id="c", depth=1)
    )
    await store.create_run(
        record("e", 104.0, parent_run_id="d", root_run_id="c", depth=2, status=RunStatus.QUEUED)
    )
    await store.create_run(record("f", 105.0, user_id=None, status=RunStatus.CANCELLED))
    await store.create_run(record("g", 106.0, has_errors=True))


# -- the store -------------------------------------------------------------------------------


async def test_runs_are_listed_newest_first_with_every_field(store: Store) -> None:
    await family(store)
    assert await listed(store) == ["g", "f", "e", "d", "c", "b", "a"]
    runs = {run.run_id: run for run in await store.list_runs(RunQuery.build())}
    assert runs["c"] == RunSummary(
        run_id="c",
        flow="orders",
        version=1,
        status=RunStatus.FAILED,
        has_errors=False,
        error_code="out_of_stock",
        user_id="alice",
        parent_run_id=None,
        root_run_id="c",
        depth=0,
        created_at=102.0,
        started_at=102.5,
        finished_at=103.0,
    )
    assert runs["e"].status is RunStatus.QUEUED and runs["e"].finished_at is None
    assert runs["e"].depth == 2 and runs["e"].parent_run_id == "d"
    assert runs["g"].has_errors and runs["g"].error_code is None
    assert runs["f"].user_id is None


async def test_every_filter_selects_its_runs(store: Store) -> None:
    await family(store)
    assert await listed(store, flow="billing") == ["d", "b"]
    assert await listed(store, status=RunStatus.FAILED) == ["c"]
    assert await listed(store, status=[RunStatus.QUEUED, "CANCELLED"]) == ["f", "e"]
    assert await listed(store, user_id="bob") == ["b"]
    assert await listed(store, parent_run_id="c") == ["d"]
    assert await listed(store, root_run_id="c") == ["e", "d", "c"]
    assert await listed(store, since=102.0) == ["g", "f", "e", "d", "c"]
    assert await listed(store, until=102.0) == ["b", "a"]
    assert await listed(store, since=101.0, until=104.0, flow="billing") == ["d", "b"]
    assert await listed(store, user_id="alice", status=FINISHED, root_run_id="c") == ["d", "c"]
    assert await listed(store, flow="orders", status=FINISHED, root_run_id="c") == ["c"]
    assert await listed(store, flow="nothing") == []


async def test_saved_results_of_non_durable_runs_are_listed_too(store: Store) -> None:
    await store.create_run(record("durable", 10.0))
    result = RunResult(
        run_id="saved",
        flow="orders",
        version=2,
        status=RunStatus.FAILED,
        error=RunError("boom", "it broke", "b"),
        user_id="ann",
        root_run_id="saved",
        trace=Trace([("b", "fail", 11.0, 0.1, "boom")]),
        created_at=11.0,
        started_at=11.0,
        finished_at=11.2,
    )
    await store.save_run(result)
    (saved, durable) = await store.list_runs(RunQuery.build())
    assert saved == RunSummary.of(result)
    assert (saved.run_id, saved.error_code, saved.version) == ("saved", "boom", 2)
    assert durable.run_id == "durable"


async def test_pages_hold_every_run_once_in_order_even_with_equal_times(store: Store) -> None:
    for n in range(23):
        await store.create_run(record(f"r{n:02}", 50.0 + n // 4))  # four runs a second
    expected = await listed(store)
    seen: list[str] = []
    after = None
    while True:
        page = await store.list_runs(RunQuery(limit=5, after=after))
        seen.extend(run.run_id for run in page)
        if len(page) < 5:
            break
        after = page[-1].key
    assert seen == expected
    assert len(set(seen)) == 23


async def test_a_page_never_repeats_or_skips_a_run_while_runs_are_created(
    backend: Backend,
) -> None:
    reader, writer = backend.open(), backend.open()  # two processes on one database
    before = [f"old{n:03}" for n in range(60)]
    now = time.time()
    for n, run_id in enumerate(before):
        await reader.create_run(record(run_id, now - 60 + n))
    created: list[str] = []
    done, started = anyio.Event(), anyio.Event()
    more = [anyio.Event()]  # set at each run created

    async def create() -> None:
        n = 0
        while not done.is_set():
            run_id = f"new{n:04}"
            await writer.create_run(record(run_id, time.time(), status=RunStatus.QUEUED))
            created.append(run_id)
            more[0].set()
            n += 1
            if n == 3:
                started.set()
            await anyio.lowlevel.checkpoint()

    seen: list[str] = []
    async with anyio.create_task_group() as group:
        group.start_soon(create)
        await started.wait()
        after = None
        while True:
            page = await reader.list_runs(RunQuery(limit=7, after=after))
            seen.extend(run.run_id for run in page)
            for _ in range(2):  # more runs created between pages, however slow the writes
                more[0] = anyio.Event()
                await more[0].wait()
            if len(page) < 7:
                break
            after = page[-1].key
        done.set()
    assert len(created) > 10
    assert len(seen) == len(set(seen)), "a run was listed twice"
    assert [run_id for run_id in seen if run_id.startswith("old")] == before[::-1]


async def test_prune_removes_old_finished_runs_with_their_traces(backend: Backend) -> None:
    store = backend.open()
    trace = [("a", "set", 1.0, 0.1, "ok")]
    await store.create_run(record("old-done", 10.0, trace=trace))
    await store.create_run(record("old-failed", 11.0, status=RunStatus.FAILED, trace=trace))
    await store.create_run(record("old-running", 12.0, status=RunStatus.QUEUED))
    await store.create_run(record("new-done", 30.0, trace=trace))
    claimed = await store.claim_runs("w", 1, 30.0)
    assert [run.run_id for run in claimed] == ["old-running"]
    await store.checkpoint("old-running", "w", {"steps": 1}, trace)

    assert await store.prune_runs(20.0) == 2
    assert await listed(store) == ["new-done", "old-running"]
    assert await store.get_run_record("old-done") is None
    assert await store.get_run("old-failed") is None
    kept = await store.get_run_record("old-running")
    assert kept is not None and kept.trace == trace
    assert await store.prune_runs(20.0) == 0
    if backend.persistent:  # no trace or checkpoint rows are left behind
        tables = ["run_trace", "checkpoints"] if backend.kind == "sqlite" else ["run_trace"]
        for table in tables:
            rows = backend.execute(f"SELECT run_id FROM {table} WHERE run_id LIKE ?", ["old-%"])
            assert {run_id for (run_id,) in rows} <= {"old-running"}


async def test_a_running_run_shows_its_start_and_handled_errors_from_its_checkpoint(
    store: Store,
) -> None:
    await store.create_run(record("r", 10.0, status=RunStatus.QUEUED))
    await store.claim_runs("w", 1, 30.0)
    await store.checkpoint("r", "w", {"started_at": 10.25, "has_errors": True}, [])
    (run,) = await store.list_runs(RunQuery.build())
    assert (run.status, run.started_at, run.has_errors) == (RunStatus.RUNNING, 10.25, True)


async def test_listing_reads_an_index(backend: Backend) -> None:
    if backend.kind != "sqlite":
        if backend.persistent:
            backend.open()  # creates the schema
            await backend.stores[-1].list_flows()
            names = {row[0] for row in backend.execute("SELECT indexname FROM pg_indexes")}
            assert {"runs_created", "runs_flow_created", "runs_user_created"} <= names
        return
    await backend.open().list_flows()  # creates the schema
    for sql, index in [
        ("SELECT run_id FROM runs ORDER BY created_at DESC, run_id DESC LIMIT 5", "runs_created"),
        (
            "SELECT run_id FROM runs WHERE flow = 'x' ORDER BY created_at DESC, run_id DESC",
            "runs_flow_created",
        ),
    ]:
        plan = " ".join(str(row) for row in backend.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert index in plan, plan


async def test_the_memory_store_keeps_the_most_recent_finished_runs() -> None:
    store = MemoryStore(keep_finished_runs=3)
    await store.create_run(record("running", 1.0, status=RunStatus.QUEUED))
    for n in range(5):
        await store.save_run(RunResult(f"s{n}", "orders", 1, RunStatus.COMPLETED, created_at=n))
    assert await listed(store) == ["s4", "s3", "s2", "running"]
    assert await store.get_run("s1") is None
    await store.request_cancel("running")  # now finished: the oldest finished goes
    assert await listed(store) == ["s4", "s3", "running"]


def test_cursors_and_limits_are_checked() -> None:
    assert decode_cursor(encode_cursor((1.25, "abc"))) == (1.25, "abc")
    for bad in ("", "nope", encode_cursor((1.0, "x"))[:-2] + "!!", "WzEsMl0"):
        with pytest.raises(ValueError, match="cursor"):
            RunQuery.build(cursor=bad)
    for limit in (0, -1, True):
        with pytest.raises(ValueError, match="limit"):
            RunQuery.build(limit=limit)
    with pytest.raises(ValueError):
        RunQuery.build(status="DONE")


# -- the engine ------------------------------------------------------------------------------

CHILD = {"flow": "child", "start": "a", "blocks": {"a": {"type": "return", "value": 1}}}
PARENT = {
    "flow": "parent",
    "start": "call",
    "blocks": {
        "call": {"type": "call_flow", "flow": "child", "next": "fail"},
        "fail": {"type": "fail", "code": "nope", "message": "no"},
    },
}
HOLD = {"flow": "hold", "start": "h", "blocks": {"h": {"type": "hold"}}}


async def publish(engine: Engine, *documents: dict[str, Any]) -> None:
    for document in documents:
        await engine.start(document["flow"], await engine.add_version(document))


async def test_an_engine_lists_its_runs_finished_and_in_flight(
    database_url: tuple[str, str | None],
) -> None:
    hold = HoldBlock()
    registry = BlockRegistry([hold.definition])
    async with Engine(database_url[1], registry=registry) as engine:
        await publish(engine, CHILD, PARENT, HOLD)
        ann = Identity(user_id="ann")
        parent = await engine.call_flow("parent", identity=ann)
        lone = await engine.call_flow("child", identity=Identity(user_id="bob"))
        held = await engine.call_flow("hold", wait=False)
        await hold.reached.wait()

        page = await engine.list_runs()
        assert isinstance(page, RunPage) and page.next_cursor is None
        (child,) = [r for r in page.runs if r.parent_run_id == parent.run_id]
        assert [r.run_id for r in page.runs] == [held, lone.run_id, child.run_id, parent.run_id]
        assert page.runs[0].status is RunStatus.RUNNING  # in flight, listed all the same
        assert page.runs[0].started_at is not None
        assert (page.runs[-1].status, page.runs[-1].error_code) == (RunStatus.FAILED, "nope")
        assert child.root_run_id == parent.run_id and child.depth == 1

        def ids(page: RunPage) -> list[str]:
            return [r.run_id for r in page.runs]

        assert ids(await engine.list_runs(root_run_id=parent.run_id)) == [
            child.run_id,
            parent.run_id,
        ]
        assert ids(await engine.list_runs(user_id="bob")) == [lone.run_id]
        assert ids(await engine.list_runs(flow="child", status="COMPLETED")) == [
            lone.run_id,
            child.run_id,
        ]
        assert ids(await engine.list_runs(status=[RunStatus.RUNNING])) == [held]
        assert ids(await engine.list_runs(since=page.runs[1].created_at)) == [held, lone.run_id]

        first = await engine.list_runs(limit=3)
        assert ids(first) == ids(page)[:3] and first.next_cursor is not None
        rest = await engine.list_runs(limit=3, cursor=first.next_cursor)
        assert ids(rest) == ids(page)[3:] and rest.next_cursor is None

        assert await engine.prune_runs(before=time.time()) == 3  # not the held one
        assert ids(await engine.list_runs()) == [held]
        hold.release.set()
        await engine.wait_for(held)
        assert (await engine.list_runs()).runs[0].status is RunStatus.COMPLETED


async def test_an_in_memory_engine_keeps_limits_keep_finished_runs() -> None:
    async with Engine(limits=Limits(keep_finished_runs=2)) as engine:
        await publish(engine, CHILD)
        run_ids = [(await engine.call_flow("child")).run_id for _ in range(4)]
        assert [r.run_id for r in (await engine.list_runs()).runs] == run_ids[:1:-1]
    assert Limits().keep_finished_runs == 10_000


async def test_the_page_is_json() -> None:
    async with Engine() as engine:
        await publish(engine, CHILD)
        result = await engine.call_flow("child")
        page = (await engine.list_runs()).to_json()
    assert page["next_cursor"] is None
    assert page["runs"][0]["run_id"] == result.run_id
    assert page["runs"][0]["status"] == "COMPLETED"
    assert set(page["runs"][0]) == {
        "run_id",
        "flow",
        "version",
        "status",
        "has_errors",
        "error_code",
        "user_id",
        "parent_run_id",
        "root_run_id",
        "depth",
        "created_at",
        "started_at",
        "finished_at",
    }
