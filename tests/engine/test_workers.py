"""Several worker processes draining one queue: every run claimed once, run once.

Each worker prints how many runs it claimed when it stops; the claims must add up to
the number of runs, and each worker must be the recorded owner of exactly that many
finished runs. A run claimed twice would make the sum too large, or leave two
executions in its trace.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from durable_support import TINY, WorkerProcess, query, worker_processes
from pgserver import PostgresServer, fresh_schema

from engine import Engine, RunStatus
from engine._model.records import RunRecord
from engine._store.postgres import PostgresStore

UNFINISHED = "SELECT count(*) FROM runs WHERE status IN ('QUEUED', 'RUNNING')"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # psycopg's async connections need asyncio


@pytest.fixture(params=[("postgresql", 4, 2000), ("sqlite", 2, 300)], ids=["postgresql", "sqlite"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    """A store URL on a new database, how many workers, how many runs."""
    kind, workers, runs = request.param
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}", workers, runs
        return
    postgres: PostgresServer | str = request.getfixturevalue("postgres")
    if isinstance(postgres, str):
        pytest.skip(postgres)
    with fresh_schema(postgres) as url:
        yield url, workers, runs


async def drained(url: str) -> None:
    """Return once no run is QUEUED or RUNNING."""
    with anyio.fail_after(300):
        while True:
            ((unfinished,),) = await anyio.to_thread.run_sync(query, url, UNFINISHED)
            if not unfinished:
                return
            await anyio.sleep(0.1)


async def stopped_claims(workers: list[WorkerProcess]) -> dict[str | None, int]:
    """SIGTERM every worker; how many runs each claimed, by owner."""
    for worker in workers:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        assert await worker.exited(60) == 0, worker.output()
    return {worker.owner: worker.claimed() for worker in workers}


async def read_records(engine: Engine, run_ids: list[str]) -> dict[str, RunRecord]:
    records: dict[str, RunRecord] = {}

    async def read(ids: list[str]) -> None:
        for run_id in ids:
            record = await engine.store.get_run_record(run_id)
            assert record is not None
            records[run_id] = record

    async with anyio.create_task_group() as group:
        for first in range(0, len(run_ids), 250):
            group.start_soon(read, run_ids[first : first + 250])
    return records


def assert_each_ran_once(
    records: dict[str, RunRecord], claims: dict[str | None, int], total: int
) -> None:
    inputs = {run_id: record.header.inputs["n"] for run_id, record in records.items()}
    for run_id, record in records.items():
        assert (record.status, record.output) == (RunStatus.COMPLETED, inputs[run_id] * 2)
        assert [entry[0] for entry in record.trace] == ["double", "done"]  # ran once
    owners = Counter(record.owner for record in records.values())
    assert sum(claims.values()) == total  # no run claimed twice
    assert owners == Counter(claims)  # and each by the worker that finished it


async def accept(engine: Engine, numbers: range, run_ids: list[str]) -> None:
    for n in numbers:
        run_ids.append(await engine.call_flow("tiny", {"n": n}, wait=False))


async def test_workers_drain_a_queue_and_claim_each_run_exactly_once(
    queue: tuple[str, int, int], tmp_path: Path
) -> None:
    url, count, total = queue
    async with Engine(url, execute=False) as engine:
        await engine.start("tiny", await engine.add_version(TINY))
        run_ids: list[str] = []
        async with anyio.create_task_group() as group:
            for first in range(0, total, total // 8):
                numbers = range(first, min(first + total // 8, total))
                group.start_soon(accept, engine, numbers, run_ids)
        assert len(set(run_ids)) == total

        with worker_processes() as workers:
            workers += [
                WorkerProcess(url, tmp_path, f"w{n}", concurrency=8, lease=10.0)
                for n in range(count)
            ]
            for worker in workers:
                await worker.started()
            started = time.perf_counter()
            await drained(url)
            took = time.perf_counter() - started
            claims = await stopped_claims(workers)
        records = await read_records(engine, run_ids)

    assert_each_ran_once(records, claims, total)
    print(f"{count} workers drained {total} runs in {took:.1f} s ({total / took:.0f}/s)")


# -- PostgreSQL: workers woken by notifications -------------------------------------------

# A run that takes a while: long enough to be in flight when its worker is stopped.
PAUSES = {
    "flow": "pauses",
    "start": "first",
    "blocks": {
        "first": {"type": "wait", "seconds": 1.0, "next": "second"},
        "second": {"type": "wait", "seconds": 1.0, "next": "third"},
        "third": {"type": "wait", "seconds": 1.0, "next": "done"},
        "done": {"type": "return", "value": "=run.id"},
    },
}
SLOW_POLL = 30.0  # seconds: a worker that polled only would be this late


@pytest.fixture
def schema_url(postgres: PostgresServer | str) -> Iterator[str]:
    if isinstance(postgres, str):
        pytest.skip(postgres)
    with fresh_schema(postgres) as url:
        yield url


def listening(url: str) -> int:
    """How many connections listen on the channel of ``url``'s schema."""
    ((schema,),) = query(url, "SELECT current_schema()")
    ((count,),) = query(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE starts_with(query, 'LISTEN ') "
        "AND strpos(query, ?) > 0",
        (schema,),
    )
    return int(count)


async def until(check: Callable[[], bool], seconds: float, what: str) -> None:
    try:
        with anyio.fail_after(seconds):
            while True:
                if await anyio.to_thread.run_sync(check):
                    return
                await anyio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {seconds} s: {what}") from None


async def finished_record(engine: Engine, run_id: str, seconds: float) -> RunRecord:
    with anyio.fail_after(seconds):
        while True:
            record = await engine.store.get_run_record(run_id)
            assert record is not None
            if record.status.finished:
                return record
            await anyio.sleep(0.05)


async def test_a_queued_run_wakes_an_idle_worker_long_before_its_poll(
    schema_url: str, tmp_path: Path
) -> None:
    with worker_processes() as workers:
        workers.append(WorkerProcess(schema_url, tmp_path, "w", lease=10.0, poll=SLOW_POLL))
        await workers[0].started()
        await until(lambda: listening(schema_url) == 1, 30, "the worker listens")
        async with Engine(schema_url, execute=False) as engine:
            await engine.start("tiny", await engine.add_version(TINY))
            for n in range(3):  # again and again: it listens on after each wake
                await anyio.sleep(0.5)  # idle: past its claims, waiting
                run_id = await engine.call_flow("tiny", {"n": n}, wait=False)
                record = await finished_record(engine, run_id, SLOW_POLL)
                assert (record.status, record.output) == (RunStatus.COMPLETED, n * 2)
                assert record.started_at is not None
                assert record.started_at - record.header.created_at < SLOW_POLL / 10


async def test_a_run_handed_back_wakes_another_idle_worker(schema_url: str, tmp_path: Path) -> None:
    with worker_processes() as workers:
        async with Engine(schema_url, execute=False) as engine:
            await engine.start("pauses", await engine.add_version(PAUSES))
            workers += [
                WorkerProcess(schema_url, tmp_path, name, concurrency=1, poll=SLOW_POLL)
                for name in "ab"
            ]
            for worker in workers:
                await worker.started()
            await until(lambda: listening(schema_url) == 2, 30, "both listen")
            run_id = await engine.call_flow("pauses", wait=False)
            await until(
                lambda: query(schema_url, "SELECT status FROM runs") == [("RUNNING",)],
                SLOW_POLL / 10,
                "a worker claims the run",
            )
            ((owner,),) = query(schema_url, "SELECT owner FROM runs")
            first, second = sorted(workers, key=lambda worker: worker.owner != owner)
            stopped = time.monotonic()
            first.signal(signal.SIGTERM)  # ends its block, checkpoints and hands the run back
            assert await first.exited(30) == 0, first.output()
            record = await finished_record(engine, run_id, SLOW_POLL)
            # the blocks left, and the hand-back, not a poll
            assert time.monotonic() - stopped < SLOW_POLL / 5
        assert (record.status, record.output, record.owner) == (
            RunStatus.COMPLETED,
            run_id,
            second.owner,
        )
        assert first.claimed() == 1
        assert [entry[0] for entry in record.trace] == ["first", "second", "third", "done"]


async def test_a_run_queued_without_a_notification_is_found_by_the_poll(
    schema_url: str, tmp_path: Path
) -> None:
    with worker_processes() as workers:
        async with Engine(schema_url, execute=False) as engine:
            await engine.start("tiny", await engine.add_version(TINY))
            # held by a process that died, as far as the worker can tell: no notification
            orphan = await engine.call_flow("tiny", {"n": 1}, wait=False)
            query(
                schema_url,
                "UPDATE runs SET status = 'RUNNING', owner = 'gone', lease_expires = ? "
                "WHERE run_id = ? RETURNING run_id",
                (time.time() + 3600, orphan),
            )
            workers.append(WorkerProcess(schema_url, tmp_path, "w", lease=10.0, poll=1.0))
            await workers[0].started()
            await until(lambda: listening(schema_url) == 1, 30, "the worker listens")
            await anyio.sleep(1.5)  # past its first claims: it waits now
            expire = "UPDATE runs SET lease_expires = 0 WHERE run_id = ? RETURNING run_id"
            query(schema_url, expire, (orphan,))
            record = await finished_record(engine, orphan, 30)
            assert (record.status, record.output) == (RunStatus.COMPLETED, 2)

            # the listening connection dies; what is queued meanwhile is not lost
            query(
                schema_url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE starts_with(query, 'LISTEN ') AND strpos(query, current_schema()) > 0",
            )
            queued = await engine.call_flow("tiny", {"n": 2}, wait=False)
            record = await finished_record(engine, queued, 30)
            assert (record.status, record.output) == (RunStatus.COMPLETED, 4)
            await until(lambda: listening(schema_url) == 1, 30, "the worker listens again")
        assert workers[0].process.poll() is None, workers[0].output()


async def test_store_notifications_reach_listeners_of_the_same_schema_only(
    postgres: PostgresServer | str,
) -> None:
    if isinstance(postgres, str):
        pytest.skip(postgres)
    with fresh_schema(postgres) as url, fresh_schema(postgres) as other_url:
        listener, other, producer = (PostgresStore.from_url(u) for u in (url, other_url, url))
        try:
            for store in (listener, other):
                with anyio.fail_after(30):
                    await store.wait_for_queued()  # starts listening: returns at once
            async with Engine(producer, execute=False) as engine:
                await engine.start("tiny", await engine.add_version(TINY))
                await engine.call_flow("tiny", {"n": 1}, wait=False)
            with anyio.fail_after(10):
                await listener.wait_for_queued()
            with anyio.move_on_after(1.0) as idle:
                await other.wait_for_queued()
            assert idle.cancelled_caught  # another schema's queue: not woken
            async with Engine(producer) as engine:  # runs it here: nothing queued
                assert await engine.call_flow("tiny", {"n": 2}) is not None
            with anyio.move_on_after(1.0) as idle:
                await listener.wait_for_queued()
            assert idle.cancelled_caught
        finally:
            for store in (listener, other, producer):
                await store.close()


async def test_notified_workers_claiming_in_batches_give_no_run_to_two_of_them(
    schema_url: str, tmp_path: Path
) -> None:
    total = 1200
    with worker_processes() as workers:
        workers += [
            WorkerProcess(schema_url, tmp_path, f"w{n}", concurrency=8, poll=SLOW_POLL)
            for n in range(3)
        ]
        for worker in workers:
            await worker.started()
        await until(lambda: listening(schema_url) == 3, 30, "every worker listens")
        async with Engine(schema_url, execute=False) as engine:
            await engine.start("tiny", await engine.add_version(TINY))
            run_ids: list[str] = []
            async with anyio.create_task_group() as group:  # queued while workers claim
                for first in range(0, total, total // 8):
                    numbers = range(first, first + total // 8)
                    group.start_soon(accept, engine, numbers, run_ids)
            assert len(set(run_ids)) == total
            await drained(schema_url)
            claims = await stopped_claims(workers)
            records = await read_records(engine, run_ids)
    assert_each_ran_once(records, claims, total)
    assert all(claims.values())  # the notifications reached every worker
