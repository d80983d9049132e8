"""Where the database stores keep a run's steps (see the model's steps module for what
a step is and the bounds on what is kept).

PostgreSQL writes a run's step in the same statement as its checkpoint
(:data:`PG_STEP`). SQLite keeps its checkpoint rows as they are and turns them into
steps when it folds them (:func:`keep_steps`); until then, readers work the steps out of
the rows themselves (:func:`sqlite_steps`). Either way the bounds are applied in one
place per database, a step is keyed by where it is in the trace, and writing one again
(a checkpoint repeated after a lost answer, say) changes nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from .._model.steps import RUN_STEP_BYTES, STEP_BYTES, STEPS_KEPT, RunStep
from .sql import load

__all__ = [
    "PG_STEP",
    "SELECT_STEPS",
    "STEP_VARIABLES",
    "keep_steps",
    "sqlite_steps",
    "step_rows",
    "steps_of",
]

StepRow = tuple[int, str, int, str | None]
"""A step as stored: trace index, block, size, variables as JSON text (``None``: not kept)."""

SELECT_STEPS = (
    "SELECT trace_index, block, size, variables FROM run_steps WHERE run_id = ? "
    "ORDER BY trace_index"
)
_USED = (
    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM run_steps "
    "WHERE run_id = ? AND variables IS NOT NULL"
)
_INSERT = (
    "INSERT INTO run_steps (run_id, trace_index, block, size, variables) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
STEP_VARIABLES = (
    f"CASE WHEN r.trace_len < {STEPS_KEPT} THEN COALESCE(c.state -> '$.vars', '{{}}') END"
)
"""SQLite: the variables of checkpoint row ``c`` of run ``r``, while the run's trace is
short enough for them to be kept (else ``NULL``, and no JSON is parsed)."""
# A run's checkpoint rows not folded yet: their trace and variables.
_PENDING = (
    f"SELECT c.trace, {STEP_VARIABLES} FROM checkpoints c "
    "JOIN runs r ON r.run_id = c.run_id WHERE c.run_id = ? ORDER BY c.seq"
)

# PostgreSQL: a data-modifying clause of the checkpoint statement (see postgres_writes),
# after ``r``, the updated run (its new ``trace_len`` and ``checkpoint``). Parameters:
# the step's block (``None``: the checkpoint added no trace entry, so it is no step).
PG_STEP = (
    "s AS (INSERT INTO run_steps (run_id, trace_index, block, size, variables) "
    "SELECT r.run_id, r.trace_len - 1, b.block, v.size, CASE WHEN v.size <= "
    f"{STEP_BYTES} AND v.size + (SELECT COALESCE(SUM(k.size), 0) FROM run_steps k "
    "WHERE k.run_id = r.run_id AND k.variables IS NOT NULL) "
    f"<= {RUN_STEP_BYTES} THEN v.text END "
    "FROM r, (SELECT %s::text AS block) b, LATERAL (SELECT x.text, octet_length(x.text) "
    "AS size FROM (SELECT COALESCE(r.checkpoint::json -> 'vars', '{}'::json)::text AS text) x) v "
    f"WHERE b.block IS NOT NULL AND r.trace_len <= {STEPS_KEPT} ON CONFLICT DO NOTHING)"
)


def step_rows(
    first: int, used: int, checkpoints: Iterable[tuple[str, str | None]]
) -> list[StepRow]:
    """The steps of checkpoints ``(trace JSON, variables JSON)`` taken in order after a
    run's trace had ``first`` entries and its kept steps' variables ``used`` bytes
    (variables ``None``: past :data:`STEPS_KEPT` anyway)."""
    steps: list[StepRow] = []
    length = first
    for trace_text, variables in checkpoints:
        trace = load(trace_text)
        length += len(trace)
        if not trace or length > STEPS_KEPT or variables is None:
            continue
        size = len(variables.encode("utf-8"))
        keep = size <= STEP_BYTES and used + size <= RUN_STEP_BYTES
        used += size if keep else 0
        steps.append((length - 1, str(trace[-1][0]), size, variables if keep else None))
    return steps


def steps_of(rows: Iterable[Sequence[Any]]) -> list[RunStep]:
    """Steps from stored rows ``(trace_index, block, size, variables)``."""
    return [
        RunStep(int(index), str(block), int(size), load(variables))
        for index, block, size, variables in rows
    ]


def keep_steps(
    conn: sqlite3.Connection, run_id: str, first: int, checkpoints: Sequence[tuple[str, str | None]]
) -> None:
    """SQLite: store the steps of checkpoint rows being folded (in their transaction)."""
    if first >= STEPS_KEPT or not checkpoints:
        return
    ((_, used),) = conn.execute(_USED, (run_id,)).fetchall()
    rows = step_rows(first, int(used), checkpoints)
    conn.executemany(_INSERT, [(run_id, *row) for row in rows])


def sqlite_steps(conn: sqlite3.Connection, run_id: str) -> list[RunStep]:
    """SQLite: a run's steps, folded or not (in one read transaction)."""
    stored = conn.execute(SELECT_STEPS, (run_id,)).fetchall()
    found = conn.execute("SELECT trace_len FROM runs WHERE run_id = ?", (run_id,)).fetchall()
    if not found:
        return []
    pending = conn.execute(_PENDING, (run_id,)).fetchall()
    if pending:
        ((_, used),) = conn.execute(_USED, (run_id,)).fetchall()
        stored += step_rows(int(found[0][0]), int(used), pending)
    return steps_of(stored)
