"""The SQLite store: one database file that several processes on one machine can share.

URL: ``sqlite:///relative/path.db`` (relative to the working directory) or
``sqlite:////absolute/path.db``; options ``?synchronous=full|normal`` and
``?busy_timeout=SECONDS``.

Two connections. Reads run synchronously on the event loop's thread, on the reader
connection: in WAL mode a read takes no lock and never waits for a writer, and handing
it to a thread would cost more than it does. Writes go to the writer connection
through :class:`GroupWriter` (``sqlite_writer.py``): the writes that arrive together,
the activations, claims, checkpoints and finishes of many concurrent runs, share one
transaction and one fsync of the log, run in a worker thread while the loop goes on
(a write alone, with nothing to overlap, runs on the loop's thread);
each caller is answered only once its transaction has committed, and a write refused
inside a group (a lost lease) fails its own caller only. Waiting for another *process*
holding the write lock (up to ``busy_timeout``, default 5 s) happens in that thread too.
With ``synchronous=normal`` a commit does not wait for the disk and costs less than the
hand-over to a thread, so transactions run on the loop's thread, as reads do.

Locking: the file is in WAL mode, so readers never block the writer or each other.
Every change runs in ``BEGIN IMMEDIATE`` … ``COMMIT``, which takes the database's one
write lock up front (waiting for it up to ``busy_timeout``): a claim selects and
updates its runs under that lock, so two processes never claim the same run, and
version numbers are taken from the ``flows`` row inside the same kind of transaction.
Reads that need a consistent view of several tables use a deferred ``BEGIN``, which
sees one snapshot.

Leases: a claimed run is RUNNING with ``owner``, ``lease_expires`` (a Unix time from
``time.time()`` read under the write lock; processes sharing a file share a clock) and
``lease_epoch`` (see :class:`Store`). ``checkpoint`` and ``finish_run`` only write
where owner and epoch still match and the run is unfinished, so a worker that lost its
run can no longer change it, and a run is finished exactly once.

Outages (see :class:`Store`): "locked" or "busy" past ``busy_timeout`` and I/O errors
are :class:`StoreUnavailable`, and so is every call once the path no longer names the
file this object opened (see ``FileGuard``).

Durability: see the ``synchronous`` option in ``sqlite_file.py``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Collection, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from permissions import Permission, Role, Settings, User

from .._model.errors import LeaseLost, Problem, StoreError
from .._model.listing import RunQuery, RunSummary
from .._model.records import RunRecord, TraceRow
from .._model.steps import RunStep
from .._model.types import RunResult, VersionInfo, VersionStatus
from .base import GateView
from .sql import (
    CANCEL,
    CANCEL_VERSION,
    INSERT_RUN,
    RUN,
    SELECT_VERSIONS,
    SET_DEFAULT,
    UNFINISHED,
    UPSERT_RUN,
    SettingsCache,
    build_settings,
    cancel_values,
    cancel_version_values,
    dump,
    dump_problems,
    finish_columns,
    gate_query,
    gate_selected,
    record_of_row,
    record_values,
    result_from_row,
    result_values,
    setting_change,
    version_from_row,
)
from .sqlite_file import Reader, Synchronous, failure, parse_url
from .sqlite_log import (
    CHECKPOINT,
    CLAIM,
    FOLD_EVERY,
    IN_IDS,
    NEXT_VERSION,
    RENEW,
    append_trace,
    finish,
    fold,
    last_seq,
    list_summaries,
    prune,
    views,
    with_newest_state,
)
from .sqlite_writer import GroupWriter
from .steps import finish_step, sqlite_steps

__all__ = ["SQLiteStore"]


class SQLiteStore:
    """A durable store in one SQLite file (see the module docstring for the design)."""

    durable = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 5.0,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.path = os.fspath(path)
        self.synchronous: Synchronous = synchronous
        self.busy_timeout = busy_timeout
        self._reader = reader = Reader(self.path, synchronous, busy_timeout)
        self._writer = GroupWriter(
            reader.open,
            partial(failure, self.path),
            reader.file.check,
            threaded=synchronous == "FULL",  # a commit waits for the disk: let the loop go on
        )
        self._cache = SettingsCache()
        # the number of the last checkpoint row of each run this object holds
        self._seqs: dict[str, int] = {}

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """The store a ``sqlite:`` URL names (see the module docstring)."""
        path, synchronous, busy_timeout = parse_url(url)
        return cls(path, synchronous=synchronous, busy_timeout=busy_timeout)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, synchronous={self.synchronous!r})"

    # -- connections -------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """The reader connection."""
        return self._reader.connection()

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._reader.read(sql, params)

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """One statement in a write transaction; its RETURNING rows."""
        return await self._writer.write(lambda conn: conn.execute(sql, params).fetchall())

    async def close(self) -> None:
        await self._writer.close()
        self._reader.close()

    # -- versions ------------------------------------------------------------------------

    async def add_version(
        self,
        flow: str,
        document: dict[str, Any],
        status: VersionStatus,
        problems: tuple[Problem, ...],
    ) -> VersionInfo:
        now = time.time()
        text, problem_text = dump(document), dump_problems(problems)

        def add(conn: sqlite3.Connection) -> int:
            (number,) = conn.execute(NEXT_VERSION, (flow,)).fetchall()[0]
            conn.execute(
                "INSERT INTO versions (flow, version, status, document, problems, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (flow, number, status.value, text, problem_text, now),
            )
            return int(number)

        number = await self._writer.write(add)
        return VersionInfo(flow, int(number), status, tuple(problems), document, now)

    async def get_version(self, flow: str, version: int) -> VersionInfo | None:
        rows = self._read(SELECT_VERSIONS + "WHERE flow = ? AND version = ?", (flow, version))
        return version_from_row(flow, rows[0]) if rows else None

    async def list_versions(self, flow: str) -> list[VersionInfo]:
        rows = self._read(SELECT_VERSIONS + "WHERE flow = ? ORDER BY version", (flow,))
        return [version_from_row(flow, row) for row in rows]

    async def list_flows(self) -> list[str]:
        return sorted(flow for (flow,) in self._read("SELECT flow FROM flows"))

    async def select_version(
        self, flow: str, version: int | None
    ) -> tuple[int, VersionStatus] | None:
        return gate_selected(self._read(*gate_query(flow, version))[0])

    async def set_statuses(self, flow: str, statuses: dict[int, VersionStatus]) -> None:
        def change(conn: sqlite3.Connection) -> None:
            for number, status in statuses.items():
                changed = conn.execute(
                    "UPDATE versions SET status = ? WHERE flow = ? AND version = ?",
                    (VersionStatus(status).value, flow, number),
                ).rowcount
                if changed != 1:
                    raise StoreError(f"flow {flow!r} has no version {number}")

        await self._writer.write(change)

    # -- permission settings -------------------------------------------------------------

    async def permission_settings(self) -> Settings:
        (version,) = self._read("SELECT version FROM settings_state")[0]
        cached = self._cache.get(version)
        if cached is not None:
            return cached
        with self._reader.snapshot() as conn:
            version, default = conn.execute(
                "SELECT version, default_permission FROM settings_state"
            ).fetchall()[0]
            rows = conn.execute(
                "SELECT flow, kind, name, permission FROM permission_settings"
            ).fetchall()
        return self._cache.put(version, build_settings(default, rows))

    async def gate_view(self, flow: str, version: int | None) -> GateView:
        row = self._read(*gate_query(flow, version))[0]
        # the settings cached, or (their counter moved) the whole snapshot read anew
        return self._cache.get(row[0]) or await self.permission_settings(), gate_selected(row)

    async def set_permission(
        self, subject: User | Role, permission: Permission, flow: str | None
    ) -> None:
        sql, params = setting_change(subject, permission, flow)

        def change(conn: sqlite3.Connection) -> int:
            conn.execute(sql, params)
            return int(
                conn.execute(
                    "UPDATE settings_state SET version = version + 1 RETURNING version"
                ).fetchall()[0][0]
            )

        version = await self._writer.write(change)
        self._cache.changed(version, lambda s: s.with_setting(subject, permission, flow))

    async def set_default_permission(self, permission: Permission) -> None:
        Settings().with_default(permission)  # refuses INHERIT
        ((version,),) = await self._write(SET_DEFAULT, (Permission(permission).value,))
        self._cache.changed(version, lambda s: s.with_default(permission))

    # -- runs ----------------------------------------------------------------------------

    def _row(self, run_id: str) -> tuple[Any, list[TraceRow]] | None:
        with self._reader.snapshot() as conn:  # the row and its trace
            rows = conn.execute(f"SELECT {RUN} FROM runs WHERE run_id = ?", (run_id,))
            row = rows.fetchall()
            if not row:
                return None
            view = views(conn, [run_id])[run_id]
            return with_newest_state(row[0], view), view[0]

    async def save_run(self, result: RunResult) -> None:
        values, trace = result_values(result)

        def save(conn: sqlite3.Connection) -> None:
            conn.execute(UPSERT_RUN, (*values, len(trace)))
            conn.execute("DELETE FROM run_trace WHERE run_id = ?", (result.run_id,))
            conn.execute("DELETE FROM checkpoints WHERE run_id = ?", (result.run_id,))
            append_trace(conn, result.run_id, 0, trace)

        await self._writer.write(save)

    async def get_run(self, run_id: str) -> RunResult | None:
        found = self._row(run_id)
        return result_from_row(*found) if found is not None else None

    async def create_run(self, record: RunRecord) -> None:
        asked = time.time()

        def create(conn: sqlite3.Connection) -> None:
            held = record
            if held.lease_expires is not None:  # as long a lease, from now: the lock is held
                held = replace(held, lease_expires=held.lease_expires + time.time() - asked)
            try:
                conn.execute(INSERT_RUN, (*record_values(held), len(held.trace)))
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"run {held.run_id!r} exists already") from exc
            append_trace(conn, held.run_id, 0, held.trace)

        await self._writer.write(create)
        if record.owner is not None:
            self._seqs[record.run_id] = 0

    async def claim_runs(
        self, owner: str, limit: int, lease: float, *, skip: Collection[str] = ()
    ) -> list[RunRecord]:
        if limit <= 0:
            return []

        def claim(conn: sqlite3.Connection) -> tuple[list[Any], dict[str, Any]]:
            now = time.time()  # read once the lock is held
            params = (owner, now + lease, now, dump(list(skip)), limit)
            rows = conn.execute(CLAIM, params).fetchall()
            return rows, views(conn, [row[0] for row in rows])

        rows, found = await self._writer.write(claim, slow=True)  # their traces too
        records = []
        for row in rows:
            view = found[row[0]]
            records.append(record_of_row(with_newest_state(row, view), view[0]))
            self._seqs[row[0]] = view[2]
        records.sort(key=lambda record: (record.header.created_at, record.run_id))
        return records

    async def renew_leases(self, owner: str, run_ids: list[str], lease: float) -> dict[str, bool]:
        if not run_ids:
            return {}
        rows = await self._writer.write(  # the expiry is read once the lock is held
            lambda conn: conn.execute(RENEW, (time.time() + lease, owner, dump(run_ids))).fetchall()
        )
        return {run_id: bool(cancel) for run_id, cancel in rows}

    async def checkpoint(
        self,
        run_id: str,
        owner: str,
        checkpoint: dict[str, Any],
        trace: list[TraceRow],
        *,
        epoch: int | None = None,
    ) -> None:
        # One INSERT under the write lock, so the ownership test and the insert are one
        # atomic step; the number is remembered once its transaction has committed.
        state, rows = dump(checkpoint), dump(trace)
        known = self._seqs.get(run_id)

        def append(conn: sqlite3.Connection) -> int:
            last = known
            for _ in range(2):
                if last is None:  # not claimed through this object: ask the database
                    last = last_seq(conn, run_id)
                seq = last + 1
                try:
                    params = (run_id, seq, state, rows, owner, epoch)
                    held = conn.execute(CHECKPOINT, params).rowcount
                    break
                except sqlite3.IntegrityError:  # the number was taken: count again
                    last = None
            else:
                raise StoreError(f"run {run_id!r}: cannot number its checkpoint")
            if not held:
                raise LeaseLost(f"run {run_id!r} is no longer held by {owner!r}")
            if not seq % FOLD_EVERY:
                fold(conn, run_id)
            return seq

        try:
            self._seqs[run_id] = await self._writer.write(append)
        except StoreError:
            self._seqs.pop(run_id, None)
            raise

    async def finish_run(
        self, record: RunRecord, trace: list[TraceRow], *, variables: dict[str, Any] | None = None
    ) -> bool:
        fence = (record.run_id, record.owner, record.lease_epoch, record.lease_epoch)
        ending = finish_columns(record)
        step = None
        if variables is not None and (count := finish_step(record, trace)):
            step = (dump(trace[:count]), dump(variables))
        self._seqs.pop(record.run_id, None)

        def end(conn: sqlite3.Connection) -> bool:
            return finish(conn, record.run_id, ending, fence, trace, step)

        return await self._writer.write(end)

    async def release_runs(self, owner: str, run_ids: list[str]) -> None:
        for run_id in run_ids:
            self._seqs.pop(run_id, None)
        if run_ids:
            await self._write(
                "UPDATE runs SET status = 'QUEUED', owner = NULL, lease_expires = NULL "
                f"WHERE owner = ? AND {UNFINISHED} AND {IN_IDS}",
                (owner, dump(run_ids)),
            )

    async def request_cancel(self, run_id: str) -> bool:
        values = cancel_values(run_id)
        return await self._writer.write(lambda conn: conn.execute(CANCEL, values).rowcount == 1)

    async def request_cancel_version(self, flow: str, version: int) -> int:
        values = cancel_version_values(flow, version)
        return await self._writer.write(
            lambda conn: int(conn.execute(CANCEL_VERSION, values).rowcount), slow=True
        )

    async def cancel_requested(self, run_ids: list[str]) -> set[str]:
        rows = self._read(
            f"SELECT run_id FROM runs WHERE cancel_requested AND {IN_IDS}", (dump(run_ids),)
        )
        return {run_id for (run_id,) in rows}

    async def get_run_record(self, run_id: str) -> RunRecord | None:
        found = self._row(run_id)
        return record_of_row(found[0], found[1]) if found else None

    async def list_runs(self, query: RunQuery) -> list[RunSummary]:
        with self._reader.snapshot() as conn:  # rows and checkpoints
            return list_summaries(conn, query)

    async def run_steps(self, run_id: str) -> list[RunStep] | None:
        with self._reader.snapshot() as conn:  # steps and checkpoints
            return sqlite_steps(conn, run_id)

    async def prune_runs(self, before: float) -> int:
        return await self._writer.write(lambda conn: prune(conn, before), slow=True)
