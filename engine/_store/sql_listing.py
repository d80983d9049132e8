"""Listing and pruning runs in the database stores: the statements both share.

A listing is one ``SELECT`` over ``runs`` ordered by the key ``(created_at, run_id)``
descending, the filters as ``WHERE`` terms and the previous page's key as a row-value
comparison, which both databases answer from the version 3 indexes. Statements use
``?`` placeholders (the PostgreSQL store converts them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._model.listing import RunQuery, RunSummary
from .._model.types import RunStatus
from .sql import DECODE, UNFINISHED, load

__all__ = ["OLD_FINISHED", "list_statement", "summary_of_row", "unfinished"]

_FIELDS = (
    "run_id",
    "flow",
    "version",
    "status",
    "has_errors",
    "error",
    "user_id",
    "parent_run_id",
    "root_run_id",
    "depth",
    "created_at",
    "started_at",
    "finished_at",
)
# An unfinished run's start and handled errors are in its checkpoint until it ends.
_SELECT = f"SELECT {', '.join(_FIELDS)}, CASE WHEN {UNFINISHED} THEN checkpoint END FROM runs"
_FILTERS = ("flow", "user_id", "parent_run_id", "root_run_id")

OLD_FINISHED = (
    "SELECT run_id FROM runs WHERE created_at < ? "
    "AND status IN ('COMPLETED', 'FAILED', 'CANCELLED')"
)
"""The finished runs created before a time: what ``prune_runs`` removes."""


def list_statement(query: RunQuery) -> tuple[str, list[Any]]:
    """The ``SELECT`` of one page of ``query`` and its parameters."""
    where: list[str] = []
    params: list[Any] = []
    for column in _FILTERS:
        value = getattr(query, column)
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if query.statuses:
        where.append(f"status IN ({', '.join('?' * len(query.statuses))})")
        params.extend(status.value for status in query.statuses)
    if query.since is not None:
        where.append("created_at >= ?")
        params.append(query.since)
    if query.until is not None:
        where.append("created_at < ?")
        params.append(query.until)
    if query.after is not None:
        where.append("(created_at, run_id) < (?, ?)")
        params.extend(query.after)
    sql = _SELECT + (f" WHERE {' AND '.join(where)}" if where else "")
    params.append(query.limit)
    return sql + " ORDER BY created_at DESC, run_id DESC LIMIT ?", params


def summary_of_row(row: Sequence[Any], state: str | None = None) -> RunSummary:
    """A run's summary from a row of :func:`list_statement` (``state``: a newer
    checkpoint than the row's own, SQLite's appended ones)."""
    values = {name: DECODE[name](value) for name, value in zip(_FIELDS, row, strict=False)}
    error = values.pop("error")
    snapshot = load(state if state is not None else row[len(_FIELDS)]) or {}
    started_at = values.pop("started_at")
    if started_at is None and snapshot.get("started_at") is not None:
        started_at = float(snapshot["started_at"])
    values["has_errors"] = values["has_errors"] or bool(snapshot.get("has_errors"))
    return RunSummary(
        **values,
        error_code=str(error["code"]) if isinstance(error, dict) and "code" in error else None,
        started_at=started_at,
    )


def unfinished(row: Sequence[Any]) -> bool:
    return RunStatus(row[_FIELDS.index("status")]) in (RunStatus.QUEUED, RunStatus.RUNNING)
