"""What every HTTP endpoint shares: who is calling, the body within its limit, errors.

Errors leave as JSON ``{"error": code, "message": …}`` with the status of the code
(:data:`STATUS`); nothing else of an exception — no traceback, no internal detail —
reaches a caller.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from permissions import Identity

from .._model.errors import (
    ActivationDenied,
    FlowError,
    InvalidFlow,
    InvalidInputs,
    StoreUnavailable,
    Unauthenticated,
)
from .._model.jsontext import dumps_bytes
from .._model.limits import loads_json
from .._runtime.engine import Engine
from .auth import Authenticator

__all__ = [
    "STATUS",
    "Api",
    "ApiError",
    "JSONResponse",
    "error_response",
    "handle_error",
    "note",
]

STATUS: Mapping[str, int] = {
    "unauthenticated": 401,
    "activation_denied": 403,
    "forbidden": 403,
    "flow_not_found": 404,
    "run_not_found": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "flow_not_live": 409,
    "invalid_transition": 409,
    "version_invalid": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_inputs": 422,
    "invalid_timeout": 422,
    "invalid_flow": 422,
    "invalid_body": 422,
    "invalid_query": 422,
    "store_error": 503,
    "store_unavailable": 503,
    "internal": 500,
}
"""The HTTP status of each error code."""

# A body over the limit is read and thrown away up to this size before the 413, so the
# client sees the answer instead of a reset connection; beyond it the connection closes.
_DRAIN_LIMIT = 16 * 1_048_576


class ApiError(Exception):
    """A refusal of the HTTP layer itself (403 forbidden, 413, 422 invalid_timeout…)."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


class JSONResponse(Response):
    """JSON that never fails on a value: non-finite numbers become ``null``, and text
    that is not valid Unicode is escaped."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        written = dumps_bytes(content)
        if written is not None:
            return written
        try:
            text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except ValueError:
            content = _finite(content)
            text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a JSON body: escape everything
            return json.dumps(content, separators=(",", ":")).encode("ascii")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def error_response(
    code: str,
    message: str,
    *,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": code, "message": message, **(extra or {})}
    return JSONResponse(body, status_code=STATUS.get(code, 500), headers=headers)


def handle_error(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: the JSON error body for a refusal."""
    if isinstance(exc, ApiError):
        return error_response(exc.code, exc.message, extra=exc.extra)
    if isinstance(exc, HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_body")
        message = "no such endpoint" if code == "not_found" else str(exc.detail)
        response = error_response(code, message, headers=exc.headers)
        response.status_code = exc.status_code
        return response
    if isinstance(exc, Unauthenticated):
        return error_response(exc.code, str(exc), headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, ActivationDenied) and exc.reason == "error":
        return error_response(exc.code, f"activation of flow {exc.flow!r} denied")
    if isinstance(exc, InvalidInputs):
        return error_response(exc.code, str(exc), extra={"problems": exc.problems})
    if isinstance(exc, InvalidFlow):
        problems = [str(problem) for problem in exc.problems]
        return error_response(
            exc.code, "the flow document has problems", extra={"problems": problems}
        )
    if isinstance(exc, StoreUnavailable):  # the store's own text names files and hosts
        return error_response("store_unavailable", "the store is not available now; try again")
    if isinstance(exc, FlowError) and exc.code in STATUS and exc.code != "store_error":
        return error_response(exc.code, str(exc))
    if isinstance(exc, FlowError) and exc.code == "store_error":
        return error_response("store_error", "the store is not available")
    if isinstance(exc, ClientDisconnect):
        return error_response("invalid_body", "the client went away")
    raise exc  # not a refusal: the access log turns it into a bare 500


@dataclass
class RequestNote:
    """What an endpoint tells the access log: who called, which run it started."""

    user: str | None = None
    run_id: str | None = None


def note(request: Request, *, user: str | None = None, run_id: str | None = None) -> None:
    """Record the caller or the run of this request for its access-log line."""
    record = request.scope.get("flowwarden.note")
    if isinstance(record, RequestNote):
        if user is not None:
            record.user = user
        if run_id is not None:
            record.run_id = run_id


@dataclass(frozen=True)
class Api:
    """The engine behind the endpoints and how callers are recognized."""

    engine: Engine
    authenticator: Authenticator
    admin_role: str

    def identity(self, request: Request) -> Identity:
        """The caller: anonymous without ``Authorization``; 401 for anything unusable."""
        values = request.headers.getlist("authorization")
        if not values:
            token = None
        else:
            scheme, _, token = values[0].strip().partition(" ")
            token = token.strip()
            if len(values) > 1 or scheme.lower() != "bearer" or not token:
                raise Unauthenticated("use one 'Authorization: Bearer TOKEN' header")
        identity = self.authenticator.authenticate(token)
        note(request, user=identity.user_id)
        return identity

    def is_admin(self, identity: Identity) -> bool:
        return self.admin_role in identity.roles

    def admin(self, request: Request) -> Identity:
        """The caller, who must hold the administrator role (else 403 forbidden)."""
        identity = self.identity(request)
        if not self.is_admin(identity):
            raise ApiError("forbidden", f"this needs the {self.admin_role} role")
        return identity

    async def body(self, request: Request) -> bytes:
        """The raw body, refused (413) once it is over the input limit, before parsing."""
        limit = self.engine.limits.max_input_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            if int(declared) <= _DRAIN_LIMIT:
                await _drain(request, limit=_DRAIN_LIMIT)
            raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await request.receive()
            if message["type"] != "http.request":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            size += len(chunk)
            if size > limit:
                if more:
                    await _drain(request, limit=_DRAIN_LIMIT - size)
                raise _too_large(limit)
            chunks.append(chunk)
            if not more:
                return b"".join(chunks)

    async def json_body(self, request: Request) -> Any:
        """The body parsed as strict JSON within the nesting limit (422 invalid_body
        when it is not)."""
        body = await self.body(request)
        try:
            return loads_json(body, max_nesting=self.engine.limits.max_nesting)
        except ValueError as exc:
            raise ApiError("invalid_body", f"the body is not valid JSON: {exc}") from exc

    def require_json(self, request: Request, body: bytes) -> None:
        """A non-empty body must say it is JSON (415 otherwise): a cross-site HTML form
        can send only form and text types, so it can never activate a flow."""
        if not body:
            return
        media_type = request.headers.get("content-type", "").partition(";")[0]
        if media_type.strip().lower() != "application/json":
            raise ApiError(
                "unsupported_media_type", "a body must come with Content-Type: application/json"
            )


def _too_large(limit: int) -> ApiError:
    return ApiError("payload_too_large", f"the body is over the limit of {limit} bytes")


async def _drain(request: Request, *, limit: int) -> None:
    """Read and drop what is left of the body, at most ``limit`` more bytes."""
    size = 0
    while size <= limit:
        message = await request.receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
