"""SQLite's own statements, and its checkpoint log: one appended ``checkpoints`` row
per block, read back with the run's row and folded into it now and then (see the
schema module's table notes).

The functions take an open connection and are called inside the store's transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from .._model.listing import RunQuery, RunSummary
from .._model.records import TraceRow
from .sql import COLUMN, FINISH_SET, RUN, UNFINISHED, dump, load, trace_from_rows
from .sql_listing import OLD_FINISHED, list_statement, summary_of_row, unfinished
from .steps import STEP_VARIABLES, keep_steps

__all__ = [
    "CHECKPOINT",
    "CLAIM",
    "FINISH",
    "FOLD_EVERY",
    "IN_IDS",
    "NEXT_VERSION",
    "RENEW",
    "append_trace",
    "finish",
    "fold",
    "last_seq",
    "list_summaries",
    "prune",
    "views",
    "with_newest_state",
]

IN_IDS = "run_id IN (SELECT value FROM json_each(?))"
_INSERT_TRACE = (
    "INSERT INTO run_trace (run_id, seq, block, type, start, duration, outcome) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_STATE = COLUMN["checkpoint"]

NEXT_VERSION = (
    "INSERT INTO flows (flow, last_version) VALUES (?, 1) ON CONFLICT (flow) "
    "DO UPDATE SET last_version = flows.last_version + 1 RETURNING last_version"
)
CLAIM = (
    "UPDATE runs SET status = 'RUNNING', owner = ?, lease_expires = ?, "
    "lease_epoch = lease_epoch + 1 WHERE run_id IN "
    f"(SELECT run_id FROM runs WHERE {UNFINISHED} "
    "AND (status = 'QUEUED' OR COALESCE(lease_expires, 0) < ?) "
    "AND run_id NOT IN (SELECT value FROM json_each(?)) "
    f"ORDER BY created_at, run_id LIMIT ?) RETURNING {RUN}"
)
RENEW = (
    f"UPDATE runs SET lease_expires = ? WHERE owner = ? AND {UNFINISHED} AND {IN_IDS} "
    "RETURNING run_id, cancel_requested"
)
FOLD_EVERY = 256
"""A run's checkpoint rows are folded into its ``runs`` row after this many."""

# The writes of a held run: only where its owner (and claim epoch, unless none is named)
# still hold it.
CHECKPOINT = (
    "INSERT INTO checkpoints (run_id, seq, state, trace) SELECT ?1, ?2, ?3, ?4 WHERE EXISTS "
    "(SELECT 1 FROM runs WHERE run_id = ?1 AND owner = ?5 AND status = 'RUNNING' "
    "AND (?6 IS NULL OR lease_epoch = ?6))"
)
FINISH = (
    f"UPDATE runs SET {FINISH_SET} WHERE run_id = ? AND owner IS ? "
    "AND (? = 0 OR lease_epoch = ?) "
    f"AND {UNFINISHED} RETURNING trace_len"
)


def append_trace(
    conn: sqlite3.Connection, run_id: str, first: int, trace: Sequence[TraceRow]
) -> None:
    if trace:
        conn.executemany(_INSERT_TRACE, [(run_id, first + i, *row) for i, row in enumerate(trace)])


def views(
    conn: sqlite3.Connection, run_ids: list[str]
) -> dict[str, tuple[list[TraceRow], str | None, int]]:
    """Each run's whole trace, its newest checkpoint row's state (``None``: the
    ``runs`` row has it) and that row's number (0: none)."""
    found: dict[str, tuple[list[TraceRow], str | None, int]] = {}
    ids = dump(run_ids)
    traces: dict[str, list[TraceRow]] = {run_id: [] for run_id in run_ids}
    rows = conn.execute(
        "SELECT run_id, block, type, start, duration, outcome FROM run_trace "
        f"WHERE {IN_IDS} ORDER BY run_id, seq",
        (ids,),
    ).fetchall()
    for row in rows:
        traces[row[0]].extend(trace_from_rows([row[1:]]))
    newest: dict[str, tuple[str | None, int]] = {}
    rows = conn.execute(
        f"SELECT run_id, seq, state, trace FROM checkpoints WHERE {IN_IDS} ORDER BY run_id, seq",
        (ids,),
    ).fetchall()
    for run_id, seq, state, trace in rows:
        traces[run_id].extend(trace_from_rows(load(trace)))
        newest[run_id] = (state, int(seq))
    for run_id in run_ids:
        found[run_id] = (traces[run_id], *newest.get(run_id, (None, 0)))
    return found


def with_newest_state(row: Sequence[Any], view: tuple[list[TraceRow], str | None, int]) -> Any:
    """``row`` with its checkpoint column replaced by the newest checkpoint."""
    state = view[1]
    return row if state is None else (*row[:_STATE], state, *row[_STATE + 1 :])


def fold(conn: sqlite3.Connection, run_id: str) -> None:
    """Move a run's checkpoint rows into its ``runs``, ``run_trace`` and ``run_steps``
    rows. What readers see does not change, so this may run at any time (in a write
    transaction)."""
    rows, trace = _pending(conn, run_id)
    if not rows:
        return
    (length,) = conn.execute(
        "UPDATE runs SET checkpoint = ?, trace_len = trace_len + ? WHERE run_id = ? "
        "RETURNING trace_len",
        (rows[-1][0], len(trace), run_id),
    ).fetchall()[0]
    append_trace(conn, run_id, length - len(trace), trace)
    keep_steps(conn, run_id, length - len(trace), [(text, kept) for _, text, kept in rows])
    conn.execute("DELETE FROM checkpoints WHERE run_id = ?", (run_id,))


def finish(
    conn: sqlite3.Connection,
    run_id: str,
    ending: Sequence[Any],
    fence: Sequence[Any],
    trace: Sequence[TraceRow],
    step: tuple[str, str] | None,
) -> bool:
    """End a run in one pass: its checkpoint rows are folded in by the ``FINISH``
    statement itself (``ending``: that statement's column values, ``fence``: its
    owner test), then its trace rows, the checkpoints' steps and ``step`` (the
    finish's own, if any) are written after them. False when the run is no longer
    its finisher's to end: nothing is written then, and its checkpoint rows stay for
    whoever holds it (as a fold, they would change nothing a reader sees)."""
    rows, folded = _pending(conn, run_id)
    added = len(folded) + len(trace)
    ended = conn.execute(FINISH, (*ending, added, *fence)).fetchall()
    if not ended:
        return False
    first = ended[0][0] - added
    append_trace(conn, run_id, first, [*folded, *trace])
    steps = [(text, kept) for _, text, kept in rows]
    if step is not None:
        steps.append(step)
    keep_steps(conn, run_id, first, steps)
    if rows:
        conn.execute("DELETE FROM checkpoints WHERE run_id = ?", (run_id,))
    return True


def _pending(conn: sqlite3.Connection, run_id: str) -> tuple[list[Any], list[TraceRow]]:
    """A run's checkpoint rows not folded yet (state, trace and variables JSON), and
    their trace rows in order."""
    rows = conn.execute(
        f"SELECT c.state, c.trace, {STEP_VARIABLES} FROM checkpoints c "
        "JOIN runs r ON r.run_id = c.run_id WHERE c.run_id = ? ORDER BY c.seq",
        (run_id,),
    ).fetchall()
    return rows, [entry for _, text, _ in rows for entry in trace_from_rows(load(text))]


def last_seq(conn: sqlite3.Connection, run_id: str) -> int:
    rows = conn.execute(
        "SELECT seq FROM checkpoints WHERE run_id = ? ORDER BY seq DESC LIMIT 1", (run_id,)
    ).fetchall()
    return int(rows[0][0]) if rows else 0


def list_summaries(conn: sqlite3.Connection, query: RunQuery) -> list[RunSummary]:
    """A page of runs; an unfinished one shows its start from its newest checkpoint."""
    sql, params = list_statement(query)
    rows = conn.execute(sql, params).fetchall()
    running = [row[0] for row in rows if unfinished(row)]
    newest = dict(
        conn.execute(
            f"SELECT run_id, state FROM checkpoints WHERE {IN_IDS} ORDER BY seq",
            (dump(running),),
        ).fetchall()
        if running
        else ()
    )
    return [summary_of_row(row, newest.get(row[0])) for row in rows]


def prune(conn: sqlite3.Connection, before: float) -> int:
    """Remove finished runs created before ``before``, with their rows; how many."""
    for table in ("run_trace", "checkpoints", "run_steps"):
        conn.execute(f"DELETE FROM {table} WHERE run_id IN ({OLD_FINISHED})", (before,))
    return int(
        conn.execute(f"DELETE FROM runs WHERE run_id IN ({OLD_FINISHED})", (before,)).rowcount
    )
