"""Durable runs under faults, with real processes: the database restarted, a worker
paused past its lease, the SQLite write lock held by another process, SIGTERM to a
worker and to ``flowwarden serve``, cancel and stop from another process.

In each, every accepted run completes exactly once with the right output; no block
that completed runs again (blocks POST to a recorder in this process, which counts
requests and their ``Idempotency-Key``); only a block in flight at a fault may repeat,
with the same key.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from durable_support import CLI, ROOT, Recorder, WorkerProcess, query, worker_processes
from pgserver import PostgresServer, fresh_schema
from test_durable import all_finished, enqueue, publish, trace_counts

from engine import Engine, RunStatus
from engine._http.app import create_app
from engine._http.auth import TokenFileAuthenticator
from engine._model.errors import StoreError, StoreUnavailable
from engine._model.records import RunRecord
from engine._store import MemoryStore
from engine._store.sqlite import SQLiteStore
from engine._store.sqlite_file import parse_url

# Six POSTs with a wait after each: long enough to be in flight when a fault strikes.
STEPS = 6
SLOW_FLOW = {
    "flow": "slow",
    "inputs": {"type": "object", "required": ["url", "n"]},
    "start": "hit1",
    "blocks": {
        **{
            f"hit{i}": {
                "type": "http",
                "method": "POST",
                "url": "=inputs.url",
                "body": {"run": "=run.id", "label": f"hit-{i}"},
                "next": f"pause{i}",
            }
            for i in range(1, STEPS + 1)
        },
        **{
            f"pause{i}": {
                "type": "wait",
                "seconds": 0.4,
                "next": f"hit{i + 1}" if i < STEPS else "done",
            }
            for i in range(1, STEPS + 1)
        },
        "done": {"type": "return", "value": {"n": "=inputs.n"}},
    },
}
SLOW_BLOCKS = {**{f"hit{i}": 1 for i in range(1, STEPS + 1)}}
SLOW_BLOCKS |= {f"pause{i}": 1 for i in range(1, STEPS + 1)} | {"done": 1}

# A child with one effect before a long wait and one after it, and two kinds of parent.
SLEEPY_FLOW = {
    "flow": "sleepy",
    "inputs": {"type": "object", "required": ["url", "nap"]},
    "start": "before",
    "blocks": {
        "before": {
            "type": "http",
            "method": "POST",
            "url": "=inputs.url",
            "body": {"run": "=run.id", "label": "before"},
            "next": "nap",
        },
        "nap": {"type": "wait", "seconds": "=double(inputs.nap)", "next": "after"},
        "after": {
            "type": "http",
            "method": "POST",
            "url": "=inputs.url",
            "body": {"run": "=run.id", "label": "after"},
            "next": "done",
        },
        "done": {"type": "return", "value": {"slept": True}},
    },
}
WAITING_PARENT = {
    "flow": "waiting-parent",
    "start": "call",
    "blocks": {
        "call": {
            "type": "call_flow",
            "flow": "sleepy",
            "inputs": {"url": "=inputs.url", "nap": "=inputs.nap"},
            "result": "child",
            "next": "done",
        },
        "done": {"type": "return", "value": "=vars.child"},
    },
}
DETACHING_PARENT = {
    "flow": "detaching-parent",
    "start": "call",
    "blocks": {
        "call": {
            "type": "call_flow",
            "flow": "sleepy",
            "wait": False,
            "inputs": {"url": "=inputs.url", "nap": "=inputs.nap"},
            "result": "child",
            "next": "nap",
        },
        "nap": {"type": "wait", "seconds": 30, "next": "done"},
        "done": {"type": "return", "value": "=vars.child"},
    },
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # psycopg's async connections need asyncio


def check_exactly_once(
    recorder: Recorder,
    records: dict[str, RunRecord],
    run_ids: list[str],
    labels: list[str],
    *,
    faults: int,
) -> int:
    """Every run COMPLETED once with every block once in its trace; each effect sent
    once, but for at most ``faults`` blocks per run (those in flight at a fault), sent
    again with the same key. How many were repeated."""
    for n, run_id in enumerate(run_ids):
        record = records[run_id]
        assert (record.status, record.error) == (RunStatus.COMPLETED, None), record
        assert record.output == {"n": n}
        assert trace_counts(record) == SLOW_BLOCKS, (run_id, record.trace, record.lease_epoch)
    counts = recorder.counts()
    assert set(counts) == {(run, label) for run in run_ids for label in labels}
    repeated = {pair: count for pair, count in counts.items() if count > 1}
    for run_id in run_ids:
        assert sum(1 for run, _ in repeated if run == run_id) <= faults, repeated
    assert all(count <= 1 + faults for count in counts.values()), repeated
    keys = recorder.keys()
    assert all(len(sent) == 1 for sent in keys.values()), keys
    return len(repeated)


SLOW_LABELS = [f"hit-{i}" for i in range(1, STEPS + 1)]


async def until(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    with anyio.fail_after(seconds):
        while True:
            if condition():
                return
            await anyio.sleep(0.05)


async def started(workers: list[WorkerProcess]) -> None:
    for worker in workers:
        await worker.started()


# -- the database goes away ----------------------------------------------------------------


async def test_workers_carry_on_through_postgresql_restarts(
    postgres: PostgresServer | str, tmp_path: Path
) -> None:
    if isinstance(postgres, str):
        pytest.skip(postgres)
    if postgres.cluster is None:
        pytest.skip("the PostgreSQL server is not a throwaway one: it cannot be restarted")
    with fresh_schema(postgres) as schema, Recorder() as recorder, worker_processes() as workers:
        # the throwaway server acknowledges commits before writing them out, which a
        # crash loses: ask for what a production server does by default
        url = schema.replace("options=", "options=-c%20synchronous_commit%3Don%20", 1)
        async with Engine(url, execute=False) as engine:
            await publish(engine, SLOW_FLOW)
            workers += [WorkerProcess(url, tmp_path, name, concurrency=4) for name in "ab"]
            await started(workers)
            run_ids = await enqueue(engine, "slow", recorder.url, 12)
            for _ in range(3):  # killed as in a crash, two seconds down, three times
                await anyio.sleep(0.8)
                await anyio.to_thread.run_sync(postgres.restart_immediately, 2.0)
            records = await all_finished(engine, run_ids, workers)
        check_exactly_once(recorder, records, run_ids, SLOW_LABELS, faults=3)
        for worker in workers:
            assert worker.process.poll() is None, worker.output()  # both carried on
        failed = query(url, "SELECT count(*) FROM runs WHERE status <> 'COMPLETED'")
        assert failed == [(0,)]


async def test_runs_survive_another_process_holding_the_sqlite_write_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    url = f"sqlite:///{path}?busy_timeout=0.5"
    with Recorder() as recorder, worker_processes() as workers:
        async with Engine(url, execute=False) as engine:
            await publish(engine, SLOW_FLOW)
            workers += [
                WorkerProcess(url, tmp_path, name, concurrency=3, lease=1.5) for name in "ab"
            ]
            await started(workers)
            run_ids = await enqueue(engine, "slow", recorder.url, 6)
            for _ in range(2):  # past the busy timeout and past the lease
                await anyio.sleep(0.8)
                await anyio.to_thread.run_sync(hold_write_lock, path, 2.5)
            records = await all_finished(engine, run_ids, workers)
        check_exactly_once(recorder, records, run_ids, SLOW_LABELS, faults=2)
        for worker in workers:
            assert "database is locked" not in str(
                query(url, "SELECT error FROM runs WHERE error IS NOT NULL")
            )
            assert worker.process.poll() is None, worker.output()


def hold_write_lock(path: Path, seconds: float) -> None:
    """Another process takes the SQLite write lock and keeps it ``seconds``."""
    script = (
        "import sqlite3, sys, time\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
        "db.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "db.execute('ROLLBACK')\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        assert holder.wait(60) == 0


# -- a worker stalls --------------------------------------------------------------------------


async def test_a_lone_worker_paused_past_its_lease_runs_nothing_twice(
    durable_url: str, tmp_path: Path
) -> None:
    with Recorder() as recorder, worker_processes() as workers:
        async with Engine(durable_url, execute=False) as engine:
            await publish(engine, SLOW_FLOW)
            worker = WorkerProcess(durable_url, tmp_path, "lone", concurrency=4, lease=1.0)
            workers.append(worker)
            await worker.started()
            run_ids = await enqueue(engine, "slow", recorder.url, 4)
            for _ in range(3):
                await anyio.sleep(0.7)
                worker.signal(signal.SIGSTOP)
                await anyio.sleep(2.2)  # its leases run out meanwhile
                worker.signal(signal.SIGCONT)
            records = await all_finished(engine, run_ids, workers)
        # nobody else could take the runs over: not even the blocks in flight repeat
        assert check_exactly_once(recorder, records, run_ids, SLOW_LABELS, faults=0) == 0
        for run_id in run_ids:
            assert records[run_id].lease_epoch == 1  # claimed once, never by itself again


def no_transaction_open(url: str) -> bool:
    """Whether no other connection to the store's database is inside a transaction:
    on SQLite, the write lock is free; on PostgreSQL, no session holds one open."""
    if url.startswith("sqlite:"):
        path = parse_url(url)[0]
        with contextlib.closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as db:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:  # locked: a writer is inside its transaction
                return False
            db.execute("ROLLBACK")
            return True
    (count,) = query(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
    )[0]
    return int(count) == 0


async def pause_outside_a_transaction(worker: WorkerProcess, url: str) -> None:
    """Stop ``worker`` (SIGSTOP) between two of its transactions. Stopped inside one,
    it would hold SQLite's write lock, or its rows' locks on PostgreSQL, for as long as
    it stays stopped, and no other process could take its runs over until it went on:
    a property of the databases' locks, not what the test is about."""
    for _ in range(100):
        worker.signal(signal.SIGSTOP)
        if await anyio.to_thread.run_sync(no_transaction_open, url):
            return
        worker.signal(signal.SIGCONT)
        await anyio.sleep(0.02)
    raise AssertionError("the worker was inside a transaction every time it was stopped")


async def test_a_worker_paused_while_another_takes_over_writes_nothing_more(
    durable_url: str, tmp_path: Path
) -> None:
    with Recorder() as recorder, worker_processes() as workers:
        async with Engine(durable_url, execute=False) as engine:
            await publish(engine, SLOW_FLOW)
            first = WorkerProcess(durable_url, tmp_path, "first", concurrency=4, lease=1.0)
            workers.append(first)
            await first.started()
            run_ids = await enqueue(engine, "slow", recorder.url, 4)
            await anyio.sleep(1.0)
            await pause_outside_a_transaction(first, durable_url)
            second = WorkerProcess(durable_url, tmp_path, "second", concurrency=4, lease=1.0)
            workers.append(second)
            await second.started()

            def taken_over() -> bool:  # every run now the second's (on a loaded machine
                # its claims can take longer than a fixed sleep would allow)
                owners = dict(query(durable_url, "SELECT run_id, owner FROM runs"))
                return all(owners.get(run_id) == second.owner for run_id in run_ids)

            await until(taken_over, 60.0)
            first.signal(signal.SIGCONT)
            records = await all_finished(engine, run_ids, workers)
        check_exactly_once(recorder, records, run_ids, SLOW_LABELS, faults=1)
        assert {records[r].owner for r in run_ids} == {second.owner}


# -- SIGTERM ----------------------------------------------------------------------------------


async def test_sigterm_hands_back_call_flow_children_of_both_kinds(
    durable_url: str, tmp_path: Path
) -> None:
    with Recorder() as recorder, worker_processes() as workers:
        async with Engine(durable_url, execute=False) as engine:
            await publish(engine, SLEEPY_FLOW, WAITING_PARENT, DETACHING_PARENT)
            first = WorkerProcess(durable_url, tmp_path, "first", grace=0.3)
            workers.append(first)
            await first.started()
            inputs = {"url": recorder.url, "nap": 3}
            waiting = await engine.call_flow("waiting-parent", inputs, wait=False)
            detaching = await engine.call_flow("detaching-parent", inputs, wait=False)
            await until(lambda: len(recorder.counts()) == 2)  # both children in their wait
            first.signal(signal.SIGTERM)
            assert await first.exited(30) == 0, first.output()

            rows = query(durable_url, "SELECT run_id, status, owner, error FROM runs")
            assert len(rows) == 4
            assert {(status, owner, error) for _, status, owner, error in rows} == {
                ("QUEUED", None, None)  # handed back, nothing CANCELLED
            }
            second = WorkerProcess(durable_url, tmp_path, "second")
            workers.append(second)
            await second.started()
            children = [run_id for run_id, *_ in rows if run_id not in (waiting, detaching)]
            records = await all_finished(engine, [waiting, *children], workers)
            assert records[waiting].output == {"slept": True}
            for child in children:
                assert (records[child].status, records[child].error) == (RunStatus.COMPLETED, None)
            await engine.cancel(detaching)
        # the effect before the wait ran once: the children resumed at their wait
        assert recorder.counts() == {
            (c, label): 1 for c in children for label in ("before", "after")
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_sigterm_to_serve_hands_its_runs_to_a_worker(
    durable_url: str, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "sleepy.yaml").write_text(json.dumps({**SLEEPY_FLOW, "status": "LIVE"}))
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-c", CLI, "serve", str(workspace), "--port", str(port)]
    command += ["--store", durable_url]
    with Recorder() as recorder, worker_processes() as workers, open(log, "wb") as err:  # noqa: ASYNC230
        serve = subprocess.Popen(  # noqa: ASYNC220
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=tmp_path,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base) as client:
                await until(lambda: serve.poll() is not None or "listening" in log.read_text())
                assert serve.poll() is None, log.read_text()
                run_ids = []
                for _ in range(3):
                    answer = await client.post(
                        "/api/flows/sleepy/activate", json={"url": recorder.url, "nap": 2}
                    )
                    assert answer.status_code == 202, answer.text
                    run_ids.append(answer.json()["run_id"])
            await until(lambda: len(recorder.counts()) == 3)
            serve.send_signal(signal.SIGTERM)  # what a deploy sends
            assert await anyio.to_thread.run_sync(serve.wait, 60) == 0, log.read_text()
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()
        rows = query(durable_url, "SELECT status, owner, error FROM runs")
        assert rows and set(rows) == {("QUEUED", None, None)}, rows
        async with Engine(durable_url, execute=False) as engine:
            workers.append(WorkerProcess(durable_url, tmp_path, "after-deploy"))
            await started(workers)
            records = await all_finished(engine, run_ids, workers)
        for run_id in run_ids:
            assert records[run_id].output == {"slept": True}
        # each block ended before the hand-back: nothing ran twice
        assert recorder.counts() == {
            (r, label): 1 for r in run_ids for label in ("before", "after")
        }


# -- cancel and stop across processes ---------------------------------------------------------


async def wait_status(engine: Engine, run_id: str, status: RunStatus) -> float:
    """Seconds until the run has ``status`` (as the store has it)."""
    began = time.monotonic()
    with anyio.fail_after(30):
        while True:
            if (await engine.get_run(run_id)).status is status:
                return time.monotonic() - began
            await anyio.sleep(0.02)


async def test_cancel_and_stop_reach_runs_another_process_runs(
    durable_url: str, tmp_path: Path
) -> None:
    with Recorder() as recorder, worker_processes() as workers:
        async with Engine(durable_url, execute=False) as engine:
            await publish(engine, SLEEPY_FLOW, WAITING_PARENT)
            workers.append(WorkerProcess(durable_url, tmp_path, "w", concurrency=3, lease=30.0))
            await started(workers)
            inputs = {"url": recorder.url, "nap": 60}
            alone = await engine.call_flow("sleepy", inputs, wait=False)
            parent = await engine.call_flow("waiting-parent", inputs, wait=False)
            await until(lambda: len(recorder.counts()) == 2)  # both waiting, in the worker
            (child,) = [run for run, _ in recorder.counts() if run != alone]

            await engine.cancel(alone)
            assert await wait_status(engine, alone, RunStatus.CANCELLED) < 2.0
            await engine.cancel(parent)  # the child it waits for goes with it
            assert await wait_status(engine, parent, RunStatus.CANCELLED) < 2.0
            assert await wait_status(engine, child, RunStatus.CANCELLED) < 2.0

            running = [await engine.call_flow("sleepy", inputs, wait=False) for _ in range(3)]
            await until(lambda: all((run, "before") in recorder.counts() for run in running))
            queued = [await engine.call_flow("sleepy", inputs, wait=False) for _ in range(4)]
            await engine.stop("sleepy")  # every run of the version, in every process
            for run_id in running:
                assert await wait_status(engine, run_id, RunStatus.CANCELLED) < 2.0
            for run_id in queued:
                result = await engine.get_run(run_id)
                assert result.status is RunStatus.CANCELLED
        runs = {run for run, _ in recorder.counts()}
        assert not runs & set(queued)  # the queued ones never started
        assert (alone, "after") not in recorder.counts()


# -- the store fails under a server, or for good ----------------------------------------------


async def test_a_removed_sqlite_file_makes_activations_503(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    flow = {"flow": "f", "start": "r", "blocks": {"r": {"type": "return", "value": 1}}}
    async with Engine(f"sqlite:///{path}") as engine:
        await publish(engine, flow)
        app = create_app(engine, TokenFileAuthenticator(tmp_path / "tokens.yaml"))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answer = await client.post("/api/flows/f/activate-blocking", content=b"")
            assert answer.status_code == 200
            for name in (path, f"{path}-wal", f"{path}-shm"):
                os.unlink(name) if os.path.exists(name) else None  # noqa: ASYNC240
            answer = await client.post("/api/flows/f/activate", content=b"")
            assert answer.status_code == 503
            assert answer.json() == {
                "error": "store_unavailable",
                "message": "the store is not available now; try again",
            }
            path.write_bytes(b"")  # a new, empty file at the path is not the store
            assert (await client.post("/api/flows/f/activate", content=b"")).status_code == 503


async def test_a_replaced_sqlite_file_is_refused_for_good(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    try:
        assert await store.list_flows() == []
        os.replace(path, tmp_path / "moved.db")
        SQLiteStore(path)  # nothing opened yet
        path.write_bytes((tmp_path / "moved.db").read_bytes())
        with pytest.raises(StoreUnavailable, match="removed or replaced"):
            await store.list_flows()
    finally:
        await store.close()


class _Flaky(MemoryStore):
    """A durable memory store whose checkpoints fail for a while, as a database does."""

    def __init__(self, failures: int) -> None:
        super().__init__(durable=True)
        self.failures = failures

    async def checkpoint(self, *args: Any, **kwargs: Any) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("the database is restarting")
        await super().checkpoint(*args, **kwargs)


LINE = {
    "flow": "line",
    "start": "a",
    "blocks": {
        "a": {"type": "set", "values": {"x": 1}, "next": "b"},
        "b": {"type": "set", "values": {"x": "=vars.x + 1"}, "next": "c"},
        "c": {"type": "return", "value": "=vars.x"},
    },
}


async def test_a_store_that_fails_for_a_while_is_retried_and_the_run_completes() -> None:
    store = _Flaky(failures=3)
    async with Engine(store, lease=2.0) as engine:
        await publish(engine, LINE)
        result = await engine.call_flow("line")
    assert (result.status, result.output, store.failures) == (RunStatus.COMPLETED, 2, 0)


async def test_a_store_that_keeps_failing_leaves_the_run_to_be_resumed_not_failed() -> None:
    store = _Flaky(failures=10**6)
    async with Engine(store, lease=0.3) as engine:
        await publish(engine, LINE)
        run_id = await engine.call_flow("line", wait=False)
        active = engine.local_run(run_id)
        assert active is not None
        with anyio.fail_after(10):
            await active.wait()
        record = await store.get_run_record(run_id)
    assert record is not None
    assert (record.status, record.error) == (RunStatus.RUNNING, None)  # for whoever claims it


def test_a_lease_must_be_a_positive_number_of_seconds() -> None:
    for lease in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lease"):
            Engine(lease=lease)


@pytest.mark.parametrize("lease", ["0", "-1", "0.5", "nan"])
def test_worker_refuses_a_lease_under_a_second(lease: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CLI,
            "worker",
            "--store",
            f"sqlite:///{tmp_path / 'x.db'}",
            "--lease",
            lease,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert re.search(r"--lease must be at least 1 seconds", done.stderr)


def test_store_unavailable_is_a_store_error() -> None:
    assert issubclass(StoreUnavailable, StoreError)
