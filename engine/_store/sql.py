"""What the database stores share: the tables, the schema version, and row codecs.

The same DDL serves SQLite and PostgreSQL (both accept these types). JSON values —
documents, problems, roles, inputs, outputs, errors, checkpoints — are kept as JSON
text, so both databases store exactly what was written and decode it the same way.

Tables::

    schema_version    one row: the version of this layout in the database
    settings_state    one row: a counter bumped by every permission change, the default
    permission_settings  (flow, kind, name) -> GRANT|DENY; flow '' is app-wide
    flows             flow -> last version number (numbers are taken from it atomically)
    versions          (flow, version) -> status, document, problems, created_at
    runs              one row per run (a RunRecord); trace_len counts its trace rows
    run_trace         (run_id, seq) -> block, type, start, duration, outcome
    checkpoints       (run_id, seq) -> state, trace (SQLite only, from version 2)

A run's state is its newest ``checkpoints`` row, else the ``checkpoint`` column of its
``runs`` row; its trace is its ``run_trace`` rows followed by the ``trace`` of each of
its ``checkpoints`` rows in order. SQLite appends one ``checkpoints`` row per block (an
insert is the cheapest write it has) and folds them into ``runs`` and ``run_trace`` now
and then and when the run ends; PostgreSQL updates the ``runs`` row instead.

Migrations: :data:`MIGRATIONS` lists, for each schema version and each database, the
statements that bring a database from the previous version to it. A store runs the missing ones in
one transaction while holding the database's write lock, so two processes opening a
new database at once do not both create it; a database newer than this code is
refused with :class:`StoreError` rather than guessed at.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Literal

from permissions import Level, Permission, Role, Settings, User

from .._model.errors import Problem, StoreError
from .._model.records import RunRecord, TraceRow, result_of
from .._model.types import RunResult, RunStatus, VersionInfo, VersionStatus, json_safe

SCHEMA_VERSION = 2

_V1 = (
    """CREATE TABLE settings_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version BIGINT NOT NULL,
        default_permission TEXT NOT NULL CHECK (default_permission IN ('GRANT', 'DENY')))""",
    "INSERT INTO settings_state (id, version, default_permission) VALUES (1, 0, 'GRANT')",
    """CREATE TABLE permission_settings (
        flow TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('user', 'role')),
        name TEXT NOT NULL,
        permission TEXT NOT NULL CHECK (permission IN ('GRANT', 'DENY')),
        PRIMARY KEY (flow, kind, name))""",
    "CREATE TABLE flows (flow TEXT PRIMARY KEY, last_version INTEGER NOT NULL)",
    """CREATE TABLE versions (
        flow TEXT NOT NULL,
        version INTEGER NOT NULL,
        status TEXT NOT NULL,
        document TEXT NOT NULL,
        problems TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (flow, version))""",
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        version INTEGER NOT NULL,
        status TEXT NOT NULL,
        user_id TEXT,
        roles TEXT NOT NULL,
        inputs TEXT NOT NULL,
        parent_run_id TEXT,
        root_run_id TEXT,
        depth INTEGER NOT NULL,
        via TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        output TEXT,
        error TEXT,
        has_errors BOOLEAN NOT NULL,
        checkpoint TEXT,
        cancel_requested BOOLEAN NOT NULL,
        owner TEXT,
        lease_expires DOUBLE PRECISION,
        log TEXT,
        trace_len INTEGER NOT NULL)""",
    # What claim_runs scans: unfinished runs, oldest first.
    """CREATE INDEX runs_unfinished ON runs (created_at, run_id)
        WHERE status IN ('QUEUED', 'RUNNING')""",
    "CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL",
    """CREATE TABLE run_trace (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        block TEXT NOT NULL,
        type TEXT NOT NULL,
        start DOUBLE PRECISION NOT NULL,
        duration DOUBLE PRECISION NOT NULL,
        outcome TEXT NOT NULL,
        PRIMARY KEY (run_id, seq))""",
)

# Version 2: SQLite appends a row per checkpoint instead of rewriting the run's row.
# Without a rowid the row lives in the primary key's own tree: one tree to write.
_V2_SQLITE = (
    """CREATE TABLE checkpoints (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        state TEXT NOT NULL,
        trace TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)) WITHOUT ROWID""",
)

Dialect = Literal["sqlite", "postgresql"]

MIGRATIONS: dict[int, dict[Dialect, tuple[str, ...]]] = {
    1: {"sqlite": _V1, "postgresql": _V1},
    2: {"sqlite": _V2_SQLITE, "postgresql": ()},
}
"""Statements taking a database of each kind from version ``n - 1`` to ``n``."""

CREATE_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
READ_VERSION = "SELECT version FROM schema_version"


def migration(found: Sequence[Any] | None, where: str, dialect: Dialect) -> list[str]:
    """The statements to run on a database whose ``schema_version`` row is ``found``."""
    current = 0 if found is None else int(found[0])
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"{where} has schema version {current}, newer than this flowwarden knows "
            f"({SCHEMA_VERSION}); upgrade flowwarden to use it"
        )
    if current == SCHEMA_VERSION:
        return []
    steps = range(current + 1, SCHEMA_VERSION + 1)
    statements = [s for n in steps for s in MIGRATIONS[n][dialect]]
    if found is None:
        statements.append(f"INSERT INTO schema_version (version) VALUES ({SCHEMA_VERSION})")
    else:
        statements.append(f"UPDATE schema_version SET version = {SCHEMA_VERSION}")
    return statements


# -- statements both stores run (``?`` placeholders; PostgreSQL's module converts) ------

UNFINISHED = "status IN ('QUEUED', 'RUNNING')"
SELECT_VERSIONS = "SELECT version, status, document, problems, created_at FROM versions "
SELECT_VERSION = (
    "SELECT version, status FROM versions WHERE flow = ? ORDER BY "
    "CASE WHEN status IN ('LIVE', 'PAUSED') THEN 0 ELSE 1 END, "
    "CASE WHEN status IN ('LIVE', 'PAUSED') THEN version ELSE -version END LIMIT 1"
)
CANCEL = (
    "UPDATE runs SET "
    "cancel_requested = CASE WHEN status = 'RUNNING' THEN TRUE ELSE cancel_requested END, "
    "error = CASE WHEN status = 'QUEUED' THEN ? ELSE error END, "
    "finished_at = CASE WHEN status = 'QUEUED' THEN ? ELSE finished_at END, "
    "status = CASE WHEN status = 'QUEUED' THEN 'CANCELLED' ELSE status END "
    f"WHERE run_id = ? AND {UNFINISHED}"
)
FINISH_SET = (
    "status = ?, output = ?, error = ?, has_errors = ?, started_at = ?, finished_at = ?, "
    "checkpoint = ?, cancel_requested = ?, lease_expires = NULL, trace_len = trace_len + ?"
)
DELETE_SETTING = "DELETE FROM permission_settings WHERE flow = ? AND kind = ? AND name = ?"
UPSERT_SETTING = (
    "INSERT INTO permission_settings (flow, kind, name, permission) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (flow, kind, name) DO UPDATE SET permission = excluded.permission"
)
SET_DEFAULT = (
    "UPDATE settings_state SET default_permission = ?, version = version + 1 RETURNING version"
)


def cancel_values(run_id: str) -> tuple[Any, ...]:
    """Parameters of :data:`CANCEL`: a QUEUED run ends CANCELLED now with this error."""
    error = {"code": "cancelled", "message": "the run was cancelled", "block": None}
    return (dump(error), time.time(), run_id)


def finish_values(record: RunRecord, added: int) -> tuple[Any, ...]:
    """Parameters of :data:`FINISH_SET` for ``record`` with ``added`` trace rows."""
    r = record
    error = None if r.error is None else dump(r.error)
    checkpoint = None if r.checkpoint is None else dump(r.checkpoint)
    return (
        r.status.value,
        dump(r.output),
        error,
        bool(r.has_errors),
        r.started_at,
        r.finished_at,
        checkpoint,
        bool(r.cancel_requested),
        added,
    )


def setting_change(
    subject: User | Role, permission: Permission, flow: str | None
) -> tuple[str, tuple[str, ...]]:
    """The statement and parameters storing one setting (refusing what memory refuses)."""
    Settings().with_setting(subject, permission, flow)
    kind, name = ("user", subject.id) if isinstance(subject, User) else ("role", subject.name)
    if Permission(permission) is Permission.INHERIT:
        return DELETE_SETTING, (flow or "", kind, name)
    return UPSERT_SETTING, (flow or "", kind, name, Permission(permission).value)


class SettingsCache:
    """The last settings snapshot a store read, and the counter value it belongs to.

    Every change bumps the counter row in the same transaction, so an unchanged counter
    means an unchanged snapshot; a store that made a change itself, and saw the counter
    move by exactly one, applies the change to its snapshot instead of reloading.
    """

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.version = -1

    def get(self, version: int) -> Settings | None:
        return self.settings if version == self.version else None

    def put(self, version: int, settings: Settings) -> Settings:
        self.settings, self.version = settings, version
        return settings

    def changed(self, version: int, change: Callable[[Settings], Settings]) -> None:
        if self.settings is not None and version == self.version + 1:
            self.put(version, change(self.settings))


# -- codecs ---------------------------------------------------------------------------

RUN_COLUMNS = (
    "run_id, flow, version, status, user_id, roles, inputs, parent_run_id, root_run_id, "
    "depth, via, created_at, started_at, finished_at, output, error, has_errors, "
    "checkpoint, cancel_requested, owner, lease_expires, log"
)
"""The columns :func:`record_from_row` reads, in its order."""


_ENCODE = json.JSONEncoder(separators=(",", ":"), default=json_safe).encode  # made once: cheaper


def dump(value: Any) -> str:
    """JSON text of ``value``; what JSON lacks (bytes, timestamps) as the API shows it."""
    try:
        return _ENCODE(value)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot store {type(value).__name__} value as JSON: {exc}") from exc


def load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def dump_problems(problems: Iterable[Problem]) -> str:
    return dump(
        [
            {"message": p.message, "block": p.block, "field": p.field, "file": p.file}
            for p in problems
        ]
    )


def version_from_row(flow: str, row: Sequence[Any]) -> VersionInfo:
    """A version from ``version, status, document, problems, created_at``."""
    number, status, document, problems, created_at = row
    return VersionInfo(
        flow,
        int(number),
        VersionStatus(status),
        tuple(Problem(**problem) for problem in load(problems)),
        load(document),
        float(created_at),
    )


def record_values(record: RunRecord, log: list[Any] | None = None) -> tuple[Any, ...]:
    """A record's column values in :data:`RUN_COLUMNS` order, JSON columns encoded."""
    r = record
    return (
        r.run_id,
        r.flow,
        r.version,
        r.status.value,
        r.user_id,
        dump(list(r.roles)),
        dump(r.inputs),
        r.parent_run_id,
        r.root_run_id,
        r.depth,
        r.via,
        r.created_at,
        r.started_at,
        r.finished_at,
        dump(r.output),
        None if r.error is None else dump(r.error),
        bool(r.has_errors),
        None if r.checkpoint is None else dump(r.checkpoint),
        bool(r.cancel_requested),
        r.owner,
        r.lease_expires,
        None if log is None else dump(log),
    )


def result_record(result: RunResult) -> tuple[RunRecord, list[Any]]:
    """A finished non-durable run as a record (no checkpoint, no owner) and its log."""
    r = result
    record = RunRecord(
        r.run_id,
        r.flow,
        r.version,
        r.status,
        r.user_id,
        tuple(r.roles),
        r.inputs,
        parent_run_id=r.parent_run_id,
        root_run_id=r.root_run_id,
        depth=r.depth,
        created_at=r.created_at,
        finished_at=r.finished_at,
        output=r.output,
        error=r.error.to_dict() if r.error is not None else None,
        has_errors=r.has_errors,
        trace=[(e.block, e.type, e.start, e.duration, e.outcome) for e in r.trace],
    )
    return record, list(r.log)


def trace_from_rows(rows: Iterable[Sequence[Any]]) -> list[TraceRow]:
    return [(str(b), str(t), float(s), float(d), str(o)) for b, t, s, d, o in rows]


def record_fields(row: Sequence[Any]) -> dict[str, Any]:
    """The keyword arguments of a RunRecord for a row of :data:`RUN_COLUMNS` (no trace)."""
    (run_id, flow, version, status, user_id, roles, inputs, parent, root, depth, via) = row[:11]
    (created, started, finished, output, error, has_errors, checkpoint) = row[11:18]
    cancel_requested, owner, lease_expires = row[18:21]
    return {
        "run_id": run_id,
        "flow": flow,
        "version": int(version),
        "status": RunStatus(status),
        "user_id": user_id,
        "roles": tuple(load(roles)),
        "inputs": load(inputs),
        "parent_run_id": parent,
        "root_run_id": root,
        "depth": int(depth),
        "via": via,
        "created_at": float(created),
        "started_at": None if started is None else float(started),
        "finished_at": None if finished is None else float(finished),
        "output": load(output),
        "error": load(error),
        "has_errors": bool(has_errors),
        "checkpoint": load(checkpoint),
        "cancel_requested": bool(cancel_requested),
        "owner": owner,
        "lease_expires": None if lease_expires is None else float(lease_expires),
    }


def result_from_row(row: Sequence[Any], trace: list[TraceRow]) -> RunResult:
    """A run row as a :class:`RunResult`; its log comes from the row (a saved result) or,
    for a durable run, from its checkpoint."""
    result = result_of(RunRecord(**record_fields(row), trace=trace))
    log = load(row[21])
    return replace(result, log=tuple(log)) if isinstance(log, list) else result


def build_settings(default: str, rows: Iterable[Sequence[Any]]) -> Settings:
    """A settings snapshot from the default and ``flow, kind, name, permission`` rows."""
    try:
        levels: dict[str, tuple[dict[str, Permission], dict[str, Permission]]] = {}
        for flow, kind, name, permission in rows:
            users, roles = levels.setdefault(flow, ({}, {}))
            (users if kind == "user" else roles)[name] = Permission(permission)
        app = levels.pop("", ({}, {}))
        return Settings(
            Permission(default),
            Level(*app),
            {flow: Level(users, roles) for flow, (users, roles) in levels.items()},
        )
    except (ValueError, TypeError) as exc:
        raise StoreError(f"malformed permission settings in the store: {exc}") from exc
