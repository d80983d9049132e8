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
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from .._model.records import RunRecord, TraceRow
from .._model.steps import RUN_STEP_BYTES, STEP_BYTES, STEPS_KEPT, RunStep
from .._model.types import RunStatus
from .sql import dump, load

__all__ = [
    "NO_STEP",
    "PG_FINISH_STEP",
    "PG_STEP",
    "SELECT_STEPS",
    "STEP_VARIABLES",
    "PgStep",
    "StepBudget",
    "finish_step",
    "keep_steps",
    "pg_step",
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
# after ``r``, the updated run (its new ``trace_len``). Parameters: the step's block
# (``None``: the checkpoint added no trace entry, so it is no step), its variables as
# JSON text (``None``: not kept) and their size (see :func:`pg_step`).
PG_STEP = (
    "s AS (INSERT INTO run_steps (run_id, trace_index, block, size, variables) "
    "SELECT r.run_id, r.trace_len - 1, v.block, v.size, v.text "
    "FROM r, (SELECT %s::text AS block, %s::text AS text, %s::int AS size) v "
    f"WHERE v.block IS NOT NULL AND r.trace_len <= {STEPS_KEPT} ON CONFLICT DO NOTHING)"
)
PgStep = tuple[str | None, str | None, int]
NO_STEP: PgStep = (None, None, 0)
"""The parameters of :data:`PG_STEP` and :data:`PG_FINISH_STEP` that write no step."""
# PostgreSQL: the same, as a clause of the finish statement (see :func:`finish_step`).
# Parameters: how far back from the run's new ``trace_len`` the step is, then as above,
# then that distance again.
PG_FINISH_STEP = (
    "s AS (INSERT INTO run_steps (run_id, trace_index, block, size, variables) "
    "SELECT r.run_id, r.trace_len - %s::int, v.block, v.size, v.text "
    "FROM r, (SELECT %s::text AS block, %s::text AS text, %s::int AS size) v "
    f"WHERE v.block IS NOT NULL AND r.trace_len - %s::int < {STEPS_KEPT} ON CONFLICT DO NOTHING)"
)
_PG_USED = _USED.replace("?", "%s")


def pg_step(checkpoint: dict[str, Any], trace: Sequence[TraceRow], used: int) -> tuple[str, PgStep]:
    """PostgreSQL: the checkpoint's JSON text and the parameters of :data:`PG_STEP`, for
    a run whose kept steps' variables take ``used`` bytes.

    The variables are encoded once, and the state's text is put together around them, so
    that keeping them as a step costs no second encoding nor any parsing."""
    if "vars" not in checkpoint:
        variables, state = "{}", dump(checkpoint)
    else:
        variables = dump(checkpoint["vars"])
        others = dump({key: value for key, value in checkpoint.items() if key != "vars"})
        state = '{"vars":' + variables + ("," + others[1:] if len(others) > 2 else "}")
    size = len(variables)  # the encoding is ASCII: one byte a character
    keep = size <= STEP_BYTES and used + size <= RUN_STEP_BYTES
    block = trace[-1][0] if trace else None  # the block this is the state after
    return state, (block, variables if keep else None, size)


def finish_step(record: RunRecord, trace: Sequence[TraceRow]) -> int:
    """How many of a finish's new trace rows lead up to a step written with the finish
    (0: none).

    A run that ends next is not checkpointed after its last block: its finish writes that
    state (see the runtime's keeping module). So the finish of a COMPLETED run also keeps
    the step of its last block before a closing ``return``, if that block's entry is
    among the finish's rows; the ``return`` itself has no step, as before. Writing a step
    a checkpoint wrote already changes nothing."""
    if record.status is not RunStatus.COMPLETED:
        return 0
    count = len(trace)
    if count and trace[-1][1] == "return":
        count -= 1
    return count


class StepBudget:
    """PostgreSQL: the bytes of variables kept so far for each run a store object writes,
    so that a checkpoint need not add them up. Only a run's holder writes its steps; a
    run this object does not know (claimed, or a write that failed) is read once."""

    def __init__(self) -> None:
        self._used: dict[str, int] = {}

    async def take(
        self, run_id: str, read: Callable[[str, Sequence[Any]], Awaitable[list[Any]]]
    ) -> int:
        """The run's kept bytes, forgotten until :meth:`put` after a successful write."""
        used = self._used.pop(run_id, None)
        if used is None:
            ((_, used),) = await read(_PG_USED, (run_id,))
        return int(used)

    def start(self, run_id: str) -> None:
        """A run with no steps kept yet (created held, or claimed before any block ran)."""
        self._used[run_id] = 0

    def put(self, run_id: str, used: int, step: PgStep) -> None:
        self._used[run_id] = used + (step[2] if step[0] is not None and step[1] is not None else 0)

    def forget(self, run_ids: Iterable[str]) -> None:
        for run_id in run_ids:
            self._used.pop(run_id, None)


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
