"""What the database stores share: statements both run, and the one row codec.

The tables and their migrations are in the schema module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from typing import Any, NamedTuple

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

# -- statements both stores run (``?`` placeholders; PostgreSQL's module converts) ------

UNFINISHED = "status IN ('QUEUED', 'RUNNING')"
SELECT_VERSIONS = "SELECT version, status, document, problems, created_at FROM versions "
SELECT_VERSION = (
    "SELECT version, status FROM versions WHERE flow = ? ORDER BY "
    "CASE WHEN status IN ('LIVE', 'PAUSED') THEN 0 ELSE 1 END, "
    "CASE WHEN status IN ('LIVE', 'PAUSED') THEN version ELSE -version END LIMIT 1"
)
# What the gate reads for one activation, in one statement: the settings counter, and
# the version an activation would run with its status (NULLs: no such flow or version).
GATE_VIEW = (
    "SELECT s.version, v.version, v.status FROM settings_state s "
    f"LEFT JOIN ({SELECT_VERSION}) v ON TRUE"
)
GATE_VIEW_OF = (
    "SELECT s.version, v.version, v.status FROM settings_state s "
    "LEFT JOIN versions v ON v.flow = ? AND v.version = ?"
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


def gate_query(flow: str, version: int | None) -> tuple[str, tuple[Any, ...]]:
    """The statement and parameters of a store's ``gate_view`` (the selected version,
    or the LIVE or PAUSED one, else the newest, when ``version`` is ``None``)."""
    return (GATE_VIEW, (flow,)) if version is None else (GATE_VIEW_OF, (flow, version))


def gate_selected(row: Sequence[Any]) -> tuple[int, VersionStatus] | None:
    """The version and status of a :func:`gate_query` row; ``None``: there is none."""
    return None if row[1] is None else (int(row[1]), VersionStatus(row[2]))


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
RUN = f"{RUN_COLUMNS}, trace_len"
"""What a store reads of a ``runs`` row: its columns and the length of its trace."""
INSERT_RUN = f"INSERT INTO runs ({RUN}) VALUES ({', '.join('?' * len(RUN.split(', ')))})"
UPSERT_RUN = (
    INSERT_RUN
    + " ON CONFLICT (run_id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in RUN.split(", ")[1:])
)
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
    return (*finish_columns(record), added)


def finish_columns(record: RunRecord) -> tuple[Any, ...]:
    """The column values :data:`FINISH_SET` writes for ``record``, JSON encoded: its
    parameters but the count of trace rows added."""
    return tuple(c.encode(getattr(record, c.name)) for c in _FINISH_COLUMNS)


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
