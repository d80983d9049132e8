"""A run's shape, written once: the frozen header, the stored record, the result.

A run has an immutable *header* — who started which version of which flow, with what
data, under which parent — and state that changes while it runs. The header is one
:class:`RunHeader` value shared by the run state in flight, the :class:`RunRecord` a
store keeps, and the :class:`RunResult` a caller reads; :func:`run_result` is the one
place a result is assembled from a header and an outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from permissions import Identity

from .frozen import quick_init
from .types import RunError, RunResult, RunStatus, Trace

__all__ = [
    "CANCELLED",
    "HEADER_FIELDS",
    "RunHeader",
    "RunRecord",
    "TraceRow",
    "result_of",
    "run_result",
]

TraceRow = tuple[str, str, float, float, str]
"""One trace entry as stored: block, type, start, duration, outcome."""

CANCELLED = RunError("cancelled", "the run was cancelled")
"""The error of a cancelled run."""


@quick_init
@dataclass(frozen=True, slots=True)
class RunHeader:
    """What a run is, fixed when the gate admits it: never changes while it runs."""

    run_id: str
    flow: str
    version: int
    identity: Identity
    inputs: Any
    parent_run_id: str | None = None
    root_run_id: str | None = None
    depth: int = 0
    via: str = "api"
    created_at: float = 0.0

    @property
    def user_id(self) -> str | None:
        return self.identity.user_id

    @property
    def roles(self) -> tuple[str, ...]:
        return self.identity.sorted_roles


HEADER_FIELDS = tuple(f.name for f in fields(RunHeader))
"""The header's fields, in order (what every codec reads and writes first)."""

# The result's fields that come straight from the header (identity is spelled out), as
# run_result copies them: a field added to the header must be added there too.
_RESULT_HEADER = tuple(name for name in HEADER_FIELDS if name not in ("identity", "via"))
_COPIED = ("run_id", "flow", "version", "inputs", "parent_run_id", "root_run_id", "depth")
if set(_RESULT_HEADER) != {*_COPIED, "created_at"}:  # pragma: no cover - a coding error
    raise RuntimeError(f"run_result does not copy every header field: {_RESULT_HEADER}")


@dataclass
class RunRecord:
    """A run as a store keeps it: its header, where it stands, and its last checkpoint.

    ``checkpoint`` is the run state that changes while it runs (variables, step count,
    positions of live paths, loop progress, pending children, log) as plain JSON data;
    the trace is kept apart, appended to at each checkpoint.
    """

    header: RunHeader
    status: RunStatus
    started_at: float | None = None
    finished_at: float | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    has_errors: bool = False
    checkpoint: dict[str, Any] | None = None
    cancel_requested: bool = False
    owner: str | None = None
    lease_expires: float | None = None
    # counts the claims of the run: a claim bumps it, and a write carrying an older
    # value is refused, so a process that stalled past its lease can change nothing
    lease_epoch: int = 0
    trace: list[TraceRow] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.header.run_id


def run_result(
    header: RunHeader,
    status: RunStatus,
    *,
    output: Any = None,
    error: RunError | None = None,
    has_errors: bool = False,
    trace: Trace,
    log: Sequence[dict[str, Any]] = (),
    started_at: float | None = None,
    finished_at: float | None = None,
) -> RunResult:
    """The caller's view of a run: its header and where it stands."""
    # every field spelled out, and by position: made at the end of every run, where a
    # loop over the header's fields, or 18 keywords to match, cost more than the rest
    # of it (the order is RunResult's, held by _RESULT_ORDER below)
    identity = header.identity
    return RunResult(
        header.run_id,
        header.flow,
        header.version,
        status,
        output,
        error,
        has_errors,
        identity.user_id,
        identity.sorted_roles,
        header.parent_run_id,
        header.root_run_id,
        header.depth,
        header.inputs,
        trace,
        tuple(log),
        header.created_at,
        started_at,
        finished_at,
    )


# RunResult's fields in the order run_result passes them
_RESULT_ORDER = (
    "run_id",
    "flow",
    "version",
    "status",
    "output",
    "error",
    "has_errors",
    "user_id",
    "roles",
    "parent_run_id",
    "root_run_id",
    "depth",
    "inputs",
    "trace",
    "log",
    "created_at",
    "started_at",
    "finished_at",
)
if tuple(f.name for f in fields(RunResult)) != _RESULT_ORDER:  # pragma: no cover
    raise RuntimeError("run_result passes RunResult's fields in another order")


def result_of(record: RunRecord) -> RunResult:
    """The caller's view of a stored run (its log is in its checkpoint)."""
    snapshot = record.checkpoint or {}
    return run_result(
        record.header,
        record.status,
        output=record.output,
        error=RunError.from_dict(record.error),
        has_errors=record.has_errors or bool(snapshot.get("has_errors")),
        trace=Trace(record.trace, 0.0),
        log=snapshot.get("log", ()),
        # a run in flight has its start in its checkpoint until it ends
        started_at=snapshot.get("started_at") if record.started_at is None else record.started_at,
        finished_at=record.finished_at,
    )
