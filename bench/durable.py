"""Durable runs: what a checkpoint after every block costs, and runs per second by workers.

Run by hand from the repository root (a few minutes)::

    python bench/durable.py            # everything
    python bench/durable.py --quick    # small sizes

1. Blocks per second: one run of a chain of N literal ``set`` blocks, executed by the
   engine in this process, with the in-memory store (no checkpoints) and with durable
   stores (a checkpoint after every block): SQLite in WAL mode with
   ``synchronous=FULL`` and ``NORMAL``, PostgreSQL with ``synchronous_commit`` on and
   off. Next to each, in the same database and interleaved with the runs, one bare
   commit: ``INSERT`` of a 100-byte row in its own transaction (SQLite: ``BEGIN
   IMMEDIATE; INSERT; COMMIT`` on a connection of its own; PostgreSQL: one
   autocommitted ``INSERT``), as many in a row as the run has blocks. Both are means
   (whole time / count), so the occasional slow commit counts on both sides: SQLite
   copies its log into the database file every 1000 pages, with an fsync even with
   ``synchronous=NORMAL``. The ratio is the checkpointed block (the interpreter
   included) over the bare commit, the median of paired repetitions.
2. Runs per second with 1, 2 and 4 ``flowwarden worker`` processes on PostgreSQL
   (concurrency 8, poll 0.05 s), draining a queue of tiny runs (``set`` +
   ``return``) queued before they start: finished runs over the time from the first
   run's start to the last run's end, read from the store; and the same tiny flow run
   one after another by the in-memory engine. Next to them, the floor: one process
   doing nothing but the three commits such a run needs (claim, one checkpoint,
   finish) as bare commits one after another, measured in each drain's database just
   before it. A worker can beat it: it claims several runs per statement, writes the
   checkpoint before a ``return`` with the finish, and commits on several connections
   at once, which the server flushes together.

   A figure from before a change cannot come from this process, so either
   ``--compare CHECKOUT`` runs the workers of another checkout (``git worktree add
   ../main main``, say) alternately with this one's, each figure the median of
   ``--repeat`` drains; or ``--baseline RUNS_PER_S`` gives one worker process's figure
   measured before. The last line is PASS when one worker process reaches 3x it
   (the exit status says so too).

   python bench/durable.py --only workers --compare ../main   # this part, compared

PostgreSQL is the server named by ``FLOWWARDEN_TEST_POSTGRES_URL``, or a throwaway
cluster started as the tests start theirs but with fsync on; without either its lines
are skipped. SQLite files go to the system's temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import psycopg
import structlog

ROOT = Path(__file__).resolve().parent.parent
# Not this folder: a benchmark's file name here could hide a standard module.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "engine"))

from durable_support import TINY, WorkerProcess, worker_processes  # noqa: E402
from pgserver import (  # noqa: E402
    PostgresServer,
    bare_commits,
    fresh_database,
    postgres_server,
    with_synchronous_commit,
)

from engine import Engine  # noqa: E402

structlog.configure(  # as in production: filtered by level, loggers bound once
    wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    cache_logger_on_first_use=True,
)

ROWS: list[tuple[str, float, float, float, float]] = []  # name, µs/block, blocks/s, bare, ratio
TARGET = 3.0  # one worker process against the baseline: the issue "Hot paths near the floor"


def chain(n: int) -> dict[str, Any]:
    blocks: dict[str, Any] = {
        f"b{i}": {"type": "set", "values": {"x": i}, "next": f"b{i + 1}"} for i in range(n)
    }
    blocks[f"b{n}"] = {"type": "return", "value": "=vars.x"}
    return {"flow": "chain", "start": "b0", "blocks": blocks}


async def mean_us(call: Callable[[], Awaitable[object]], count: int) -> float:
    """µs per call over ``count`` calls in a row: the occasional slow commit (SQLite
    copying its log into the database file, with an fsync) counts, as it does in a run."""
    started = time.perf_counter()
    for _ in range(count):
        await call()
    return (time.perf_counter() - started) / count * 1e6


async def block_cost(engine: Engine, n: int) -> float:
    """µs per block of one run of the chain (its blocks plus one ``return``)."""
    started = time.perf_counter()
    result = await engine.call_flow("chain")
    elapsed = time.perf_counter() - started
    assert result.output == n - 1, result
    return elapsed / (n + 1) * 1e6


async def measure(
    name: str, url: str | None, bare: Callable[[], Awaitable[object]] | None, n: int, repeat: int
) -> None:
    async with Engine(url) as engine:
        await engine.start("chain", await engine.add_version(chain(n)))
        await block_cost(engine, n)  # warm up: compile, connect, grow the files
        costs, bares, ratios = [], [], []
        for _ in range(repeat):
            cost = await block_cost(engine, n)
            costs.append(cost)
            if bare is not None:
                one = await mean_us(bare, n + 1)
                bares.append(one)
                ratios.append(cost / one)
    cost = statistics.median(costs)
    ROWS.append(
        (
            name,
            cost,
            1e6 / cost,
            statistics.median(bares) if bares else float("nan"),
            statistics.median(ratios) if ratios else float("nan"),
        )
    )
    print(f"  {name}: {cost:.1f} µs per block", file=sys.stderr)


async def sqlite_rows(folder: Path, quick: bool) -> None:
    for mode, n in (("FULL", 100 if quick else 300), ("NORMAL", 500 if quick else 3000)):
        path = folder / f"{mode}.db"
        url = f"sqlite:///{path}?synchronous={mode.lower()}"
        async with Engine(url) as engine:
            await engine.list_flows()  # creates the file and its tables
        db = sqlite3.connect(path, isolation_level=None)
        db.execute(f"PRAGMA synchronous = {mode}")
        db.execute("CREATE TABLE bench_bare (id INTEGER PRIMARY KEY, payload TEXT)")

        async def bare(db: sqlite3.Connection = db) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO bench_bare (payload) VALUES (?)", ("x" * 100,))
            db.execute("COMMIT")

        try:
            await measure(f"SQLite WAL synchronous={mode}", url, bare, n, 3 if quick else 5)
        finally:
            db.close()


async def postgres_rows(server: PostgresServer, quick: bool) -> None:
    with fresh_database(server) as url:
        for mode in ("on", "off"):
            mode_url = with_synchronous_commit(url, mode)
            async with bare_commits(mode_url, f"bench_bare_{mode}") as bare:
                n = 100 if quick else 300
                name = f"PostgreSQL synchronous_commit={mode}"
                await measure(name, mode_url, bare, n, 3 if quick else 5)


WorkerRow = tuple[str, float, float | None]  # name, runs/s here, runs/s of the baseline


async def worker_rates(
    server: PostgresServer, quick: bool, compare: Path | None, repeat: int
) -> tuple[list[WorkerRow], float]:
    """Runs per second with 1, 2 and 4 worker processes of this checkout (and of the
    ``compare`` checkout, alternating, in the same run), medians of ``repeat``; and the
    floor: the runs per second of a process that does nothing but a tiny run's three
    commits (claim, checkpoint, finish) one after another, as bare commits."""
    total = 300 if quick else 1500
    rows: list[WorkerRow] = []
    commits: list[float] = []  # µs per bare commit, measured before each drain
    for count in (1, 2, 4):
        here: list[float] = []
        there: list[float] = []
        for rep in range(repeat):
            roots = [(ROOT, here)] + ([(compare, there)] if compare is not None else [])
            if rep % 2:
                roots.reverse()  # neither checkout always runs first
            for root, rates in roots:
                rate, commit = await _drain_rate(server, root, count, total)
                rates.append(rate)
                commits.append(commit)
                print(f"  {count} workers of {root}: {rate:.0f} runs/s", file=sys.stderr)
        name = f"{count} worker process{'es' if count > 1 else ''}"
        rows.append((name, statistics.median(here), statistics.median(there) if there else None))
    async with Engine() as engine:
        await engine.start("tiny", await engine.add_version(TINY))
        started = time.perf_counter()
        for n in range(total):
            await engine.call_flow("tiny", {"n": n})
        rows.append(
            ("in-memory engine, one process", total / (time.perf_counter() - started), None)
        )
    return rows, 1e6 / (3 * statistics.median(commits))


async def _drain_rate(
    server: PostgresServer, root: Path, count: int, total: int
) -> tuple[float, float]:
    """Runs per second of ``count`` workers of the checkout at ``root`` draining ``total``
    queued tiny runs, and µs per bare commit in the same database just before."""
    with fresh_database(server) as url, tempfile.TemporaryDirectory() as folder:
        await _queue(url, root, total)
        async with bare_commits(url, "bench_bare") as bare:
            await mean_us(bare, 50)  # warm up
            commit = await mean_us(bare, 600)
        with worker_processes() as workers:
            workers += [
                WorkerProcess(url, Path(folder), f"w{i}", concurrency=8, lease=30.0, root=root)
                for i in range(count)
            ]
            with anyio.fail_after(600):
                await _drained(url)
        first, last, done = await _span(url)
    assert done == total, f"{done} of {total} runs completed"
    return done / (last - first), commit


_QUEUE = """
import sys, anyio, json
from engine import Engine
async def main(url, total, tiny):
    async with Engine(url, execute=False) as engine:
        await engine.start("tiny", await engine.add_version(tiny))
        for n in range(total):
            await engine.call_flow("tiny", {"n": n}, wait=False)
anyio.run(main, sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))
"""


async def _queue(url: str, root: Path, total: int) -> None:
    """Queue ``total`` tiny runs with the engine of the checkout at ``root``, which
    creates the database's tables as that checkout's schema has them."""
    command = [sys.executable, "-c", _QUEUE, url, str(total), json.dumps(TINY)]
    environment = {**os.environ, "PYTHONPATH": str(root)}
    await anyio.run_process(
        command, cwd=root, env=environment, stdout=subprocess.DEVNULL, stderr=None
    )


async def _drained(url: str) -> None:
    """Return once no run is QUEUED or RUNNING."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            cursor = await conn.execute(
                "SELECT count(*) FROM runs WHERE status IN ('QUEUED', 'RUNNING')"
            )
            row = await cursor.fetchone()
            if row is not None and row[0] == 0:
                return
            await anyio.sleep(0.2)


async def _span(url: str) -> tuple[float, float, int]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT min(started_at), max(finished_at), count(*) FROM runs "
            "WHERE status = 'COMPLETED'"
        )
        row = await cursor.fetchone()
        assert row is not None
        return float(row[0]), float(row[1]), int(row[2])


async def main(
    quick: bool, only: str | None, compare: Path | None, baseline: float | None, repeat: int
) -> int:
    n = 500 if quick else 5000
    if only in (None, "sqlite", "postgresql"):
        await measure("in-memory engine (no checkpoints)", None, None, n, 3 if quick else 5)
    if only in (None, "sqlite"):
        with tempfile.TemporaryDirectory(prefix="flowwarden-bench-") as folder:
            await sqlite_rows(Path(folder), quick)
    rates: list[WorkerRow] = []
    floor = float("nan")
    with (
        contextlib.nullcontext("skipped")
        if only == "sqlite"
        else postgres_server(fsync=True) as server
    ):
        if isinstance(server, str):
            print(f"PostgreSQL skipped: {server}", file=sys.stderr)
        else:
            if only != "workers":
                await postgres_rows(server, quick)
            rates, floor = await worker_rates(server, quick, compare, repeat)

    if ROWS:
        print()
        print(f"{'store and mode':<38} {'µs/block':>9} {'blocks/s':>9} {'bare µs':>8} {'ratio':>6}")
        for name, cost, per_second, bare, ratio in ROWS:
            print(f"{name:<38} {cost:9.1f} {per_second:9.0f} {bare:8.1f} {ratio:6.2f}")
        print("(ratio: checkpointed block / one bare commit in the same database and mode)")
    if not rates:
        return 0
    print()
    against = "compared" if compare is not None else "baseline"
    print(
        f"{'tiny runs (set + return) on PostgreSQL':<38} {'runs/s':>9} {against:>9} "
        f"{'ratio':>6} {'floor':>6} {'/floor':>6}"
    )
    for name, rate, other in rates:
        if name.startswith("in-memory"):
            print(f"{name:<38} {rate:9.0f}")
            continue
        if other is None and baseline is not None and name.startswith("1 "):
            other = baseline
        versus = f"{other:9.0f} {rate / other:6.2f}" if other else f"{'-':>9} {'-':>6}"
        print(f"{name:<38} {rate:9.0f} {versus} {floor:6.0f} {rate / floor:6.2f}")
    print(
        "(floor: one process doing only a tiny run's three commits, claim, checkpoint and\n"
        " finish, as bare commits one after another, in the same server; medians of "
        f"{repeat})"
    )
    one, other = rates[0][1], rates[0][2] if rates[0][2] is not None else baseline
    if other is None:
        print("1 worker process: no baseline (--compare CHECKOUT or --baseline RUNS_PER_S)")
        return 0
    verdict = "PASS" if one >= TARGET * other else "FAIL"
    print(
        f"1 worker process: {one:.0f} runs/s, {one / other:.2f}x the {against} "
        f"{other:.0f} (target {TARGET:g}x): {verdict}"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--only", choices=["sqlite", "postgresql", "workers"], help="one part only")
    parser.add_argument(
        "--compare",
        metavar="CHECKOUT",
        type=Path,
        help="also run the workers of another checkout (its engine package), alternating "
        "with this one's, and compare",
    )
    parser.add_argument(
        "--baseline",
        metavar="RUNS_PER_S",
        type=float,
        help="without --compare: one worker process's figure to compare with",
    )
    parser.add_argument(
        "--repeat", metavar="N", type=int, default=3, help="worker drains per figure (3)"
    )
    arguments = parser.parse_args()
    if arguments.compare is not None and not (arguments.compare / "engine").is_dir():
        parser.error(f"{arguments.compare} holds no engine package")
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(
            anyio.run(
                main,
                arguments.quick,
                arguments.only,
                arguments.compare.resolve() if arguments.compare else None,
                arguments.baseline,
                arguments.repeat,
            )
        )
