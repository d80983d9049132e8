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
from dataclasses import fields
from typing import Any, Literal, NamedTuple

from permissions import Identity, Level, Permission, Role, Settings, User

from .._model.errors import Problem, StoreError
from .._model.records import CANCELLED, HEADER_FIELDS, RunHeader, RunRecord, TraceRow
from .._model.types import (
    RunError,
    RunResult,
    RunStatus,
    Trace,
    VersionInfo,
    VersionStatus,
    json_safe,
)

SCHEMA_VERSION = 4

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

# Version 3: listing runs newest first, with or without a filter, and pruning old ones
# read an index instead of the whole table (the key is (created_at, run_id), see
# the listing module).
_V3_LISTING = (
    "CREATE INDEX runs_created ON runs (created_at, run_id)",
    "CREATE INDEX runs_flow_created ON runs (flow, created_at, run_id)",
    "CREATE INDEX runs_user_created ON runs (user_id, created_at, run_id)",
    "CREATE INDEX runs_root_created ON runs (root_run_id, created_at, run_id)",
)

# Version 4: claims are fenced. Each claim bumps ``lease_epoch``; writes for a claimed
# run name the epoch they hold, so a process that stalled past its lease (even one that
# claimed the run again meanwhile) can no longer change it.
_V4_LEASE_EPOCH = ("ALTER TABLE runs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0",)

Dialect = Literal["sqlite", "postgresql"]

MIGRATIONS: dict[int, dict[Dialect, tuple[str, ...]]] = {
    1: {"sqlite": _V1, "postgresql": _V1},
    2: {"sqlite": _V2_SQLITE, "postgresql": ()},
    3: {"sqlite": _V3_LISTING, "postgresql": _V3_LISTING},
    4: {"sqlite": _V4_LEASE_EPOCH, "postgresql": _V4_LEASE_EPOCH},
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
CANCEL_VERSION = CANCEL.replace("WHERE run_id = ?", "WHERE flow = ? AND version = ?")
""":data:`CANCEL` for every unfinished run of one version (``stop``)."""
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
    return (dump(CANCELLED.to_dict()), time.time(), run_id)


def cancel_version_values(flow: str, version: int) -> tuple[Any, ...]:
    """Parameters of :data:`CANCEL_VERSION`."""
    return (dump(CANCELLED.to_dict()), time.time(), flow, version)


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

_ENCODE = json.JSONEncoder(separators=(",", ":"), default=json_safe).encode  # made once: cheaper


def dump(value: Any) -> str:
    """JSON text of ``value``; what JSON lacks (bytes, timestamps) as the API shows it."""
    try:
        return _ENCODE(value)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot store {type(value).__name__} value as JSON: {exc}") from exc


def load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _dump_some(value: Any) -> str | None:
    return None if value is None else dump(value)


def _same(value: Any) -> Any:
    return value


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


class _Column(NamedTuple):
    name: str
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


# The ``runs`` columns, each with how a record's value is written and read back: the
# header's fields first (``user_id`` and ``roles`` are its identity), then the record's.
_HEADER_COLUMNS = (
    _Column("run_id", _same, str),
    _Column("flow", _same, str),
    _Column("version", _same, int),
    _Column("user_id", _same, _same),
    _Column("roles", lambda roles: dump(list(roles)), lambda text: tuple(load(text))),
    _Column("inputs", dump, load),
    _Column("parent_run_id", _same, _same),
    _Column("root_run_id", _same, _same),
    _Column("depth", _same, int),
    _Column("via", _same, str),
    _Column("created_at", _same, float),
)
_RECORD_COLUMNS = (
    _Column("status", lambda status: status.value, RunStatus),
    _Column("started_at", _same, _float_or_none),
    _Column("finished_at", _same, _float_or_none),
    _Column("output", dump, load),
    _Column("error", _dump_some, load),
    _Column("has_errors", bool, bool),
    _Column("checkpoint", _dump_some, load),
    _Column("cancel_requested", bool, bool),
    _Column("owner", _same, _same),
    _Column("lease_expires", _same, _float_or_none),
    _Column("lease_epoch", _same, int),
)
_COLUMNS = (*_HEADER_COLUMNS, *_RECORD_COLUMNS)
assert {c.name for c in _HEADER_COLUMNS} == {*HEADER_FIELDS, "user_id", "roles"} - {"identity"}
assert {c.name for c in _RECORD_COLUMNS} == {
    f.name for f in fields(RunRecord) if f.name not in ("header", "trace")
}

RUN_COLUMNS = ", ".join([*(c.name for c in _COLUMNS), "log"])
"""The columns :func:`record_values` writes and :func:`record_of_row` reads, in order."""
COLUMN = {name: index for index, name in enumerate(RUN_COLUMNS.split(", "))}
"""Each column's position in a row of :data:`RUN_COLUMNS`."""
DECODE = {c.name: c.decode for c in _COLUMNS}
"""How each ``runs`` column's stored value is read back."""

_FINISHED = ("status", "output", "error", "has_errors", "started_at", "finished_at")
_FINISH_COLUMNS = tuple(
    c
    for c in _RECORD_COLUMNS
    if c.name in _FINISHED or c.name in ("checkpoint", "cancel_requested")
)
FINISH_SET = (
    ", ".join(f"{c.name} = ?" for c in _FINISH_COLUMNS)
    + ", lease_expires = NULL, trace_len = trace_len + ?"
)
"""The ``SET`` clause writing the end of a run; parameters from :func:`finish_values`."""


def record_values(record: RunRecord, log: list[Any] | None = None) -> tuple[Any, ...]:
    """A record's column values in :data:`RUN_COLUMNS` order, JSON columns encoded."""
    header = record.header
    values = [c.encode(getattr(header, c.name)) for c in _HEADER_COLUMNS]
    values.extend(c.encode(getattr(record, c.name)) for c in _RECORD_COLUMNS)
    values.append(None if log is None else dump(log))
    return tuple(values)


def finish_values(record: RunRecord, added: int) -> tuple[Any, ...]:
    """Parameters of :data:`FINISH_SET` for ``record`` with ``added`` trace rows."""
    return (*(c.encode(getattr(record, c.name)) for c in _FINISH_COLUMNS), added)


def record_of_row(row: Sequence[Any], trace: list[TraceRow]) -> RunRecord:
    """The record of a row of :data:`RUN_COLUMNS` and its trace."""
    head = {c.name: c.decode(value) for c, value in zip(_HEADER_COLUMNS, row, strict=False)}
    identity = Identity(head.pop("user_id"), head.pop("roles"))
    rest = row[len(_HEADER_COLUMNS) :]
    state = {c.name: c.decode(value) for c, value in zip(_RECORD_COLUMNS, rest, strict=False)}
    return RunRecord(RunHeader(identity=identity, **head), trace=trace, **state)


def result_values(result: RunResult) -> tuple[tuple[Any, ...], list[TraceRow]]:
    """A finished non-durable run's column values (:data:`RUN_COLUMNS` order: no
    checkpoint, no owner; its log in the ``log`` column) and its trace rows."""
    error = result.error.to_dict() if result.error is not None else None
    given = {"error": error, "via": "api", "cancel_requested": False, "lease_epoch": 0}
    values = [
        c.encode(given[c.name] if c.name in given else getattr(result, c.name, None))
        for c in _COLUMNS
    ]
    values.append(dump(list(result.log)))
    trace = [(e.block, e.type, e.start, e.duration, e.outcome) for e in result.trace]
    return tuple(values), trace


_RESULT_COLUMNS = tuple(
    (index, c) for index, c in enumerate(_COLUMNS) if c.name in RunResult.__dataclass_fields__
)


def result_from_row(row: Sequence[Any], trace: list[TraceRow]) -> RunResult:
    """A run row as a :class:`RunResult`, read as stored (roles in the order saved); its
    log comes from the row (a saved result) or, for a durable run, from its checkpoint."""
    values = {c.name: c.decode(row[index]) for index, c in _RESULT_COLUMNS}
    snapshot = load(row[COLUMN["checkpoint"]]) or {}
    log = load(row[COLUMN["log"]])
    values["error"] = RunError.from_dict(values["error"])
    values["has_errors"] = values["has_errors"] or bool(snapshot.get("has_errors"))
    log = log if isinstance(log, list) else snapshot.get("log", ())
    if values["started_at"] is None:  # in flight: its start is in its checkpoint
        values["started_at"] = _float_or_none(snapshot.get("started_at"))
    return RunResult(**values, trace=Trace(trace, 0.0), log=tuple(log))


def dump_problems(problems: Iterable[Problem]) -> str:
    return dump(
        [
            {"message": p.message, "block": p.block, "field": p.field, "file": p.file}
            | ({"line": p.line, "column": p.column} if p.line is not None else {})
            | ({"severity": p.severity} if p.severity != "error" else {})
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


def trace_from_rows(rows: Iterable[Sequence[Any]]) -> list[TraceRow]:
    return [(str(b), str(t), float(s), float(d), str(o)) for b, t, s, d, o in rows]


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
