"""The errors flowwarden raises. Every one derives from :class:`FlowError`::

    FlowError
    ├── ActivationError            the gate refused; no run exists
    │   ├── ActivationDenied       permission, caller policy or depth (``.decision``, ``.reason``)
    │   ├── FlowNotFound           no such flow
    │   ├── FlowNotLive            the selected version is not LIVE
    │   └── InvalidInputs          the initial data does not fit the flow's ``inputs`` schema
    ├── InvalidFlow                a document with problems (``.problems``)
    ├── InvalidTransition          a lifecycle change the version's status does not allow
    ├── RunNotFound                no run with that id
    ├── InvalidWorkspace           a workspace or its configuration cannot be used
    ├── Unauthenticated            a bearer token that maps to no identity
    └── StoreError                 the store failed
        ├── StoreUnavailable       it cannot be reached or written now (lost connection,
        │                          database locked, file replaced); retrying may succeed
        └── LeaseLost              another worker holds the run now

Failures *inside* a run are not exceptions to the caller: they are the run's ``error``
object ``{code, message, block}``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from permissions import Decision

__all__ = [
    "ActivationDenied",
    "ActivationError",
    "FlowError",
    "FlowNotFound",
    "FlowNotLive",
    "InvalidFlow",
    "InvalidInputs",
    "InvalidTransition",
    "Problem",
    "RunNotFound",
    "StoreError",
    "StoreUnavailable",
    "suggestion",
]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a document: where (file, block, field, and for a document
    read from text the 1-based ``line`` and ``column`` of the offending key or value)
    and what. ``severity`` is ``"error"`` or, for what does not make a document
    unusable (a ``callable_by`` naming a flow the workspace does not define),
    ``"warning"``."""

    message: str
    block: str | None = None
    field: str | None = None
    file: str | None = None
    line: int | None = None
    column: int | None = None
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = []
        if self.file and self.line is not None:
            where.append(f"{self.file}:{self.line}:{self.column}")
        elif self.file:
            where.append(self.file)
        elif self.line is not None:
            where.append(f"line {self.line}, column {self.column}")
        where.extend(self.place())
        return f"{': '.join(where)}: {self.message}" if where else self.message

    def place(self) -> list[str]:
        """``block 'a'`` and ``field 'next'``, as far as the problem has them."""
        place = [] if self.block is None else [f"block {self.block!r}"]
        return [*place, f"field {self.field!r}"] if self.field else place

    def in_file(self, file: str) -> Problem:
        return replace(self, file=file)

    def at(self, line: int, column: int) -> Problem:
        return replace(self, line=line, column=column)

    def as_json(self) -> dict[str, Any]:
        """The problem as ``validate --json`` prints it."""
        return {
            "message": self.message,
            "block": self.block,
            "field": self.field,
            "line": self.line,
            "column": self.column,
            "severity": self.severity,
        }


def suggestion(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` naming the known word closest to ``word``, or ``""``
    when none is close (difflib's ratio of at least 0.6)."""
    close = difflib.get_close_matches(word, sorted(set(known)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class FlowError(Exception):
    """Base of every flowwarden error."""

    code = "flow_error"


class ActivationError(FlowError):
    """The gate refused an activation. Nothing of the run was created."""

    code = "activation_error"

    def __init__(self, message: str, *, flow: str, version: int | None = None) -> None:
        super().__init__(message)
        self.flow = flow
        self.version = version


class ActivationDenied(ActivationError):
    """Refused by permission, by the target's ``callable_by``, or by a limit."""

    code = "activation_denied"

    def __init__(
        self,
        message: str,
        *,
        flow: str,
        reason: str,
        decision: Decision | None = None,
        version: int | None = None,
    ) -> None:
        super().__init__(message, flow=flow, version=version)
        self.reason = reason
        self.decision = decision


class FlowNotFound(ActivationError):
    code = "flow_not_found"


class FlowNotLive(ActivationError):
    """The selected version is not LIVE; ``.status`` says what it is."""

    code = "flow_not_live"

    def __init__(
        self, message: str, *, flow: str, version: int | None = None, status: str | None = None
    ) -> None:
        super().__init__(message, flow=flow, version=version)
        self.status = status


class InvalidInputs(ActivationError):
    """The initial data was refused; ``.problems`` says where."""

    code = "invalid_inputs"

    def __init__(
        self, message: str, *, flow: str, version: int | None = None, problems: Iterable[str] = ()
    ) -> None:
        super().__init__(message, flow=flow, version=version)
        self.problems = list(problems)


class InvalidFlow(FlowError):
    """A document that cannot be used; ``.problems`` lists everything wrong at once."""

    code = "invalid_flow"

    def __init__(self, problems: Iterable[Problem], *, flow: str | None = None) -> None:
        self.problems = list(problems)
        self.flow = flow
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        head = f"flow {flow!r} is invalid" if flow else "invalid flow document"
        super().__init__(f"{head}:\n{lines}" if lines else head)


class InvalidTransition(FlowError):
    code = "invalid_transition"


class RunNotFound(FlowError):
    code = "run_not_found"


class StoreError(FlowError):
    code = "store_error"


class StoreUnavailable(StoreError):
    """The store cannot be reached or written now: a connection lost, the database
    locked or busy past its timeout, the database file removed or replaced. Nothing was
    acknowledged; the same call may succeed later (HTTP ``503 store_unavailable``)."""

    code = "store_unavailable"


class LeaseLost(StoreError):
    """This worker no longer owns the run (its lease expired and another took it)."""

    code = "lease_lost"


class InvalidWorkspace(FlowError):
    """A workspace or one of its configuration files cannot be used."""

    code = "invalid_workspace"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("invalid workspace:\n" + "\n".join(f"  - {p}" for p in problems))


class Unauthenticated(FlowError):
    """The request carried credentials that do not identify anyone (HTTP 401)."""

    code = "unauthenticated"
