"""Run steps: what keeping the variables after every block costs a durable run.

Run by hand from the repository root (a minute or two)::

    python bench/steps.py            # SQLite and PostgreSQL
    python bench/steps.py --quick    # fewer repetitions

One run of a chain of N ``set`` blocks (each adds a 100-byte string to the variables,
so the later steps reach the bounds), executed by the engine in this process on a
durable store, with steps kept as the store keeps them, and the same run with the step
writes taken out in the same process (the floor): on SQLite the fold reads no variables
and keeps no steps, on PostgreSQL the checkpoint statement's step clause is one that
writes nothing. The two alternate; each figure is the median of the repetitions' µs
per block, the ratio the median of the paired ratios. PASS: the ratio is at most 1.25.

PostgreSQL is the server named by ``FLOWWARDEN_TEST_POSTGRES_URL``, or a throwaway
cluster started with fsync on; without either its lines are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import structlog

ROOT = Path(__file__).resolve().parent.parent
# Not this folder: a benchmark's file name here could hide a standard module.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pgserver import fresh_database, postgres_server, with_synchronous_commit  # noqa: E402

from engine import Engine  # noqa: E402
from engine._store import postgres, postgres_writes, sqlite_log, steps  # noqa: E402

structlog.configure(
    wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    cache_logger_on_first_use=True,
)
LIMIT = 1.25


def chain(n: int) -> dict[str, Any]:
    blocks: dict[str, Any] = {
        f"b{i}": {"type": "set", "values": {f"v{i}": "x" * 100}, "next": f"b{i + 1}"}
        for i in range(n)
    }
    blocks[f"b{n}"] = {"type": "return", "value": 1}
    return {"flow": "chain", "start": "b0", "blocks": blocks}


@contextlib.contextmanager
def without_steps(kind: str) -> Iterator[None]:
    """The store as it would be if it kept no steps (the floor)."""
    if kind == "sqlite":  # the fold neither reads the variables nor writes steps
        saved = sqlite_log.keep_steps, sqlite_log.STEP_VARIABLES
        sqlite_log.keep_steps = lambda *args: None
        sqlite_log.STEP_VARIABLES = "NULL"
        try:
            yield
        finally:
            sqlite_log.keep_steps, sqlite_log.STEP_VARIABLES = saved
    else:
        saved_statement = postgres.CHECKPOINT
        postgres.CHECKPOINT = postgres_writes.CHECKPOINT.replace(
            steps.PG_STEP, "s AS (SELECT %s::text, %s::text, %s::int)"
        )
        try:
            yield
        finally:
            postgres.CHECKPOINT = saved_statement


async def per_block(engine: Engine, n: int) -> float:
    started = time.perf_counter()
    result = await engine.call_flow("chain")
    elapsed = time.perf_counter() - started
    assert result.output == 1, result
    return elapsed / (n + 1) * 1e6


async def measure(name: str, kind: str, url: str, n: int, repeat: int) -> tuple[str, ...]:
    async with Engine(url) as engine:
        await engine.start("chain", await engine.add_version(chain(n)))
        await per_block(engine, n)  # warm up
        with without_steps(kind):
            await per_block(engine, n)
        kept, floor, ratios = [], [], []
        for _ in range(repeat):
            cost = await per_block(engine, n)
            with without_steps(kind):
                bare = await per_block(engine, n)
            kept.append(cost)
            floor.append(bare)
            ratios.append(cost / bare)
        run_id = (await engine.list_runs(limit=1)).runs[0].run_id
        kept_steps = await engine.run_steps(run_id)
        assert kept_steps is not None
    ratio = statistics.median(ratios)
    verdict = "PASS" if ratio <= LIMIT else "FAIL"
    print(f"  {name}: {statistics.median(kept):.1f} µs per block", file=sys.stderr)
    return (
        name,
        f"{statistics.median(kept):.1f}",
        f"{statistics.median(floor):.1f}",
        f"{ratio:.3f}",
        verdict,
    )


async def main(quick: bool) -> None:
    repeat = 5 if quick else 9
    rows = []
    with tempfile.TemporaryDirectory(prefix="flowwarden-bench-") as folder:
        for mode, n in (("normal", 600), ("full", 200)):
            url = f"sqlite:///{Path(folder) / mode}.db?synchronous={mode}"
            rows.append(await measure(f"SQLite synchronous={mode}", "sqlite", url, n, repeat))
    with postgres_server(fsync=True) as server:
        if isinstance(server, str):
            print(f"PostgreSQL skipped: {server}", file=sys.stderr)
        else:
            with fresh_database(server) as url:
                for mode in ("off", "on"):
                    name = f"PostgreSQL synchronous_commit={mode}"
                    mode_url = with_synchronous_commit(url, mode)
                    rows.append(await measure(name, "postgresql", mode_url, 200, repeat))
    print()
    print(f"{'store':<36} {'µs/block':>9} {'floor µs':>9} {'ratio':>6}")
    for name, cost, floor, ratio, verdict in rows:
        print(f"{name:<36} {cost:>9} {floor:>9} {ratio:>6} {verdict}")
    print(f"(floor: the same run without step writes; PASS: ratio <= {LIMIT})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    arguments = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(main, arguments.quick)
