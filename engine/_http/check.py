"""``GET /api/flows/{flow}/check``: who may run a flow and every flow it reaches.

The analysis of ``flowwarden check`` as JSON, for administrators: each flow the chain
reaches through Call Flow blocks, put to the gate as it would be now, for the identity
given as ``?user=ID&role=R&role=R2`` (neither: anonymous).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from permissions import ANONYMOUS

from .._runtime.chain import analyse_chain
from .manage import asked_identity
from .request import Api, JSONResponse

__all__ = ["check_routes"]


def check_routes(api: Api) -> list[Route]:
    """The check endpoint, bound to ``api``."""

    async def check(request: Request) -> Response:
        api.admin(request)
        identity = asked_identity(request) or ANONYMOUS
        report = await analyse_chain(api.engine, str(request.path_params["flow"]), identity)
        return JSONResponse(report.to_json())

    return [Route("/api/flows/{flow}/check", check, methods=["GET"])]
