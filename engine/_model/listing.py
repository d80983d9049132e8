"""Listing runs: the summary of one run, a page of them, and the query that selects it.

Runs are listed newest first, ordered by ``(created_at, run_id)`` — a total order, since
run ids are unique — and paged by *keyset*: a page's cursor is the key of its last run,
and the next page holds the runs whose key is below it. A run created while someone
pages is newer than every key already handed out, so it can never push a run from one
page onto the next: no page repeats or skips a run, whatever is created meanwhile.
The cursor is opaque to callers (URL-safe base64 of a small JSON array).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from .types import RunResult, RunStatus

__all__ = [
    "RunKey",
    "RunPage",
    "RunQuery",
    "RunSummary",
    "decode_cursor",
    "encode_cursor",
    "page_of",
]

RunKey = tuple[float, str]
"""Where a run sorts: ``(created_at, run_id)``; lists run from the largest key down."""


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One line of a run listing: who ran what, how it stands, when."""

    run_id: str
    flow: str
    version: int
    status: RunStatus
    has_errors: bool
    error_code: str | None
    user_id: str | None
    parent_run_id: str | None
    root_run_id: str | None
    depth: int
    created_at: float
    started_at: float | None
    finished_at: float | None

    @classmethod
    def of(cls, result: RunResult) -> RunSummary:
        """The summary of a run's result."""
        return cls(
            run_id=result.run_id,
            flow=result.flow,
            version=result.version,
            status=result.status,
            has_errors=result.has_errors,
            error_code=result.error.code if result.error is not None else None,
            user_id=result.user_id,
            parent_run_id=result.parent_run_id,
            root_run_id=result.root_run_id,
            depth=result.depth,
            created_at=result.created_at,
            started_at=result.started_at,
            finished_at=result.finished_at,
        )

    @property
    def key(self) -> RunKey:
        return (self.created_at, self.run_id)

    def to_json(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["status"] = self.status.value
        return values


@dataclass(frozen=True, slots=True)
class RunPage:
    """A page of a run listing, newest first; pass ``next_cursor`` back for the next
    page (``None``: this is the last one)."""

    runs: list[RunSummary]
    next_cursor: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"runs": [run.to_json() for run in self.runs], "next_cursor": self.next_cursor}


@dataclass(frozen=True, slots=True)
class RunQuery:
    """Which runs to list: every filter given must hold (``statuses`` empty: any).

    ``since`` and ``until`` bound ``created_at`` (``since <= created_at < until``);
    ``after`` is the key of the last run of the previous page; ``limit`` how many to
    return at most.
    """

    flow: str | None = None
    statuses: tuple[RunStatus, ...] = ()
    user_id: str | None = None
    parent_run_id: str | None = None
    root_run_id: str | None = None
    since: float | None = None
    until: float | None = None
    after: RunKey | None = None
    limit: int = 50

    @classmethod
    def build(
        cls,
        *,
        flow: str | None = None,
        status: RunStatus | str | Iterable[RunStatus | str] | None = None,
        user_id: str | None = None,
        parent_run_id: str | None = None,
        root_run_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunQuery:
        """A query from the public arguments; ``ValueError`` names a bad one."""
        if status is None:
            statuses: tuple[RunStatus, ...] = ()
        elif isinstance(status, str):
            statuses = (RunStatus(status),)
        else:
            statuses = tuple(sorted({RunStatus(s) for s in status}))
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, not {limit!r}")
        for name, value in (("since", since), ("until", until)):
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite Unix time, not {value!r}")
        after = decode_cursor(cursor) if cursor is not None else None
        return cls(flow, statuses, user_id, parent_run_id, root_run_id, since, until, after, limit)

    def matches(self, run: RunSummary) -> bool:
        """Whether a run is one this query lists (the reference the SQL follows)."""
        return (
            (self.flow is None or run.flow == self.flow)
            and (not self.statuses or run.status in self.statuses)
            and (self.user_id is None or run.user_id == self.user_id)
            and (self.parent_run_id is None or run.parent_run_id == self.parent_run_id)
            and (self.root_run_id is None or run.root_run_id == self.root_run_id)
            and (self.since is None or run.created_at >= self.since)
            and (self.until is None or run.created_at < self.until)
            and (self.after is None or run.key < self.after)
        )

    def select(self, runs: Iterable[RunSummary]) -> list[RunSummary]:
        """The runs this query lists, newest first, at most ``limit`` of them."""
        found = sorted((run for run in runs if self.matches(run)), key=_key, reverse=True)
        return found[: self.limit]


def _key(run: RunSummary) -> RunKey:
    return run.key


def page_of(runs: Sequence[RunSummary], limit: int) -> RunPage:
    """A page from up to ``limit + 1`` runs, newest first: the extra one says that
    another page follows."""
    if len(runs) <= limit:
        return RunPage(list(runs))
    shown = list(runs[:limit])
    return RunPage(shown, encode_cursor(shown[-1].key))


def encode_cursor(key: RunKey) -> str:
    text = json.dumps([key[0], key[1]], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> RunKey:
    """The key a cursor holds; ``ValueError`` if it is not one this module made."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, run_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, TypeError, binascii.Error, UnicodeError) as exc:
        raise ValueError(f"not a run listing cursor: {cursor!r}") from exc
    if (
        isinstance(created_at, bool)
        or not isinstance(created_at, int | float)
        or not math.isfinite(created_at)
        or not isinstance(run_id, str)
    ):
        raise ValueError(f"not a run listing cursor: {cursor!r}")
    return (float(created_at), run_id)
