"""Group commit in the SQLite store: concurrent writes share transactions, each caller
is answered once its own transaction has committed, a failed transaction fails every
caller in it, and a write refused inside a group fails only its own caller.

Real files, real connections: another connection takes the write lock as another
process would, and the writer's statements are watched through SQLite's own trace
hook to count its transactions.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine import Engine
from engine._model.errors import LeaseLost, StoreError, StoreUnavailable
from engine._model.records import RunHeader, RunRecord
from engine._model.types import RunStatus, VersionStatus
from engine._store.sqlite import SQLiteStore
from permissions import ANONYMOUS

THREE_BLOCKS = {
    "flow": "three",
    "start": "first",
    "blocks": {
        "first": {"type": "set", "values": {"a": 1}, "next": "second"},
        "second": {"type": "set", "values": {"b": "=vars.a + 1"}, "next": "done"},
        "done": {"type": "return", "value": {"b": "=vars.b", "n": "=inputs.n"}},
    },
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def queued(run_id: str, **changes: Any) -> RunRecord:
    header = RunHeader(run_id, "f", 1, ANONYMOUS, {}, created_at=time.time())
    return RunRecord(header, changes.pop("status", RunStatus.QUEUED), **changes)


def lock_held_elsewhere(path: Path) -> sqlite3.Connection:
    """Another connection holding the file's write lock, as another process would."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def commits_of(store: SQLiteStore) -> list[str]:
    """The statements the store's writer connection runs from now on."""
    seen: list[str] = []
    store._writer._connection().set_trace_callback(seen.append)
    return seen


async def test_concurrent_activations_are_all_acknowledged_and_all_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    await store.list_flows()
    statements = commits_of(store)
    results: dict[int, Any] = {}
    async with Engine(store) as engine:
        await engine.start("three", await engine.add_version(THREE_BLOCKS))

        async def activate(n: int) -> None:
            results[n] = await engine.call_flow("three", {"n": n})

        async with anyio.create_task_group() as group:
            for n in range(60):
                group.start_soon(activate, n)
    await store.close()
    assert {n: result.output for n, result in results.items()} == {
        n: {"b": 2, "n": n} for n in range(60)
    }
    # every run wrote its row, its checkpoints and its finish; they shared transactions
    assert sum(s.startswith("INSERT INTO runs") for s in statements) == 60
    assert statements.count("COMMIT") < 60

    reopened = SQLiteStore(path)
    try:
        for n, result in results.items():
            stored = await reopened.get_run(result.run_id)
            assert stored is not None
            assert (stored.status, stored.output) == (RunStatus.COMPLETED, {"b": 2, "n": n})
    finally:
        await reopened.close()


async def test_a_group_that_cannot_commit_fails_every_caller_and_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    store = SQLiteStore(path, busy_timeout=0.3)
    try:
        async with anyio.create_task_group() as group:
            for n in range(10):
                group.start_soon(store.create_run, queued(f"kept-{n}"))
        other = lock_held_elsewhere(path)
        failures: list[BaseException] = []

        async def refused(run_id: str) -> None:
            try:
                await store.create_run(queued(run_id))
            except StoreUnavailable as exc:
                failures.append(exc)

        statements = commits_of(store)
        async with anyio.create_task_group() as group:
            for n in range(10):
                group.start_soon(refused, f"refused-{n}")
        other.execute("ROLLBACK")
        other.close()
        assert len(failures) == 10
        assert statements.count("BEGIN IMMEDIATE") < 10  # they failed in groups
        await store.create_run(queued("after"))  # the store carries on once the lock is free
    finally:
        await store.close()
    reopened = SQLiteStore(path)
    try:
        for n in range(10):
            assert await reopened.get_run_record(f"kept-{n}") is not None
            assert await reopened.get_run_record(f"refused-{n}") is None
        assert await reopened.get_run_record("after") is not None
    finally:
        await reopened.close()


async def test_a_fenced_write_refused_in_a_group_fails_only_its_own_caller(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    taker = SQLiteStore(path)  # another process sharing the file
    try:
        for n in range(8):
            await store.create_run(queued(f"r{n}"))
        held = {run.run_id: run for run in await store.claim_runs("w1", 8, 0.2)}
        await anyio.sleep(0.3)  # w1's leases run out; another worker takes r3
        (taken,) = await taker.claim_runs("w2", 1, 30.0, skip=[f"r{n}" for n in range(8) if n != 3])
        assert taken.run_id == "r3"
        outcomes: dict[str, object] = {}

        async def checkpoint(run_id: str) -> None:
            epoch = held[run_id].lease_epoch
            try:
                trace = [("a", "set", 1.0, 0.0, "ok")]
                await store.checkpoint(run_id, "w1", {"at": run_id}, trace, epoch=epoch)
                outcomes[run_id] = "written"
            except LeaseLost:
                outcomes[run_id] = "lease lost"

        statements = commits_of(store)
        async with anyio.create_task_group() as group:
            for run_id in held:
                group.start_soon(checkpoint, run_id)
        assert outcomes == {
            run_id: "lease lost" if run_id == "r3" else "written" for run_id in held
        }
        assert statements.count("COMMIT") < len(held)  # r3 was refused inside a group

        finishes: dict[str, bool] = {}

        async def finish(run: RunRecord) -> None:
            run.status, run.output = RunStatus.COMPLETED, run.run_id
            finishes[run.run_id] = await store.finish_run(run, [])

        async with anyio.create_task_group() as group:
            for run in held.values():
                group.start_soon(finish, run)
        assert finishes == {run_id: run_id != "r3" for run_id in held}
    finally:
        await store.close()
        await taker.close()
    reopened = SQLiteStore(path)
    try:
        for run_id in held:
            stored = await reopened.get_run_record(run_id)
            assert stored is not None
            if run_id == "r3":
                assert (stored.status, stored.owner, stored.checkpoint) == (
                    RunStatus.RUNNING,
                    "w2",
                    None,
                )
            else:
                assert (stored.status, stored.output, stored.trace) == (
                    RunStatus.COMPLETED,
                    run_id,
                    [("a", "set", 1.0, 0.0, "ok")],
                )
    finally:
        await reopened.close()


async def test_version_writes_in_a_group_are_numbered_and_refused_as_alone(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    try:
        numbers: list[int] = []

        async def add() -> None:
            info = await store.add_version("f", {"flow": "f"}, VersionStatus.READY, ())
            numbers.append(info.version)

        async with anyio.create_task_group() as group:
            for _ in range(12):
                group.start_soon(add)
        assert sorted(numbers) == list(range(1, 13))
        assert [v.version for v in await store.list_versions("f")] == list(range(1, 13))

        refused: list[StoreError] = []

        async def change(statuses: dict[int, VersionStatus]) -> None:
            try:
                await store.set_statuses("f", statuses)
            except StoreError as exc:
                refused.append(exc)

        async with anyio.create_task_group() as group:  # in one group after the first
            group.start_soon(change, {1: VersionStatus.LIVE})
            group.start_soon(change, {2: VersionStatus.LIVE})
            group.start_soon(change, {3: VersionStatus.LIVE, 99: VersionStatus.LIVE})
            group.start_soon(change, {4: VersionStatus.LIVE})
        assert [str(exc) for exc in refused] == ["flow 'f' has no version 99"]
        statuses = {v.version: v.status for v in await store.list_versions("f")}
        assert [n for n, status in statuses.items() if status is VersionStatus.LIVE] == [1, 2, 4]
    finally:
        await store.close()


async def test_lone_writes_commit_on_the_loop_thread_and_groups_in_a_worker(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    try:
        await store.create_run(queued("first"))
        threads: list[int] = []
        store._writer._connection().set_trace_callback(
            lambda sql: threads.append(threading.get_ident()) if sql == "COMMIT" else None
        )
        for n in range(12):  # one after another: nothing to overlap with
            await store.create_run(queued(f"alone-{n}"))
        assert len(threads) == 12
        assert threads[-4:] == [threading.get_ident()] * 4  # once that is clear
        threads.clear()
        async with anyio.create_task_group() as group:
            for n in range(20):
                group.start_soon(store.create_run, queued(f"together-{n}"))
        assert threads and threading.get_ident() not in threads
        assert len(threads) < 20
    finally:
        await store.close()


async def test_with_synchronous_normal_each_write_commits_at_once_on_the_loop_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    store = SQLiteStore(path, synchronous="NORMAL")
    try:
        await store.create_run(queued("first"))
        threads: list[int] = []
        store._writer._connection().set_trace_callback(
            lambda sql: threads.append(threading.get_ident()) if sql == "COMMIT" else None
        )
        async with anyio.create_task_group() as group:
            for n in range(10):
                group.start_soon(store.create_run, queued(f"r{n}"))
        assert threads == [threading.get_ident()] * 10
        (claimed,) = await store.claim_runs("w1", 1, 30.0)
        with pytest.raises(LeaseLost):
            await store.checkpoint(claimed.run_id, "w2", {}, [], epoch=claimed.lease_epoch)
    finally:
        await store.close()
    reopened = SQLiteStore(path)
    try:
        for n in range(10):
            assert await reopened.get_run_record(f"r{n}") is not None
    finally:
        await reopened.close()


async def test_a_caller_cancelled_while_its_write_waits_returns_once_it_has_committed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    await store.create_run(queued("before"))  # the writer's connection is open
    watcher = sqlite3.connect(path)
    committed: dict[str, bool] = {}
    scopes = {f"run-{n}": anyio.CancelScope() for n in range(12)}
    for n in range(0, 12, 2):  # the first caller leads the group: it is cancelled too
        scopes[f"run-{n}"].cancel()

    async def caller(run_id: str) -> None:
        with scopes[run_id]:
            await store.create_run(queued(run_id))
        # cancelled or not, its write is in the file by the time it returns
        found = watcher.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchall()
        committed[run_id] = bool(found)

    try:
        with anyio.fail_after(30):  # a group left without its leader would never end
            async with anyio.create_task_group() as group:
                for run_id in scopes:
                    group.start_soon(caller, run_id)
            assert committed == dict.fromkeys(scopes, True)
            assert all(scopes[f"run-{n}"].cancelled_caught for n in range(0, 12, 2))
            await store.create_run(queued("after"))  # the writer goes on
        rows = watcher.execute("SELECT count(*) FROM runs").fetchall()
        assert rows == [(14,)]
    finally:
        watcher.close()
        await store.close()


async def test_a_write_waiting_for_the_lock_held_elsewhere_leaves_the_loop_running(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    store = SQLiteStore(path, busy_timeout=5.0)
    try:
        for n in range(12):  # one after another: these now begin and commit on the loop
            await store.create_run(queued(f"alone-{n}"))
        other = lock_held_elsewhere(path)
        ticks = 0

        async def ticking() -> None:
            nonlocal ticks
            while True:
                await anyio.sleep(0.01)
                ticks += 1

        async def release_later() -> None:
            await anyio.sleep(0.5)
            other.execute("ROLLBACK")

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                group.start_soon(ticking)
                group.start_soon(release_later)
                await store.create_run(queued("waited"))  # waits for the lock, then commits
                group.cancel_scope.cancel()
        other.close()
        assert ticks >= 20  # the loop went on while the write waited half a second
        assert await store.get_run_record("waited") is not None
        await store.create_run(queued("after"))  # and the writer goes on on the loop
    finally:
        await store.close()
