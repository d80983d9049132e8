"""The PostgreSQL store: one database shared by worker processes on many machines.

URL: ``postgresql://user[:password]@host[:port]/database`` (``postgres://`` too), any
libpq option in the query string, plus ``pool_size=N`` (connections per store object,
default 10).

Connections come from a ``psycopg_pool`` pool opened on first use, in autocommit mode:
most operations are one statement, hence one round trip and one transaction. Where a
change spans tables it is still one statement, with data-modifying ``WITH`` clauses:
``checkpoint`` updates the run and appends its trace rows, ``add_version`` takes the
next number from the ``flows`` row (``INSERT … ON CONFLICT DO UPDATE``, which locks
that row, so concurrent processes get distinct numbers) and inserts the version.

Claims run ``SELECT … FOR UPDATE SKIP LOCKED`` and the ``UPDATE`` that takes the runs
in one statement: concurrent claimers skip each other's rows instead of waiting, and
PostgreSQL re-checks a row's status once it holds its lock, so no run is claimed twice.
Queuing a run or handing runs back notifies the workers (``postgres_queue``).
Leases are Unix times from ``time.time()`` on the workers' clocks, read once the
connection is in hand; keep the clocks in sync (NTP) and leases well above the skew.
``checkpoint`` and ``finish_run`` write only where owner and epoch still match and the
run is unfinished (:class:`LeaseLost`, or ``False``): a run is finished exactly once.
Outages (see :class:`Store`): the pool checks each connection before handing it out,
replacing those a restart broke; a lost connection is :class:`StoreUnavailable`.

Durability is the server's: with its default ``synchronous_commit = on`` an
acknowledged commit is flushed to the write-ahead log before the call returns.

psycopg's asynchronous connections run on asyncio, so this store needs the asyncio
backend of anyio.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool

from permissions import Permission, Role, Settings, User

from .._model.errors import LeaseLost, Problem, StoreError, StoreUnavailable
from .._model.listing import RunQuery, RunSummary
from .._model.records import RunRecord, TraceRow
from .._model.steps import RunStep
from .._model.types import RunResult, VersionInfo, VersionStatus
from .base import GateView
from .postgres_pool import open_pool
from .postgres_queue import QUEUE_RUN, RELEASE, Listener
from .postgres_writes import CHECKPOINT, CLAIM, FINISH, trace_params
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
    finish_values,
    gate_query,
    gate_selected,
    record_of_row,
    record_values,
    result_from_row,
    result_values,
    setting_change,
    trace_from_rows,
    version_from_row,
)
from .sql_listing import OLD_FINISHED, list_statement, summary_of_row
from .steps import NO_STEP, SELECT_STEPS, StepBudget, finish_step, pg_step, steps_of

__all__ = ["PostgresStore"]


def _pg(sql: str) -> str:
    """A statement written with ``?`` placeholders, in psycopg's ``%s`` style."""
    return sql.replace("?", "%s")


_INSERT_RUN = _pg(INSERT_RUN)
_UPSERT_RUN = _pg(UPSERT_RUN)
_ADD_VERSION = (
    "WITH n AS (INSERT INTO flows (flow, last_version) VALUES (%s, 1) ON CONFLICT (flow) "
    "DO UPDATE SET last_version = flows.last_version + 1 RETURNING last_version) "
    "INSERT INTO versions (flow, version, status, document, problems, created_at) "
    "SELECT %s, last_version, %s, %s, %s, %s FROM n RETURNING version"
)
_PRUNE = (
    f"WITH d AS (DELETE FROM runs WHERE run_id IN ({_pg(OLD_FINISHED)}) RETURNING run_id), "
    "t AS (DELETE FROM run_trace WHERE run_id IN (SELECT run_id FROM d)), "
    "s AS (DELETE FROM run_steps WHERE run_id IN (SELECT run_id FROM d)) SELECT count(*) FROM d"
)


class PostgresStore:
    """A durable store in a PostgreSQL database (see the module docstring for the design)."""

    durable = True

    def __init__(self, conninfo: str, *, pool_size: int = 10, timeout: float = 30.0) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        self.conninfo = conninfo
        self.pool_size = pool_size
        self.timeout = timeout
        self._pool: AsyncConnectionPool | None = None
        self._lock = anyio.Lock()
        self._cache = SettingsCache()
        self._steps = StepBudget()
        self._channel = ""  # where queued runs are announced; known once the pool is open
        self._listener = Listener(conninfo, timeout=timeout, name=repr(self))

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """The store a ``postgresql:`` URL names (see the module docstring)."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError(f"not a PostgreSQL URL: {url!r}")
        pool_size, kept = 10, []
        for option in filter(None, parts.query.split("&")):
            key, _, value = option.partition("=")
            if key == "pool_size":
                pool_size = int(value)
            else:
                kept.append(option)  # for libpq, as written
        return cls(urlunsplit(parts._replace(query="&".join(kept))), pool_size=pool_size)

    def __repr__(self) -> str:
        parts = urlsplit(self.conninfo)
        host = parts.hostname or "local"
        return f"PostgresStore({host}:{parts.port or 5432}{parts.path})"

    # -- connections ---------------------------------------------------------------------

    async def _open(self) -> AsyncConnectionPool:
        async with self._lock:
            if self._pool is not None:
                return self._pool
            pool, self._channel = await open_pool(
                self.conninfo, self.pool_size, self.timeout, f"PostgreSQL database {self!r}"
            )
            self._pool = pool
            return pool

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            pool = self._pool or await self._open()
            async with pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:  # connection lost, pool timeout, shutdown
            raise StoreUnavailable(f"PostgreSQL store {self!r}: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store {self!r}: {exc}") from exc

    async def _all(
        self, sql: str, params: Sequence[Any] | Callable[[], Sequence[Any]] = ()
    ) -> list[tuple[Any, ...]]:
        """The rows of one statement; ``params`` made once the connection is in hand."""
        async with self._connection() as conn:
            values = params() if callable(params) else params
            return await (await conn.execute(sql, values)).fetchall()

    async def wait_for_queued(self) -> None:
        """See :class:`QueueSignals` and the ``postgres_queue`` module."""
        await self._listener.wait()

    async def close(self) -> None:
        await self._listener.close()
        async with self._lock:
            pool, self._pool = self._pool, None
            if pool is not None:
                await pool.close()

    # -- versions ------------------------------------------------------------------------

    async def add_version(
        self,
        flow: str,
        document: dict[str, Any],
        status: VersionStatus,
        problems: tuple[Problem, ...],
    ) -> VersionInfo:
        now = time.time()
        values = (flow, flow, status.value, dump(document), dump_problems(problems), now)
        ((number,),) = await self._all(_ADD_VERSION, values)
        return VersionInfo(flow, int(number), status, tuple(problems), document, now)

    async def get_version(self, flow: str, version: int) -> VersionInfo | None:
        rows = await self._all(
            SELECT_VERSIONS + "WHERE flow = %s AND version = %s", (flow, version)
        )
        return version_from_row(flow, rows[0]) if rows else None

    async def list_versions(self, flow: str) -> list[VersionInfo]:
        rows = await self._all(SELECT_VERSIONS + "WHERE flow = %s ORDER BY version", (flow,))
        return [version_from_row(flow, row) for row in rows]

    async def list_flows(self) -> list[str]:
        return sorted(flow for (flow,) in await self._all("SELECT flow FROM flows"))

    async def select_version(
        self, flow: str, version: int | None
    ) -> tuple[int, VersionStatus] | None:
        sql, params = gate_query(flow, version)
        return gate_selected((await self._all(_pg(sql), params))[0])

    async def set_statuses(self, flow: str, statuses: dict[int, VersionStatus]) -> None:
        async with self._connection() as conn, conn.transaction():
            for number, status in statuses.items():
                cursor = await conn.execute(
                    "UPDATE versions SET status = %s WHERE flow = %s AND version = %s",
                    (VersionStatus(status).value, flow, number),
                )
                if cursor.rowcount != 1:
                    raise StoreError(f"flow {flow!r} has no version {number}")

    # -- permission settings -------------------------------------------------------------

    async def permission_settings(self) -> Settings:
        ((version,),) = await self._all("SELECT version FROM settings_state")
        cached = self._cache.get(version)
        if cached is not None:
            return cached
        # One statement, so one snapshot: the counter and the rows it counts.
        rows = await self._all(
            "SELECT s.version, s.default_permission, p.flow, p.kind, p.name, p.permission "
            "FROM settings_state s LEFT JOIN permission_settings p ON TRUE"
        )
        settings = build_settings(rows[0][1], (row[2:] for row in rows if row[2] is not None))
        return self._cache.put(rows[0][0], settings)

    async def gate_view(self, flow: str, version: int | None) -> GateView:
        sql, params = gate_query(flow, version)
        row = (await self._all(_pg(sql), params))[0]
        return self._cache.get(row[0]) or await self.permission_settings(), gate_selected(row)

    async def set_permission(
        self, subject: User | Role, permission: Permission, flow: str | None
    ) -> None:
        sql, params = setting_change(subject, permission, flow)
        ((version,),) = await self._all(
            f"WITH c AS ({_pg(sql)}) "
            "UPDATE settings_state SET version = version + 1 RETURNING version",
            params,
        )
        self._cache.changed(version, lambda s: s.with_setting(subject, permission, flow))

    async def set_default_permission(self, permission: Permission) -> None:
        Settings().with_default(permission)  # refuses INHERIT
        ((version,),) = await self._all(_pg(SET_DEFAULT), (Permission(permission).value,))
        self._cache.changed(version, lambda s: s.with_default(permission))

    # -- runs ----------------------------------------------------------------------------

    async def _traces(
        self, conn: psycopg.AsyncConnection[Any], lengths: dict[str, int]
    ) -> dict[str, list[TraceRow]]:
        """The trace of each run, up to the length its row had when it was read."""
        traces: dict[str, list[TraceRow]] = {run_id: [] for run_id in lengths}
        if not any(lengths.values()):
            return traces
        cursor = await conn.execute(
            "SELECT run_id, seq, block, type, start, duration, outcome FROM run_trace "
            "WHERE run_id = ANY(%s) ORDER BY run_id, seq",
            (list(lengths),),
        )
        for row in await cursor.fetchall():
            if row[1] < lengths[row[0]]:
                traces[row[0]].extend(trace_from_rows([row[2:]]))
        return traces

    async def _record_row(self, run_id: str) -> tuple[tuple[Any, ...], list[TraceRow]] | None:
        async with self._connection() as conn:
            cursor = await conn.execute(f"SELECT {RUN} FROM runs WHERE run_id = %s", (run_id,))
            row = await cursor.fetchone()
            if row is None:
                return None
            return row, (await self._traces(conn, {run_id: row[-1]}))[run_id]

    async def _insert(
        self, sql: str, values: tuple[Any, ...], trace: list[TraceRow], *, queued: bool = False
    ) -> None:
        rows = [(values[0], seq, *entry) for seq, entry in enumerate(trace)]
        async with self._connection() as conn, conn.transaction():
            try:
                await conn.execute(sql, (*values, len(trace)))
            except psycopg.errors.UniqueViolation as exc:
                raise StoreError(f"run {values[0]!r} exists already") from exc
            if queued:  # delivered at commit
                await conn.execute("SELECT pg_notify(%s, '')", (self._channel,))
            await conn.execute("DELETE FROM run_trace WHERE run_id = %s", (values[0],))
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO run_trace (run_id, seq, block, type, start, duration, outcome)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    rows,
                )

    async def save_run(self, result: RunResult) -> None:
        await self._insert(_UPSERT_RUN, *result_values(result))

    async def get_run(self, run_id: str) -> RunResult | None:
        found = await self._record_row(run_id)
        return result_from_row(*found) if found is not None else None

    async def create_run(self, record: RunRecord) -> None:
        values, queued = record_values(record), record.owner is None
        if record.trace:  # a copied run: its trace rows too, in one transaction
            await self._insert(_INSERT_RUN, values, record.trace, queued=queued)
        else:  # a new run has no trace rows yet (they go with their run): one statement
            async with self._connection() as conn:
                try:
                    if queued:
                        await conn.execute(QUEUE_RUN, (*values, 0, self._channel))
                    else:
                        await conn.execute(_INSERT_RUN, (*values, 0))
                except psycopg.errors.UniqueViolation as exc:
                    raise StoreError(f"run {record.run_id!r} exists already") from exc
        if not queued:
            self._steps.start(record.run_id)

    async def claim_runs(
        self, owner: str, limit: int, lease: float, *, skip: Collection[str] = ()
    ) -> list[RunRecord]:
        if limit <= 0:
            return []
        async with self._connection() as conn:
            now = time.time()  # once the connection is in hand
            cursor = await conn.execute(CLAIM, (now, list(skip), limit, owner, now + lease))
            rows = await cursor.fetchall()
            traces = await self._traces(conn, {row[0]: row[-1] for row in rows})
        records = [record_of_row(row, traces[row[0]]) for row in rows]
        for record in records:
            if not record.trace:  # no block has run: no step is kept yet
                self._steps.start(record.run_id)
        records.sort(key=lambda record: (record.header.created_at, record.run_id))
        return records

    async def renew_leases(self, owner: str, run_ids: list[str], lease: float) -> dict[str, bool]:
        if not run_ids:
            return {}
        rows = await self._all(
            f"UPDATE runs SET lease_expires = %s WHERE owner = %s AND {UNFINISHED} "
            "AND run_id = ANY(%s) RETURNING run_id, cancel_requested",
            lambda: (time.time() + lease, owner, list(run_ids)),
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
        fence = (run_id, owner, epoch, epoch)
        used = await self._steps.take(run_id, self._all)
        state, step = pg_step(checkpoint, trace, used)
        params = (state, len(trace), *fence, *trace_params(trace), *step)
        ((held,),) = await self._all(CHECKPOINT, params)
        if not held:
            raise LeaseLost(f"run {run_id!r} is no longer held by {owner!r}")
        self._steps.put(run_id, used, step)

    async def finish_run(
        self, record: RunRecord, trace: list[TraceRow], *, variables: dict[str, Any] | None = None
    ) -> bool:
        fence = (record.run_id, record.owner, record.lease_epoch, record.lease_epoch)
        values = (*finish_values(record, len(trace)), *fence)
        step = NO_STEP
        count = finish_step(record, trace) if variables is not None else 0
        if count:
            used = await self._steps.take(record.run_id, self._all)
            step = pg_step({"vars": variables}, trace[:count], used)[1]
        self._steps.forget([record.run_id])
        back = len(trace) - count + 1
        params = (*values, *trace_params(trace), back, *step, back)
        ((done,),) = await self._all(FINISH, params)
        return bool(done)

    async def release_runs(self, owner: str, run_ids: list[str]) -> None:
        self._steps.forget(run_ids)
        if run_ids:  # and wake a worker to claim them
            await self._all(RELEASE, lambda: (owner, list(run_ids), self._channel))

    async def _changed(self, sql: str, params: Sequence[Any]) -> int:
        async with self._connection() as conn:
            return (await conn.execute(sql, params)).rowcount

    async def request_cancel(self, run_id: str) -> bool:
        return await self._changed(_pg(CANCEL), cancel_values(run_id)) == 1

    async def request_cancel_version(self, flow: str, version: int) -> int:
        return await self._changed(_pg(CANCEL_VERSION), cancel_version_values(flow, version))

    async def cancel_requested(self, run_ids: list[str]) -> set[str]:
        rows = await self._all(
            "SELECT run_id FROM runs WHERE cancel_requested AND run_id = ANY(%s)", (run_ids,)
        )
        return {run_id for (run_id,) in rows}

    async def get_run_record(self, run_id: str) -> RunRecord | None:
        found = await self._record_row(run_id)
        return record_of_row(*found) if found is not None else None

    async def list_runs(self, query: RunQuery) -> list[RunSummary]:
        sql, params = list_statement(query)
        return [summary_of_row(row) for row in await self._all(_pg(sql), params)]

    async def run_steps(self, run_id: str) -> list[RunStep] | None:
        return steps_of(await self._all(_pg(SELECT_STEPS), (run_id,)))

    async def prune_runs(self, before: float) -> int:
        ((count,),) = await self._all(_PRUNE, (before,))
        return int(count)
