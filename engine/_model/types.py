"""Value types the engine hands out: statuses, run results, version info, limits."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, overload

from blocks import BlockError

from .errors import Problem
from .frozen import quick_init

__all__ = [
    "Limits",
    "RunError",
    "RunResult",
    "RunStatus",
    "Trace",
    "TraceEntry",
    "VersionInfo",
    "VersionStatus",
    "json_safe",
]


class VersionStatus(StrEnum):
    """A version's lifecycle status; see the lifecycle in the docs."""

    INVALID = "INVALID"
    READY = "READY"
    LIVE = "LIVE"
    PAUSED = "PAUSED"

    @property
    def active(self) -> bool:
        """LIVE or PAUSED: the version a flow's activations select (at most one is)."""
        return self in _ACTIVE


class RunStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


# a set of members, made once: a tuple of them, written out in the property, costs a
# look-up of each member on the class at every call (asked several times a run)
_ACTIVE = frozenset((VersionStatus.LIVE, VersionStatus.PAUSED))
_FINISHED = frozenset((RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED))


@dataclass(frozen=True, slots=True)
class Limits:
    """Engine-wide limits; every one is configurable."""

    max_depth: int = 16
    max_steps: int = 100_000
    max_iterations: int = 1_000
    max_input_bytes: int = 1_048_576
    max_blocking_wait: float = 300.0
    max_nesting: int = 64
    """How deep inputs (and the documents and bodies read with these limits) may nest."""
    max_document_bytes: int = 1_048_576
    """The largest document, also after its YAML aliases are expanded."""
    max_document_nodes: int = 100_000
    """The most values a document may hold after its YAML aliases are expanded."""
    keep_finished_runs: int = 10_000
    """How many finished runs the in-memory store keeps (the most recent ones)."""


@dataclass(frozen=True, slots=True)
class RunError:
    """Why a run failed or what a handled error was: ``{code, message, block}``."""

    code: str
    message: str
    block: str | None = None
    child_run_id: str | None = None

    @classmethod
    def from_dict(cls, error: dict[str, Any] | None) -> RunError | None:
        """The error object a run state or a store row holds, or None."""
        if not error:
            return None
        return cls(
            code=str(error.get("code")),
            message=str(error.get("message")),
            block=error.get("block"),
            child_run_id=error.get("child_run_id"),
        )

    @classmethod
    def of(cls, error: BlockError) -> RunError:
        """A block's failure as the run records it."""
        return cls(error.code, error.message, error.block, error.child_run_id)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: what a store keeps, the API shows and ``vars.error`` holds."""
        error: dict[str, Any] = {"code": self.code, "message": self.message, "block": self.block}
        if self.child_run_id is not None:
            error["child_run_id"] = self.child_run_id
        return error


class TraceEntry(NamedTuple):
    """One executed block (one attempt of it): when (Unix time), how long, how it ended.

    ``outcome`` is ``ok``, the port taken (``then``, ``else``, a route), the error code
    of a failed attempt, or ``cancelled``.
    """

    block: str
    type: str
    start: float
    duration: float
    outcome: str

    def to_dict(self) -> dict[str, Any]:
        # written out: an answer's trace makes one per entry, and _asdict costs twice this
        return {
            "block": self.block,
            "type": self.type,
            "start": self.start,
            "duration": self.duration,
            "outcome": self.outcome,
        }


class Trace(Sequence[TraceEntry]):
    """A run's trace. Kept as the interpreter recorded it; entries are made on access."""

    __slots__ = ("_offset", "_raw")

    def __init__(
        self, raw: Sequence[tuple[str, str, float, float, str]] = (), offset: float = 0.0
    ) -> None:
        self._raw = tuple(raw)
        self._offset = offset

    @overload
    def __getitem__(self, index: int) -> TraceEntry: ...

    @overload
    def __getitem__(self, index: slice) -> list[TraceEntry]: ...

    def __getitem__(self, index: int | slice) -> TraceEntry | list[TraceEntry]:
        if isinstance(index, slice):
            return [self._entry(raw) for raw in self._raw[index]]
        return self._entry(self._raw[index])

    def _entry(self, raw: tuple[str, str, float, float, str]) -> TraceEntry:
        block, kind, start, duration, outcome = raw
        return TraceEntry(block, kind, start + self._offset, duration, outcome)

    def __iter__(self) -> Iterator[TraceEntry]:
        # what reading a whole trace does (its JSON, say): the Sequence default would
        # go through __getitem__ and its checks for every entry
        entry = self._entry
        for raw in self._raw:
            yield entry(raw)

    def __len__(self) -> int:
        return len(self._raw)

    def dicts(self) -> list[dict[str, Any]]:
        """Every entry's :meth:`TraceEntry.to_dict`, made from the recorded entries
        without making each a :class:`TraceEntry` first (an answer's trace)."""
        offset = self._offset
        return [
            {
                "block": block,
                "type": kind,
                "start": start + offset,
                "duration": duration,
                "outcome": outcome,
            }
            for block, kind, start, duration, outcome in self._raw
        ]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"Trace({list(self)!r})"


@quick_init
@dataclass(frozen=True, slots=True)
class RunResult:
    """A run as the caller sees it, finished or not.

    Each ``log`` entry is an object with ``time`` (Unix), ``level``, ``message`` and
    ``block`` (the block that wrote it), plus any fields a custom block added.
    """

    run_id: str
    flow: str
    version: int
    status: RunStatus
    output: Any = None
    error: RunError | None = None
    has_errors: bool = False
    user_id: str | None = None
    roles: tuple[str, ...] = ()
    parent_run_id: str | None = None
    root_run_id: str | None = None
    depth: int = 0
    inputs: Any = None
    trace: Trace = field(default_factory=Trace)
    log: tuple[dict[str, Any], ...] = ()
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The result as one JSON object (CLI ``--json``, HTTP API)."""
        return {
            "run_id": self.run_id,
            "flow": self.flow,
            "version": self.version,
            "status": self.status.value,
            "output": json_safe(self.output),
            "error": self.error.to_dict() if self.error else None,
            "has_errors": self.has_errors,
            "user_id": self.user_id,
            "roles": list(self.roles),
            "parent_run_id": self.parent_run_id,
            "root_run_id": self.root_run_id,
            "depth": self.depth,
            "inputs": json_safe(self.inputs),
            "trace": self.trace.dicts(),
            "log": [json_safe(entry) for entry in self.log],
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """A stored version: its status, its problems, its document."""

    flow: str
    version: int
    status: VersionStatus
    problems: tuple[Problem, ...] = ()
    document: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0


# Tuples, not ``a | b``: that expression builds a union object on every call.
_SCALARS = (bool, int, float, str)
_SEQUENCES = (list, tuple)
_DATES = (dt.datetime, dt.date)


def json_safe(value: Any) -> Any:
    """A copy of ``value`` that ``json.dumps`` accepts (CEL may give bytes, timestamps…)."""
    if value is None or isinstance(value, _SCALARS):
        return value
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()} if value else {}
    if isinstance(value, _SEQUENCES):
        return [json_safe(item) for item in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, _DATES):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return f"{value.total_seconds()}s"
    return str(value)
