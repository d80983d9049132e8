"""What one durable write costs: a bare commit, and one ``checkpoint()`` of a run.

For SQLite (WAL mode) with ``synchronous=FULL`` (the default: an acknowledged commit
survives power loss) and ``NORMAL`` (survives a process crash only), and for PostgreSQL
with ``synchronous_commit`` on (the server default) and off:

- ``bare commit``: one ``INSERT`` of a small row and its ``COMMIT``, through the driver
  directly (sqlite3; psycopg's async connection in autocommit);
- ``checkpoint``: one ``Store.checkpoint()`` of a small run state with one trace row,
  through the store, as the engine calls it after each block.

Prints the median, 10th and 90th percentile in microseconds per call. PostgreSQL is the
server named by ``FLOWWARDEN_TEST_POSTGRES_URL``, or a throwaway cluster started as the
tests do, with fsync on; without either, its lines are skipped. The database files go
to a temporary directory on the same file system as the system's temporary files,
so the fsync figures are that disk's.

Run with ``python bench/store_commit.py`` (about a minute).
"""

from __future__ import annotations

import contextlib
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

# Runnable from a checkout, installed or not.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pgserver import (  # noqa: E402
    PostgresServer,
    bare_commits,
    fresh_database,
    postgres_server,
    with_synchronous_commit,
)

from engine._model.records import RunHeader, RunRecord  # noqa: E402
from engine._model.types import RunStatus  # noqa: E402
from engine._store.base import Store  # noqa: E402
from engine._store.postgres import PostgresStore  # noqa: E402
from engine._store.sqlite import SQLiteStore  # noqa: E402
from permissions import ANONYMOUS  # noqa: E402

CALLS = 400
STATE = {"vars": {"amount": 5000, "approved": True}, "steps": 3, "positions": {"main": "b"}}
TRACE = [("decide", "set", 1_700_000_000.0, 0.000012, "ok")]


def report(name: str, samples: list[float]) -> None:
    cuts = statistics.quantiles(samples, n=10)
    print(
        f"{name:<44} median {statistics.median(samples) * 1e6:8.1f} µs"
        f"   p10 {cuts[0] * 1e6:8.1f}   p90 {cuts[-1] * 1e6:8.1f}"
    )


async def timed(call: Callable[[], Awaitable[object]]) -> list[float]:
    for _ in range(20):  # warm up: connections, prepared statements, file growth
        await call()
    samples = []
    for _ in range(CALLS):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def checkpoint_samples(store: Store, run_id: str) -> list[float]:
    await store.create_run(
        RunRecord(
            RunHeader(run_id, "f", 1, ANONYMOUS, {}, created_at=time.time()), RunStatus.QUEUED
        )
    )
    (run,) = await store.claim_runs("bench-worker", 1, 3600.0)
    return await timed(lambda: store.checkpoint(run.run_id, "bench-worker", STATE, TRACE))


async def sqlite_bench(folder: Path) -> None:
    for mode in ("FULL", "NORMAL"):
        db = sqlite3.connect(folder / f"bare-{mode}.db", isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {mode}")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT)")

        async def bare(db: sqlite3.Connection = db) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (payload) VALUES (?)", ("x" * 100,))
            db.execute("COMMIT")

        report(f"SQLite synchronous={mode}: bare commit", await timed(bare))
        db.close()
        store = SQLiteStore(folder / f"store-{mode}.db", synchronous=mode)  # type: ignore[arg-type]
        try:
            report(f"SQLite synchronous={mode}: checkpoint()", await checkpoint_samples(store, "r"))
        finally:
            await store.close()


async def postgres_bench(server: PostgresServer) -> None:
    with fresh_database(server) as url:
        for mode in ("on", "off"):
            mode_url = with_synchronous_commit(url, mode)
            async with bare_commits(mode_url, f"t_{mode}") as bare:
                report(f"PostgreSQL synchronous_commit={mode}: bare commit", await timed(bare))
            store = PostgresStore(mode_url)
            try:
                samples = await checkpoint_samples(store, f"r-{mode}")
                report(f"PostgreSQL synchronous_commit={mode}: checkpoint()", samples)
            finally:
                await store.close()


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="flowwarden-bench-") as folder:
        await sqlite_bench(Path(folder))
    with postgres_server(fsync=True) as server:
        if isinstance(server, str):
            print(f"PostgreSQL skipped: {server}")
        else:
            await postgres_bench(server)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(main)
