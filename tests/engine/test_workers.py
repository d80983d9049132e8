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
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from durable_support import TINY, WorkerProcess, query, worker_processes
from pgserver import PostgresServer, fresh_schema

from engine import Engine, RunStatus
from engine._model.records import RunRecord

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


async def test_workers_drain_a_queue_and_claim_each_run_exactly_once(
    queue: tuple[str, int, int], tmp_path: Path
) -> None:
    url, count, total = queue
    async with Engine(url, execute=False) as engine:
        await engine.start("tiny", await engine.add_version(TINY))
        run_ids: list[str] = []

        async def accept(numbers: range) -> None:
            for n in numbers:
                run_ids.append(await engine.call_flow("tiny", {"n": n}, wait=False))

        async with anyio.create_task_group() as group:
            for first in range(0, total, total // 8):
                group.start_soon(accept, range(first, min(first + total // 8, total)))
        assert len(set(run_ids)) == total

        with worker_processes() as workers:
            workers += [
                WorkerProcess(url, tmp_path, f"w{n}", concurrency=8, lease=10.0)
                for n in range(count)
            ]
            for worker in workers:
                await worker.started()
            started = time.perf_counter()
            with anyio.fail_after(300):
                while True:
                    ((unfinished,),) = await anyio.to_thread.run_sync(
                        query,
                        url,
                        "SELECT count(*) FROM runs WHERE status IN ('QUEUED', 'RUNNING')",
                    )
                    if not unfinished:
                        break
                    await anyio.sleep(0.1)
            drained = time.perf_counter() - started
            for worker in workers:
                worker.signal(signal.SIGTERM)
            for worker in workers:
                assert await worker.exited(60) == 0, worker.output()
            claims = {worker.owner: worker.claimed() for worker in workers}

        records: dict[str, RunRecord] = {}

        async def read(ids: list[str]) -> None:
            for run_id in ids:
                record = await engine.store.get_run_record(run_id)
                assert record is not None
                records[run_id] = record

        async with anyio.create_task_group() as group:
            for first in range(0, total, 250):
                group.start_soon(read, run_ids[first : first + 250])

    inputs = {run_id: record.header.inputs["n"] for run_id, record in records.items()}
    for run_id, record in records.items():
        assert (record.status, record.output) == (RunStatus.COMPLETED, inputs[run_id] * 2)
        assert [entry[0] for entry in record.trace] == ["double", "done"]  # ran once
    owners = Counter(record.owner for record in records.values())
    assert sum(claims.values()) == total  # no run claimed twice
    assert owners == Counter(claims)  # and each by the worker that finished it
    print(f"{count} workers drained {total} runs in {drained:.1f} s ({total / drained:.0f}/s)")
