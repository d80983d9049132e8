"""A run as stores keep it, and the one conversion from a stored record to a result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .types import RunError, RunResult, RunStatus, Trace

__all__ = ["RunRecord", "TraceRow", "result_of"]

TraceRow = tuple[str, str, float, float, str]


@dataclass
class RunRecord:
    """A run as a durable store keeps it: the row, plus the last checkpoint.

    ``checkpoint`` is the run state that changes while it runs (variables, step count,
    positions of live paths, loop progress, pending children, log) as plain JSON data;
    the trace is kept apart, appended to at each checkpoint.
    """

    run_id: str
    flow: str
    version: int
    status: RunStatus
    user_id: str | None
    roles: tuple[str, ...]
    inputs: Any
    parent_run_id: str | None = None
    root_run_id: str | None = None
    depth: int = 0
    via: str = "api"
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    has_errors: bool = False
    checkpoint: dict[str, Any] | None = None
    cancel_requested: bool = False
    owner: str | None = None
    lease_expires: float | None = None
    trace: list[TraceRow] = field(default_factory=list)


def result_of(record: RunRecord) -> RunResult:
    """The caller's view of a stored run."""
    snapshot = record.checkpoint or {}
    return RunResult(
        run_id=record.run_id,
        flow=record.flow,
        version=record.version,
        status=record.status,
        output=record.output,
        error=RunError.from_dict(record.error),
        has_errors=record.has_errors or bool(snapshot.get("has_errors")),
        user_id=record.user_id,
        roles=tuple(record.roles),
        parent_run_id=record.parent_run_id,
        root_run_id=record.root_run_id,
        depth=record.depth,
        inputs=record.inputs,
        trace=Trace(record.trace, 0.0),
        log=tuple(snapshot.get("log", ())),
        created_at=record.created_at,
        finished_at=record.finished_at,
    )
