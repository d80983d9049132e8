"""One behavioural suite for every store: memory, SQLite and PostgreSQL.

The memory store is the reference; the database stores must behave the same, and also
across several store objects (processes) sharing one database.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from engine._model.errors import LeaseLost, Problem, StoreError
from engine._model.records import HEADER_FIELDS, RunHeader, RunRecord
from engine._model.types import RunError, RunResult, RunStatus, Trace, VersionStatus
from engine._store import open_store
from engine._store.base import Store
from engine._store.memory import MemoryStore
from engine._store.postgres import PostgresStore
from engine._store.schema import SCHEMA_VERSION
from engine._store.sqlite import SQLiteStore
from permissions import Identity, Permission, Role, Settings, User

if TYPE_CHECKING:
    from conftest import Backend

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # psycopg's async connections need asyncio


def database_only(backend: Backend) -> None:
    if not backend.persistent:
        pytest.skip("needs a database shared by several store objects")


def record(run_id: str, created_at: float, **changes: Any) -> RunRecord:
    user_id = changes.pop("user_id", "alice")
    roles = changes.pop("roles", ("Manager", "Clerk"))
    head: dict[str, Any] = {
        "run_id": run_id,
        "flow": "orders",
        "version": 1,
        "identity": Identity(user_id, roles),
        "inputs": {"amount": 5, "note": "naïve ✓"},
        "root_run_id": run_id,
        "created_at": created_at,
    }
    fields: dict[str, Any] = {"status": RunStatus.QUEUED}
    for name, value in changes.items():
        (head if name in HEADER_FIELDS else fields)[name] = value
    return RunRecord(RunHeader(**head), **fields)


async def claim_one(store: Store, owner: str, lease: float = 30.0) -> RunRecord:
    (claimed,) = await store.claim_runs(owner, 1, lease)
    return claimed


# -- versions ------------------------------------------------------------------------------


async def test_versions_are_numbered_from_one_per_flow(store: Store) -> None:
    problems = (Problem("unknown block type 'nope'", block="b", field="type", file="a.yaml"),)
    first = await store.add_version("a", {"flow": "a", "x": [1, 2]}, VersionStatus.READY, ())
    second = await store.add_version("a", {"flow": "a"}, VersionStatus.INVALID, problems)
    other = await store.add_version("b", {"flow": "b"}, VersionStatus.READY, ())

    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert await store.list_flows() == ["a", "b"]
    assert [v.version for v in await store.list_versions("a")] == [1, 2]
    assert await store.list_versions("missing") == []
    stored = await store.get_version("a", 2)
    assert stored is not None
    assert (stored.status, stored.problems, stored.document) == (
        VersionStatus.INVALID,
        problems,
        {"flow": "a"},
    )
    assert stored.created_at == pytest.approx(time.time(), abs=60)
    assert await store.get_version("a", 1) == first
    assert await store.get_version("a", 3) is None
    assert await store.get_version("missing", 1) is None


async def test_select_version_prefers_live_or_paused_else_newest(store: Store) -> None:
    assert await store.select_version("f", None) is None
    for _ in range(3):
        await store.add_version("f", {"flow": "f"}, VersionStatus.READY, ())
    assert await store.select_version("f", None) == (3, VersionStatus.READY)
    assert await store.select_version("f", 2) == (2, VersionStatus.READY)
    assert await store.select_version("f", 4) is None

    await store.set_statuses("f", {2: VersionStatus.LIVE})
    assert await store.select_version("f", None) == (2, VersionStatus.LIVE)
    await store.set_statuses("f", {2: VersionStatus.PAUSED})
    assert await store.select_version("f", None) == (2, VersionStatus.PAUSED)
    await store.set_statuses("f", {2: VersionStatus.READY, 1: VersionStatus.LIVE})
    assert await store.select_version("f", None) == (1, VersionStatus.LIVE)
    assert [v.status for v in await store.list_versions("f")] == ["LIVE", "READY", "READY"]


async def test_set_statuses_changes_all_or_nothing(backend: Backend, store: Store) -> None:
    database_only(backend)
    await store.add_version("f", {"flow": "f"}, VersionStatus.READY, ())
    with pytest.raises(StoreError, match="no version 7"):
        await store.set_statuses("f", {1: VersionStatus.LIVE, 7: VersionStatus.READY})
    assert await store.select_version("f", 1) == (1, VersionStatus.READY)


async def test_concurrent_add_version_takes_distinct_numbers(backend: Backend) -> None:
    stores = [backend.open(), backend.open()]
    numbers: list[int] = []

    async def add(store: Store) -> None:
        for _ in range(10):
            info = await store.add_version("f", {"flow": "f"}, VersionStatus.READY, ())
            numbers.append(info.version)

    async with anyio.create_task_group() as tg:
        for index in range(6):
            tg.start_soon(add, stores[index % 2])
    assert sorted(numbers) == list(range(1, 61))
    assert [v.version for v in await stores[0].list_versions("f")] == list(range(1, 61))


# -- permission settings -------------------------------------------------------------------


async def test_permission_settings_start_empty_with_grant(store: Store) -> None:
    assert await store.permission_settings() == Settings()


async def test_permission_settings_follow_every_change(store: Store) -> None:
    expected = Settings()
    changes: list[tuple[User | Role, Permission, str | None]] = [
        (User("alice"), Permission.GRANT, "orders"),
        (Role("Contractor"), Permission.DENY, "orders"),
        (Role("NonAuthenticatedUser"), Permission.DENY, None),
        (User("mallory"), Permission.DENY, None),
        (User("alice"), Permission.DENY, "orders"),
        (Role("Contractor"), Permission.INHERIT, "orders"),
        (User("nobody"), Permission.INHERIT, "billing"),
    ]
    for subject, permission, flow in changes:
        await store.set_permission(subject, permission, flow)
        expected = expected.with_setting(subject, permission, flow)
        assert await store.permission_settings() == expected
    await store.set_default_permission(Permission.DENY)
    assert await store.permission_settings() == expected.with_default(Permission.DENY)


async def test_invalid_settings_are_refused_and_change_nothing(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.set_default_permission(Permission.INHERIT)
    with pytest.raises(ValueError):
        await store.set_permission(User("alice"), Permission.GRANT, "")
    assert await store.permission_settings() == Settings()


async def test_unchanged_settings_are_served_from_the_cache(store: Store) -> None:
    await store.set_permission(Role("Manager"), Permission.GRANT, "orders")
    first = await store.permission_settings()
    assert await store.permission_settings() is first


async def test_a_change_by_another_store_is_seen_at_the_next_call(backend: Backend) -> None:
    gate, admin = backend.open(), backend.open()
    assert await gate.permission_settings() == Settings()
    await admin.set_permission(User("bob"), Permission.DENY, "orders")
    assert await gate.permission_settings() == Settings().with_setting(
        User("bob"), Permission.DENY, "orders"
    )
    # Both change: each must end with both changes, not only its own.
    await gate.set_permission(Role("Manager"), Permission.GRANT, None)
    await admin.set_default_permission(Permission.DENY)
    both = (
        Settings()
        .with_setting(User("bob"), Permission.DENY, "orders")
        .with_setting(Role("Manager"), Permission.GRANT, None)
        .with_default(Permission.DENY)
    )
    assert await gate.permission_settings() == both
    assert await admin.permission_settings() == both


async def test_many_settings_cost_one_small_read_while_unchanged(backend: Backend) -> None:
    database_only(backend)
    store = backend.open()
    await store.set_permission(User("first"), Permission.GRANT, None)
    rows = [(f"flow-{n % 1000}", "user", f"user-{n}", "DENY") for n in range(100_000)]
    if backend.kind == "sqlite":
        import sqlite3

        with sqlite3.connect(backend.url.removeprefix("sqlite:///")) as db:  # type: ignore[union-attr]
            db.executemany("INSERT INTO permission_settings VALUES (?, ?, ?, ?)", rows)
            db.execute("UPDATE settings_state SET version = version + 1")
        db.close()
    else:
        import psycopg

        with psycopg.connect(backend.url) as conn, conn.cursor() as cursor:  # type: ignore[arg-type]
            with cursor.copy("COPY permission_settings FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute("UPDATE settings_state SET version = version + 1")

    loaded = await store.permission_settings()
    assert len(loaded.flows) == 1000
    assert sum(len(level.users) for level in loaded.flows.values()) == 100_000
    assert loaded.app.users == {"first": Permission.GRANT}

    started = time.perf_counter()
    for _ in range(200):
        assert await store.permission_settings() is loaded
    per_call = (time.perf_counter() - started) / 200
    assert per_call < 0.005, f"{per_call * 1000:.2f} ms per call with unchanged settings"

    await store.set_permission(User("user-7"), Permission.GRANT, "flow-7")
    changed = await store.permission_settings()
    assert changed.level("flow-7").users["user-7"] is Permission.GRANT
    assert changed.level("flow-8").users["user-8"] is Permission.DENY


async def test_malformed_stored_settings_fail_closed(backend: Backend) -> None:
    database_only(backend)
    store = backend.open()
    await store.permission_settings()
    backend.execute("INSERT INTO permission_settings VALUES ('', 'user', '', 'GRANT')")
    backend.execute("UPDATE settings_state SET version = version + 1")
    with pytest.raises(StoreError, match="malformed permission settings"):
        await store.permission_settings()


async def test_the_gate_view_is_the_settings_and_the_selected_version(store: Store) -> None:
    assert await store.gate_view("f", None) == (Settings(), None)
    for _ in range(3):
        await store.add_version("f", {"flow": "f"}, VersionStatus.READY, ())
    await store.set_permission(User("bob"), Permission.DENY, "f")
    settings = await store.permission_settings()
    for version, selected in [
        (None, (3, VersionStatus.READY)),
        (2, (2, VersionStatus.READY)),
        (4, None),
        (0, None),
    ]:
        assert await store.gate_view("f", version) == (settings, selected)
        assert await store.select_version("f", version) == selected
    assert await store.gate_view("g", 1) == (settings, None)
    await store.set_statuses("f", {2: VersionStatus.PAUSED})
    viewed, selected = await store.gate_view("f", None)
    assert viewed is settings  # unchanged settings come from the cache
    assert selected == (2, VersionStatus.PAUSED)


async def test_the_gate_view_follows_another_stores_changes(backend: Backend) -> None:
    gate, admin = backend.open(), backend.open()
    await admin.add_version("f", {"flow": "f"}, VersionStatus.LIVE, ())
    assert await gate.gate_view("f", None) == (Settings(), (1, VersionStatus.LIVE))
    await admin.set_permission(Role("Clerk"), Permission.DENY, "f")
    await admin.set_statuses("f", {1: VersionStatus.PAUSED})
    assert await gate.gate_view("f", None) == (
        Settings().with_setting(Role("Clerk"), Permission.DENY, "f"),
        (1, VersionStatus.PAUSED),
    )


async def test_malformed_settings_fail_the_gate_view(backend: Backend) -> None:
    database_only(backend)
    store = backend.open()
    await store.add_version("f", {"flow": "f"}, VersionStatus.LIVE, ())
    await store.gate_view("f", None)
    backend.execute("INSERT INTO permission_settings VALUES ('', 'user', '', 'GRANT')")
    backend.execute("UPDATE settings_state SET version = version + 1")
    with pytest.raises(StoreError, match="malformed permission settings"):
        await store.gate_view("f", None)


# -- runs: create, claim, renew --------------------------------------------------------------


async def test_a_created_run_reads_back_whole(store: Store) -> None:
    created = record(
        "r1",
        100.0,
        parent_run_id="p",
        root_run_id="root",
        depth=2,
        via="call_flow",
        inputs={"nested": {"list": [1, 2.5, None, True]}, "text": "ünï"},
        trace=[("start", "set", 1.5, 0.25, "ok")],
    )
    await store.create_run(created)
    assert await store.get_run_record("r1") == created
    assert await store.get_run_record("missing") is None


async def test_creating_a_run_twice_is_refused(store: Store) -> None:
    await store.create_run(record("r1", 1.0))
    with pytest.raises(StoreError, match="exists"):
        await store.create_run(record("r1", 2.0))
    stored = await store.get_run_record("r1")
    assert stored is not None and stored.header.created_at == 1.0


async def test_claims_take_queued_runs_oldest_first(store: Store) -> None:
    for run_id, created in [("c", 3.0), ("a", 1.0), ("e", 5.0), ("b", 2.0), ("d", 4.0)]:
        await store.create_run(record(run_id, created))
    await store.create_run(record("done", 0.5, status=RunStatus.COMPLETED))
    held = record("held", 0.1, status=RunStatus.RUNNING, owner="w0")
    await store.create_run(replace_lease(held, time.time() + 60))

    before = time.time()
    first = await store.claim_runs("w1", 2, 30.0)
    assert [r.run_id for r in first] == ["a", "b"]
    for claimed in first:
        assert (claimed.status, claimed.owner) == (RunStatus.RUNNING, "w1")
        assert claimed.lease_expires is not None
        assert before + 30 <= claimed.lease_expires <= time.time() + 30
    assert [r.run_id for r in await store.claim_runs("w2", 10, 30.0)] == ["c", "d", "e"]
    assert await store.claim_runs("w3", 10, 30.0) == []
    assert await store.claim_runs("w3", 0, 30.0) == []
    stored = await store.get_run_record("a")
    assert stored is not None and (stored.status, stored.owner) == (RunStatus.RUNNING, "w1")


def replace_lease(run: RunRecord, expires: float | None) -> RunRecord:
    run.lease_expires = expires
    return run


async def test_a_claim_brings_the_checkpoint_and_trace(store: Store) -> None:
    await store.create_run(record("r", 1.0))
    await claim_one(store, "w1", lease=-1.0)  # claimed, and its lease already expired
    await store.checkpoint("r", "w1", {"vars": {"x": 1}}, [("a", "set", 10.0, 0.5, "ok")])
    await store.checkpoint("r", "w1", {"vars": {"x": 2}}, [("b", "log", 11.0, 0.1, "ok")])
    again = await claim_one(store, "w2")
    assert again.owner == "w2"
    assert again.checkpoint == {"vars": {"x": 2}}
    assert again.trace == [("a", "set", 10.0, 0.5, "ok"), ("b", "log", 11.0, 0.1, "ok")]


async def test_an_expired_lease_is_reclaimed_and_the_old_owner_is_locked_out(
    store: Store,
) -> None:
    await store.create_run(
        replace_lease(record("r", 1.0, status=RunStatus.RUNNING, owner="dead"), time.time() - 1)
    )
    await store.create_run(record("live", 2.0, status=RunStatus.RUNNING, owner="w0"))
    assert await store.renew_leases("w0", ["live"], 30.0) == {"live": False}
    claimed = await store.claim_runs("w2", 10, 30.0)
    assert [r.run_id for r in claimed] == ["r"]

    with pytest.raises(LeaseLost):
        await store.checkpoint("r", "dead", {"stale": True}, [("x", "set", 1.0, 0.0, "ok")])
    assert await store.renew_leases("dead", ["r"], 30.0) == {}
    stale_end = record("r", 1.0, status=RunStatus.COMPLETED, owner="dead", output="stale")
    assert await store.finish_run(stale_end, [("y", "set", 1.0, 0.0, "ok")]) is False
    stored = await store.get_run_record("r")
    assert stored is not None
    assert (stored.status, stored.owner, stored.checkpoint, stored.trace) == (
        RunStatus.RUNNING,
        "w2",
        None,
        [],
    )


async def test_renew_extends_only_the_leases_still_held(store: Store) -> None:
    for run_id in ("a", "b", "c"):
        await store.create_run(record(run_id, 1.0))
    await store.claim_runs("w1", 2, 5.0)  # a, b
    await claim_one(store, "w2")  # c
    await store.request_cancel("b")

    before = time.time()
    assert await store.renew_leases("w1", ["a", "b", "c", "missing"], 60.0) == {
        "a": False,
        "b": True,
    }
    stored = await store.get_run_record("a")
    assert stored is not None and stored.lease_expires is not None
    assert stored.lease_expires >= before + 60
    assert await store.renew_leases("w1", [], 60.0) == {}


# -- runs: checkpoint, finish, release, cancel ---------------------------------------------


async def test_checkpoints_replace_the_state_and_append_the_trace(store: Store) -> None:
    await store.create_run(record("r", 1.0, trace=[("s", "set", 1.0, 0.1, "ok")]))
    await claim_one(store, "w")
    await store.checkpoint("r", "w", {"steps": 1}, [("a", "set", 2.0, 0.1, "ok")])
    await store.checkpoint("r", "w", {"steps": 2}, [])
    two = [("b", "condition", 3.0, 0.2, "then"), ("c", "http", 3.5, 1.25, "http")]
    await store.checkpoint("r", "w", {"steps": 4, "vars": {"list": [1, "ü"]}}, two)
    stored = await store.get_run_record("r")
    assert stored is not None
    assert stored.checkpoint == {"steps": 4, "vars": {"list": [1, "ü"]}}
    assert [row[0] for row in stored.trace] == ["s", "a", "b", "c"]
    assert stored.trace[3] == ("c", "http", 3.5, 1.25, "http")


async def test_checkpoint_of_an_unknown_or_unheld_run_is_lease_lost(store: Store) -> None:
    await store.create_run(record("q", 1.0))
    with pytest.raises(LeaseLost):
        await store.checkpoint("missing", "w", {}, [])
    with pytest.raises(LeaseLost):
        await store.checkpoint("q", "w", {}, [])  # queued: nobody holds it
    assert issubclass(LeaseLost, StoreError)


async def test_a_run_is_finished_exactly_once(store: Store) -> None:
    await store.create_run(record("r", 1.0))
    claimed = await claim_one(store, "w")
    await store.checkpoint("r", "w", {"log": [{"event": "hi"}]}, [("a", "set", 1.0, 0.1, "ok")])
    claimed.status = RunStatus.COMPLETED
    claimed.output = {"approved": True}
    claimed.has_errors = True
    claimed.started_at = 10.0
    claimed.finished_at = 12.5
    claimed.checkpoint = {"log": [{"event": "hi"}]}
    claimed.error = {"code": "http", "message": "boom", "block": "c"}
    assert await store.finish_run(claimed, [("r", "return", 2.0, 0.0, "ok")]) is True

    stored = await store.get_run_record("r")
    assert stored is not None
    assert (stored.status, stored.output, stored.error, stored.has_errors) == (
        RunStatus.COMPLETED,
        {"approved": True},
        {"code": "http", "message": "boom", "block": "c"},
        True,
    )
    assert (stored.started_at, stored.finished_at, stored.lease_expires) == (10.0, 12.5, None)
    assert stored.trace == [("a", "set", 1.0, 0.1, "ok"), ("r", "return", 2.0, 0.0, "ok")]

    claimed.status = RunStatus.FAILED
    assert await store.finish_run(claimed, [("again", "set", 3.0, 0.0, "ok")]) is False
    with pytest.raises(LeaseLost):
        await store.checkpoint("r", "w", {}, [])
    assert await store.renew_leases("w", ["r"], 30.0) == {}
    assert await store.claim_runs("w2", 10, 30.0) == []
    assert await store.request_cancel("r") is False
    again = await store.get_run_record("r")
    assert again is not None and again.status is RunStatus.COMPLETED and len(again.trace) == 2


async def test_a_run_nobody_claimed_is_finished_by_an_ownerless_record(store: Store) -> None:
    await store.create_run(record("r", 1.0))
    assert await store.finish_run(record("r", 1.0, status=RunStatus.FAILED, owner="w"), []) is False
    end = record("r", 1.0, status=RunStatus.FAILED, error={"code": "x", "message": "m"})
    assert await store.finish_run(end, [("a", "fail", 1.0, 0.0, "x")]) is True
    stored = await store.get_run_record("r")
    assert stored is not None and (stored.status, stored.trace) == (
        RunStatus.FAILED,
        [("a", "fail", 1.0, 0.0, "x")],
    )


async def test_concurrent_finishes_of_one_run_succeed_once(backend: Backend) -> None:
    stores = [backend.open(), backend.open()]
    for n in range(20):
        await stores[0].create_run(record(f"r{n}", float(n)))
    claimed = await stores[0].claim_runs("w", 20, 30.0)
    outcomes: list[bool] = []

    async def finish(store: Store, run: RunRecord, status: RunStatus) -> None:
        end = record(run.run_id, run.header.created_at, status=status, owner="w")
        outcomes.append(await store.finish_run(end, [(status.value, "x", 0.0, 0.0, "ok")]))

    async with anyio.create_task_group() as tg:
        for run in claimed:
            tg.start_soon(finish, stores[0], run, RunStatus.COMPLETED)
            tg.start_soon(finish, stores[1], run, RunStatus.FAILED)
    assert sorted(outcomes) == [False] * 20 + [True] * 20
    for run in claimed:
        stored = await stores[1].get_run_record(run.run_id)
        assert stored is not None and len(stored.trace) == 1
        assert stored.trace[0][0] == stored.status.value


async def test_released_runs_go_back_to_the_queue_with_their_checkpoint(store: Store) -> None:
    for run_id in ("a", "b"):
        await store.create_run(record(run_id, 1.0 if run_id == "a" else 2.0))
    await store.claim_runs("w1", 2, 30.0)
    await store.checkpoint("a", "w1", {"steps": 3}, [("x", "set", 1.0, 0.0, "ok")])
    await store.release_runs("w2", ["a"])  # not w2's: nothing happens
    await store.release_runs("w1", ["a", "missing"])
    await store.release_runs("w1", [])

    stored = await store.get_run_record("a")
    assert stored is not None
    assert (stored.status, stored.owner, stored.lease_expires) == (RunStatus.QUEUED, None, None)
    with pytest.raises(LeaseLost):
        await store.checkpoint("a", "w1", {}, [])
    again = await claim_one(store, "w3")
    assert (again.run_id, again.checkpoint, len(again.trace)) == ("a", {"steps": 3}, 1)
    other = await store.get_run_record("b")
    assert other is not None and other.owner == "w1"


async def test_cancelling_a_queued_run_ends_it_at_once(store: Store) -> None:
    await store.create_run(record("r", 1.0))
    before = time.time()
    assert await store.request_cancel("r") is True
    stored = await store.get_run_record("r")
    assert stored is not None
    assert stored.status is RunStatus.CANCELLED
    assert stored.error == {"code": "cancelled", "message": "the run was cancelled", "block": None}
    assert stored.finished_at is not None and stored.finished_at >= before
    assert stored.cancel_requested is False
    assert await store.request_cancel("r") is False
    assert await store.claim_runs("w", 10, 30.0) == []
    assert await store.request_cancel("missing") is False


async def test_cancelling_a_running_run_flags_it_for_its_owner(store: Store) -> None:
    await store.create_run(record("r", 1.0))
    await claim_one(store, "w")
    assert await store.request_cancel("r") is True
    stored = await store.get_run_record("r")
    assert stored is not None
    assert (stored.status, stored.cancel_requested, stored.owner) == (
        RunStatus.RUNNING,
        True,
        "w",
    )
    assert await store.renew_leases("w", ["r"], 30.0) == {"r": True}


async def test_concurrent_claimers_never_share_a_run(backend: Backend) -> None:
    stores = [backend.open(), backend.open()]
    for n in range(150):
        await stores[0].create_run(record(f"r{n:03}", float(n)))
    taken: dict[str, list[str]] = {}

    async def worker(store: Store, name: str) -> None:
        while claimed := await store.claim_runs(name, 3, 30.0):
            for run in claimed:
                taken.setdefault(run.run_id, []).append(name)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for n in range(12):
            tg.start_soon(worker, stores[n % 2], f"w{n}")
    assert sorted(taken) == [f"r{n:03}" for n in range(150)]
    assert all(len(owners) == 1 for owners in taken.values())
    for run_id, (owner,) in taken.items():
        stored = await stores[1].get_run_record(run_id)
        assert stored is not None and stored.owner == owner


CLAIMER = textwrap.dedent(
    """
    import sys, anyio
    from engine._store import open_store

    async def main():
        store = open_store(sys.argv[1])
        try:
            await store.list_flows()  # connected and migrated
            print("ready", flush=True)
            sys.stdin.readline()  # every process starts claiming at once
            while claimed := await store.claim_runs(sys.argv[2], 1, 60.0):
                print(claimed[0].run_id, flush=True)
                await anyio.sleep(0.001)
        finally:
            await store.close()

    anyio.run(main)
    """
)


async def test_processes_claiming_one_database_never_share_a_run(backend: Backend) -> None:
    database_only(backend)
    store = backend.open()
    for n in range(100):
        await store.create_run(record(f"r{n:03}", float(n)))
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    claimed: list[str] = []
    with anyio.fail_after(120):
        workers = [
            await anyio.open_process(
                [sys.executable, "-c", CLAIMER, str(backend.url), f"p{n}"],
                env=environment,
                stderr=None,
            )
            for n in range(2)
        ]
        try:
            outputs = [BufferedByteReceiveStream(worker.stdout) for worker in workers]  # type: ignore[arg-type]
            for output in outputs:
                assert await output.receive_until(b"\n", 100) == b"ready"
            for worker in workers:
                await worker.stdin.send(b"go\n")  # type: ignore[union-attr]
            for worker, output in zip(workers, outputs, strict=True):
                with contextlib.suppress(anyio.EndOfStream):
                    while True:
                        claimed += (await output.receive()).decode().split()
                assert await worker.wait() == 0
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.kill()
                await worker.aclose()
    assert sorted(claimed) == [f"r{n:03}" for n in range(100)]
    for run_id in claimed[:5]:
        stored = await store.get_run_record(run_id)
        assert stored is not None and stored.status is RunStatus.RUNNING


# -- finished runs as results ----------------------------------------------------------------


async def test_a_saved_result_reads_back_equal(store: Store) -> None:
    result = RunResult(
        run_id="r",
        flow="orders",
        version=3,
        status=RunStatus.FAILED,
        output=None,
        error=RunError("child_failed", "the child failed", "call", child_run_id="c1"),
        has_errors=True,
        user_id=None,
        roles=("B", "A"),
        parent_run_id="p",
        root_run_id="root",
        depth=1,
        inputs={"amount": 5},
        trace=Trace([("a", "set", 0.5, 0.1, "ok")], 1000.0),
        log=({"event": "step", "level": "info"},),
        created_at=999.0,
        finished_at=1001.0,
    )
    await store.save_run(result)
    assert await store.get_run("r") == result
    assert await store.get_run("missing") is None
    rerun = RunResult(run_id="r", flow="orders", version=3, status=RunStatus.COMPLETED)
    await store.save_run(rerun)
    assert await store.get_run("r") == rerun


async def test_a_durable_run_reads_back_as_a_result(backend: Backend, store: Store) -> None:
    database_only(backend)  # the memory store answers get_run for saved results only
    await store.create_run(record("r", 5.0, user_id=None, roles=()))
    claimed = await claim_one(store, "w")
    claimed.status, claimed.output, claimed.finished_at = RunStatus.COMPLETED, [1, 2], 9.0
    claimed.checkpoint = {"log": [{"event": "hello"}]}
    await store.finish_run(claimed, [("a", "return", 6.0, 0.5, "ok")])
    result = await store.get_run("r")
    assert result is not None
    assert (result.status, result.output, result.error, result.user_id) == (
        RunStatus.COMPLETED,
        [1, 2],
        None,
        None,
    )
    assert list(result.trace) == [("a", "return", 6.0, 0.5, "ok")]
    assert result.log == ({"event": "hello"},)
    assert (result.created_at, result.finished_at) == (5.0, 9.0)


# -- persistence, schema, URLs ---------------------------------------------------------------


async def test_everything_survives_closing_and_reopening(backend: Backend) -> None:
    database_only(backend)
    first = backend.open()
    await first.add_version("f", {"flow": "f", "start": "a"}, VersionStatus.LIVE, ())
    await first.set_permission(Role("Manager"), Permission.DENY, "f")
    await first.set_default_permission(Permission.DENY)
    await first.create_run(record("r", 1.0))
    await claim_one(first, "w")
    await first.checkpoint("r", "w", {"vars": {"a": 1}}, [("a", "set", 1.0, 0.0, "ok")])
    await first.close()

    second = backend.open()
    assert await second.select_version("f", None) == (1, VersionStatus.LIVE)
    assert await second.permission_settings() == Settings(Permission.DENY).with_setting(
        Role("Manager"), Permission.DENY, "f"
    )
    stored = await second.get_run_record("r")
    assert stored is not None
    assert (stored.owner, stored.checkpoint, len(stored.trace)) == ("w", {"vars": {"a": 1}}, 1)
    # The first object reconnects on use after close.
    assert await first.list_flows() == ["f"]


async def test_a_database_with_a_newer_schema_is_refused(backend: Backend) -> None:
    database_only(backend)
    await backend.open().list_flows()
    assert backend.execute("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    backend.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="schema version 99, newer than"):
        await backend.open().list_flows()


async def test_stores_opening_a_new_database_at_once_create_it_once(backend: Backend) -> None:
    database_only(backend)
    stores = [backend.open() for _ in range(4)]
    async with anyio.create_task_group() as tg:
        for store in stores:
            tg.start_soon(store.list_flows)
    assert backend.execute("SELECT count(*) FROM schema_version") == [(1,)]


async def test_an_unreachable_database_is_a_store_error(tmp_path: Path) -> None:
    missing = SQLiteStore(tmp_path / "no" / "such" / "folder.db")
    with pytest.raises(StoreError, match="unable to open"):
        await missing.list_flows()
    await missing.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # a port nothing listens on
        port = sock.getsockname()[1]
        nowhere = PostgresStore(f"postgresql://u@127.0.0.1:{port}/db", timeout=0.5)
        with pytest.raises(StoreError, match="PostgreSQL store"):
            await nowhere.list_flows()
        await nowhere.close()


def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = SQLiteStore.from_url("sqlite:///data/fw.db")
    assert (relative.path, relative.synchronous) == ("data/fw.db", "FULL")
    absolute = SQLiteStore.from_url(f"sqlite:///{tmp_path}/fw.db?synchronous=normal")
    assert (absolute.path, absolute.synchronous) == (f"{tmp_path}/fw.db", "NORMAL")
    assert SQLiteStore.from_url("sqlite:///x.db?busy_timeout=1.5").busy_timeout == 1.5
    assert isinstance(open_store("sqlite:///x.db"), SQLiteStore)
    for bad in ("sqlite://host/x.db", "sqlite:///", "sqlite:///x.db?fast=yes"):
        with pytest.raises(ValueError):
            SQLiteStore.from_url(bad)


async def test_sqlite_store_uses_wal_and_the_chosen_synchronous_mode(tmp_path: Path) -> None:
    for option, expected in (("", 2), ("?synchronous=normal", 1)):
        store = SQLiteStore.from_url(f"sqlite:///{tmp_path}/s{expected}.db{option}")
        try:
            await store.list_flows()
            conn = store._connection()
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("PRAGMA synchronous").fetchone() == (expected,)
        finally:
            await store.close()


async def test_a_relative_sqlite_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///here.db")
    try:
        await store.add_version("f", {"flow": "f"}, VersionStatus.READY, ())
    finally:
        await store.close()
    assert (tmp_path / "here.db").exists()


def test_postgres_urls() -> None:
    store = PostgresStore.from_url("postgresql://u@127.0.0.1:5433/db?pool_size=3&sslmode=disable")
    assert (store.conninfo, store.pool_size) == (
        "postgresql://u@127.0.0.1:5433/db?sslmode=disable",
        3,
    )
    assert isinstance(open_store("postgres://u@h/db"), PostgresStore)
    assert "127.0.0.1:5433/db" in repr(store)
    with pytest.raises(ValueError):
        PostgresStore.from_url("mysql://u@h/db")


async def test_memory_store_is_the_reference(store: Store) -> None:
    assert store.durable is True
    assert isinstance(store, Store)
    assert isinstance(MemoryStore(), Store)
