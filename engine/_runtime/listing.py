"""Seeing runs: the :class:`Engine`'s run listing, a run's steps, and pruning.

A durable engine's runs are all rows of its store, in flight or finished. A
non-durable engine's runs in flight live only in this process until they end and are
saved, so its listing merges them into the store's, in the same order and under the
same filters; a run that ends between two pages keeps its key, so it is on one page
only.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace

from .._model.listing import RunPage, RunQuery, RunSummary, page_of
from .._model.steps import RunStep
from .._model.types import RunResult, RunStatus
from .._store import Store
from .runs import ActiveRun, result_of_state

__all__ = ["RunListing"]


class RunListing:
    """The engine's ``list_runs``, ``run_steps`` and ``prune_runs`` (a part of
    :class:`Engine`)."""

    store: Store
    durable: bool
    _active: Mapping[str, ActiveRun]
    get_run: Callable[[str], Awaitable[RunResult]]

    async def list_runs(
        self,
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
    ) -> RunPage:
        """A page of runs, newest first, that match every filter given.

        ``status`` is one :class:`RunStatus` or several; ``since`` and ``until`` bound
        ``created_at`` (Unix times, ``since`` included). Pass the page's
        ``next_cursor`` back as ``cursor`` for the next page (``None``: the last
        page); no run is repeated or skipped while new runs are being created.
        Raises ``ValueError`` for a bad limit, status or cursor.
        """
        query = RunQuery.build(
            flow=flow,
            status=status,
            user_id=user_id,
            parent_run_id=parent_run_id,
            root_run_id=root_run_id,
            since=since,
            until=until,
            limit=limit,
            cursor=cursor,
        )
        wider = replace(query, limit=query.limit + 1)
        found = await self.store.list_runs(wider)
        here = self._active
        if self.durable:  # every run is a row; one in flight here is newer in memory
            found = [_live(here[run.run_id]) if run.run_id in here else run for run in found]
        else:
            stored = {run.run_id for run in found}
            flying = [_live(run) for run_id, run in list(here.items()) if run_id not in stored]
            found = wider.select([*found, *flying])
        return page_of(found, query.limit)

    async def run_steps(self, run_id: str) -> list[RunStep] | None:
        """The run's steps: the variables after each of its blocks, in trace order, as
        far as the store keeps them (a durable store keeps the first 1,000 and bounds
        their size; see :class:`RunStep`). ``None`` when the store keeps no steps (the
        in-memory store); :class:`RunNotFound` if there is no such run."""
        await self.get_run(run_id)  # RunNotFound
        return await self.store.run_steps(run_id)

    async def prune_runs(self, *, before: float) -> int:
        """Remove the finished runs created before ``before`` (a Unix time) from the
        store, with their traces, checkpoints and steps; returns how many were removed."""
        if isinstance(before, bool) or not math.isfinite(before):
            raise ValueError(f"before must be a finite Unix time, not {before!r}")
        return await self.store.prune_runs(before)


def _live(active: ActiveRun) -> RunSummary:
    return RunSummary.of(result_of_state(active.state))
