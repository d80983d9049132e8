"""Seeing runs over HTTP: the run listing, a run's graph and steps, and cancelling a run.

Both need a token. A caller sees and cancels only the runs started under its own user
id; administrators see and cancel every run, and may filter the listing by ``user``.
Someone else's run is ``404 run_not_found``, the same answer as for a run that does
not exist, so a caller learns nothing of runs that are not its own.
"""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from permissions import Identity

from .._model.errors import RunNotFound, Unauthenticated
from .._model.listing import RunSummary
from .._model.steps import RUN_STEP_BYTES, STEP_BYTES, STEPS_KEPT
from .._model.types import RunResult
from .._runtime.graph import marks, to_mermaid
from . import models as m
from .request import Api, ApiError, JSONResponse

__all__ = ["CANCEL_WAIT", "run_routes"]

CANCEL_WAIT = 5.0
"""How long a cancel waits for the run to reach its final status before answering."""

_LISTS = {"status"}  # query parameters that may be repeated


def run_routes(api: Api) -> list[Route]:
    """``GET /api/runs``, ``GET /api/runs/{run_id}/graph``, ``GET
    /api/runs/{run_id}/steps`` and ``POST /api/runs/{run_id}/cancel``, bound to ``api``."""
    views = _RunViews(api)
    return [
        Route("/api/runs", views.list_runs, methods=["GET"]),
        Route("/api/runs/{run_id}/graph", views.graph, methods=["GET"]),
        Route("/api/runs/{run_id}/steps", views.steps, methods=["GET"]),
        Route("/api/runs/{run_id}/cancel", views.cancel, methods=["POST"]),
    ]


class _RunViews:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.engine = api.engine

    def _caller(self, request: Request) -> tuple[Identity, bool]:
        """The caller and whether it is an administrator; 401 for anyone anonymous."""
        identity = self.api.identity(request)
        admin = self.api.is_admin(identity)
        if identity.user_id is None and not admin:
            raise Unauthenticated("seeing runs needs a bearer token")
        return identity, admin

    async def list_runs(self, request: Request) -> Response:
        identity, admin = self._caller(request)
        query = _runs_query(request)
        try:
            page = await self.engine.list_runs(
                flow=query.flow,
                status=query.status or None,
                user_id=query.user if admin else identity.user_id,
                parent_run_id=query.parent,
                root_run_id=query.root,
                since=query.since,
                until=query.until,
                limit=query.limit,
                cursor=query.cursor,
            )
        except ValueError as exc:
            raise ApiError("invalid_query", str(exc)) from exc
        return JSONResponse(page.to_json())

    async def _visible(self, request: Request) -> RunResult:
        """The path's run, when the caller may see it (else 404, as for no such run)."""
        identity, admin = self._caller(request)
        run_id = request.path_params["run_id"]
        result = await self.engine.get_run(run_id)
        if not (admin or result.user_id == identity.user_id):
            raise RunNotFound(f"no run {run_id!r}")  # the same answer as for an unknown run
        return result

    async def graph(self, request: Request) -> Response:
        """The run's version drawn as Mermaid text, the blocks it ran marked so far."""
        result = await self._visible(request)
        document = (await self.engine.program(result.flow, result.version)).document
        executed, failed = marks(document, result)
        graph = m.RunGraph(
            run_id=result.run_id,
            flow=result.flow,
            version=result.version,
            graph=to_mermaid(document, executed=executed, failed=failed),
            executed=[block for block in document.blocks if block in executed],
            failed=[block for block in document.blocks if block in failed],
        )
        return JSONResponse(m.body(graph))

    async def steps(self, request: Request) -> Response:
        """The run's variables after each block (user data: answered, never logged)."""
        result = await self._visible(request)
        steps = await self.engine.run_steps(result.run_id)
        answer = m.RunSteps(
            run_id=result.run_id,
            kept=steps is not None,
            steps=[m.RunStepBody.model_validate(step.to_json()) for step in steps or ()],
            limits=m.StepLimits(steps=STEPS_KEPT, step_bytes=STEP_BYTES, run_bytes=RUN_STEP_BYTES),
        )
        return JSONResponse(m.body(answer))

    async def cancel(self, request: Request) -> Response:
        result = await self._visible(request)
        run_id = result.run_id
        if not result.status.finished:
            await self.engine.cancel(run_id)
            result = await self._settled(run_id)
        return JSONResponse(RunSummary.of(result).to_json())

    async def _settled(self, run_id: str) -> RunResult:
        """The run once it has ended, or as it stands after :data:`CANCEL_WAIT`."""
        with anyio.move_on_after(CANCEL_WAIT):
            return await self.engine.wait_for(run_id)
        return await self.engine.get_run(run_id)


def _runs_query(request: Request) -> m.RunsQuery:
    """The listing's filters from the query string (422 invalid_query when unusable)."""
    params = request.query_params
    values: dict[str, Any] = {}
    for name in m.RunsQuery.model_fields:
        if name in _LISTS:
            if params.getlist(name):
                values[name] = params.getlist(name)
        elif name in params:
            values[name] = params[name]
    try:
        return m.RunsQuery.model_validate(values)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ApiError("invalid_query", "; ".join(problems)) from exc
