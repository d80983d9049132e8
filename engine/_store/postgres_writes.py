"""The PostgreSQL store's writes of a held run: the claim that takes runs (up to the
claimer's free places, in one statement), its state after a block (with that block's
step) and its end, each with its new trace rows, in one statement (data-modifying
``WITH`` clauses), and only where its owner (and claim epoch, unless none is named)
still hold it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._model.records import TraceRow
from .sql import FINISH_SET, RUN, UNFINISHED
from .steps import PG_FINISH_STEP, PG_STEP

__all__ = ["CHECKPOINT", "CLAIM", "FINISH", "trace_params"]


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


CLAIM = (
    f"WITH c AS (SELECT run_id FROM runs WHERE {UNFINISHED} "
    "AND (status = 'QUEUED' OR COALESCE(lease_expires, 0) < %s) "
    "AND NOT (run_id = ANY(%s)) "
    "ORDER BY created_at, run_id LIMIT %s FOR UPDATE SKIP LOCKED) "
    "UPDATE runs SET status = 'RUNNING', owner = %s, lease_expires = %s, "
    "lease_epoch = runs.lease_epoch + 1 FROM c "
    "WHERE runs.run_id = c.run_id RETURNING " + ", ".join(f"runs.{c}" for c in RUN.split(", "))
)
TRACE_ROWS = (
    "INSERT INTO run_trace (run_id, seq, block, type, start, duration, outcome) "
    "SELECT r.run_id, r.trace_len - %s + u.n - 1, u.block, u.type, u.start, u.duration, "
    "u.outcome FROM r, unnest(%s::text[], %s::text[], %s::float8[], %s::float8[], %s::text[]) "
    "WITH ORDINALITY AS u(block, type, start, duration, outcome, n)"
)
CHECKPOINT = (
    "WITH r AS (UPDATE runs SET checkpoint = %s, trace_len = trace_len + %s "
    "WHERE run_id = %s AND owner = %s AND (%s::int IS NULL OR lease_epoch = %s::int) "
    f"AND {UNFINISHED} RETURNING run_id, trace_len), "
    f"t AS ({TRACE_ROWS}), {PG_STEP} SELECT count(*) FROM r"
)
FINISH = (
    f"WITH r AS (UPDATE runs SET {_pg(FINISH_SET)} WHERE run_id = %s "
    "AND owner IS NOT DISTINCT FROM %s AND (%s::int = 0 OR lease_epoch = %s::int) "
    f"AND {UNFINISHED} RETURNING run_id, trace_len), "
    f"t AS ({TRACE_ROWS}), {PG_FINISH_STEP} SELECT count(*) FROM r"
)


def trace_params(trace: Sequence[TraceRow]) -> tuple[Any, ...]:
    """The trace as five parallel arrays for ``unnest`` (after its length)."""
    return (
        len(trace),
        [row[0] for row in trace],
        [row[1] for row in trace],
        [float(row[2]) for row in trace],
        [float(row[3]) for row in trace],
        [row[4] for row in trace],
    )
