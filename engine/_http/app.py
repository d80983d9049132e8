"""The HTTP Call Flow API, the management API and the web UI, as one ASGI application.

::

    app = create_app(engine, TokenFileAuthenticator("workspace/tokens.yaml"))

Serve it with uvicorn (``flowwarden serve WORKSPACE`` does, through :func:`serve`) or
mount it in an existing ASGI application. The engine must be running while the app
serves: enter it yourself (``async with engine``) or pass ``own_engine=True`` so the
app's lifespan enters and closes it (a mounted app's lifespan is not run by Starlette:
give ``app.router.lifespan_context`` to the outer app).

Every activation goes through the engine's gate with ``via="http"``; the raw body is
handed to the gate, which parses it only at its inputs step. Each request is logged as
one structlog event ``http.request`` (method, path, status, duration, user, and the run
id of an activation) — never a token or the ``Authorization`` header.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import structlog
import structlog.tracebacks
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from permissions import Identity

from .._model.errors import FlowError, InvalidWorkspace, Problem, RunNotFound
from .._model.jsontext import UtcStamper, log_bytes, log_line
from .._model.logs import keeps_loggers, settle
from .._runtime.engine import Engine
from .._runtime.heap import settle_heap
from .._runtime.telemetry import continue_trace
from .._runtime.workspace import TOKEN_FILES, config_file, store_url
from .._store.base import Store
from .auth import DEFAULT_ADMIN_ROLE, Authenticator, TokenFileAuthenticator
from .check import check_routes
from .explorer import explorer_routes
from .health import health_routes
from .manage import management_routes
from .openapi import openapi_document
from .protocol import HttpProtocol
from .request import Api, ApiError, JSONResponse, RequestNote, error_response, handle_error, note
from .runs import run_routes
from .ui import ui_routes

__all__ = ["configure_json_logs", "create_app", "serve"]

"""Where ``flowwarden serve`` keeps runs and settings when no store is given."""

_DEFAULT_WAIT = 5.0
_GRACE = 10.0  # seconds a stopping server gives requests, then runs, to finish
_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


def create_app(
    engine: Engine,
    authenticator: Authenticator,
    *,
    admin_role: str = DEFAULT_ADMIN_ROLE,
    own_engine: bool = False,
) -> Starlette:
    """The ASGI application serving ``engine``.

    ``authenticator`` maps bearer tokens to identities; identities holding
    ``admin_role`` may use the management API and the web UI. With ``own_engine`` the
    app's lifespan runs the engine (``async with engine``) while the app is served.
    """
    Identity(user_id="-", roles=[admin_role])  # a usable role name, not a system role
    api = Api(engine, authenticator, admin_role)
    calls = _CallFlowViews(api)
    document = openapi_document()

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    routes = [
        Route("/api/flows/{flow}/activate", calls.activate, methods=["POST"]),
        Route("/api/flows/{flow}/activate-blocking", calls.activate_blocking, methods=["POST"]),
        Route("/api/runs/{run_id}", calls.get_run, methods=["GET"]),
        *run_routes(api),
        *management_routes(api),
        *check_routes(api),
        *health_routes(api),
        Route("/openapi.json", openapi, methods=["GET"]),
        *explorer_routes(),
        *ui_routes(),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if own_engine:
            async with engine:
                yield
        else:
            yield

    handlers = {
        ApiError: handle_error,
        FlowError: handle_error,
        HTTPException: handle_error,
        ClientDisconnect: handle_error,
    }
    return Starlette(
        routes=routes,
        middleware=[Middleware(_AccessLog)],
        exception_handlers=handlers,
        lifespan=lifespan,
    )


class _CallFlowViews:
    """``activate``, ``activate-blocking`` and reading a run back."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.engine = api.engine

    async def activate(self, request: Request) -> Response:
        identity, body = await self._caller(request)
        with continue_trace(request.headers):  # a W3C traceparent: the run joins that trace
            run_id = await self.engine.call_flow(
                request.path_params["flow"], body, identity=identity, wait=False, via="http"
            )
        note(request, run_id=run_id)
        return _accepted(request, run_id)

    async def activate_blocking(self, request: Request) -> Response:
        identity, body = await self._caller(request)
        timeout = self._timeout(request)
        began = time.perf_counter()  # the wait counts from here, the activation in it
        with continue_trace(request.headers):
            # the run begins in this task, which waits for it next
            run = await self.engine.start_flow(
                request.path_params["flow"], body, identity=identity, via="http", waiting=timeout
            )
        if not isinstance(run, str):  # it has ended already: no timer to set
            note(request, run_id=run.run_id)
            return JSONResponse(run.to_json())
        note(request, run_id=run)
        # the event loop's clock is read only here, for a run still going: a read of
        # it asks anyio for the running loop's backend, most of a microsecond
        with anyio.move_on_after(timeout - (time.perf_counter() - began)):
            result = await self.engine.wait_for(run)
            return JSONResponse(result.to_json())
        return _accepted(request, run)

    async def get_run(self, request: Request) -> Response:
        identity = self.api.identity(request)
        run_id = request.path_params["run_id"]
        result = await self.engine.get_run(run_id)
        own = result.user_id is not None and result.user_id == identity.user_id
        if not (own or self.api.is_admin(identity)):
            raise RunNotFound(f"no run {run_id!r}")  # the same answer as for an unknown run
        return JSONResponse(result.to_json())

    async def _caller(self, request: Request) -> tuple[Identity, bytes]:
        """Who activates, and the body they sent (JSON, or nothing)."""
        identity = self.api.identity(request)
        body = await self.api.body(request)
        self.api.require_json(request, body)
        return identity, body

    def _timeout(self, request: Request) -> float:
        if not request.scope.get("query_string"):
            return _DEFAULT_WAIT
        raw = request.query_params.get("timeout")
        if raw is None:
            return _DEFAULT_WAIT
        try:
            timeout = float(raw)
        except ValueError:
            timeout = math.nan
        if math.isnan(timeout) or timeout < 0:
            raise ApiError("invalid_timeout", "timeout must be a number of seconds, 0 or more")
        return min(timeout, self.engine.limits.max_blocking_wait)


def _accepted(request: Request, run_id: str) -> Response:
    location = f"{request.scope.get('root_path', '')}/api/runs/{run_id}"
    return JSONResponse({"run_id": run_id}, status_code=202, headers={"Location": location})


class _AccessLog:
    """One ``http.request`` event per request; unhandled errors become a bare 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._proxy = structlog.get_logger("flowwarden.http")
        self._kept: Any = None  # the logger itself, once structlog says it may be kept

    @property
    def _logger(self) -> Any:
        """structlog's logger, kept once it is bound where structlog keeps loggers
        bound (serve's configuration): the lazy proxy's lookup, a fraction of a
        microsecond, is then skipped at each request. Elsewhere the proxy, which
        follows configuration changes."""
        kept = self._kept
        if kept is not None:
            return kept
        if keeps_loggers():
            kept = self._kept = self._proxy.bind()
            return kept
        return self._proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestNote()
        scope["flowwarden.note"] = record
        status = 0
        started = time.perf_counter()

        async def send_logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", ())
                present = {name.lower() for name, _ in headers}
                missing = [pair for pair in _SECURITY_HEADERS if pair[0] not in present]
                if missing:  # those a response set itself stay as they are
                    message["headers"] = [*headers, *missing]
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        except Exception:
            self._logger.exception("http.error", method=scope["method"], path=scope["path"])
            if status == 0:
                response = error_response("internal", "internal error")
                await response(scope, receive, send_logged)
        finally:
            self._logger.info(
                "http.request",
                method=scope["method"],
                path=scope["path"],
                status=status or 500,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                user=record.user,
                run_id=record.run_id,
            )


def configure_json_logs() -> None:
    """structlog renders every event of level info and up as one JSON line on stderr
    (what ``serve`` uses), in place of a command's configuration not applied yet.

    The lines go out as the serializer's bytes, through structlog's ``BytesLogger``
    (flushed after each, as its ``PrintLogger`` does), where stderr has a binary
    buffer: with no text layer to encode them again, a line costs 1.2-1.7 µs less
    (of 9-12), and a server writes two a request."""
    settle()  # so that the command's, applied later, cannot replace this one
    stream = getattr(sys.stderr, "buffer", None)
    factory: Any
    if stream is not None:
        sys.stderr.flush()  # what was written as text before goes out first
        renderer = structlog.processors.JSONRenderer(serializer=log_bytes)
        factory = structlog.BytesLoggerFactory(stream)
    else:  # a stderr of text only (replaced by the embedding program)
        renderer = structlog.processors.JSONRenderer(serializer=log_line)
        factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            UtcStamper(),  # TimeStamper(fmt="iso", utc=True), the same text for less
            # a traceback as a dict, without the values of local variables: a frame
            # that holds a bearer token or a secret must not print it
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


async def serve(
    workspace: str | Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    store: Store | str | None = None,
    execute: bool = True,
) -> int:
    """``flowwarden serve``: load the workspace once, then serve it until interrupted.

    With ``execute=False`` (``--queue-only``) activations that do not wait are left
    QUEUED in the store for ``flowwarden worker`` processes. SIGINT or SIGTERM stops
    it: requests in flight get up to 10 s, then each run in flight finishes the block it
    is in (up to 10 s more) and is handed back to the store for a worker to resume
    (with ``memory:``, which nobody else can resume, what is left is cancelled).

    Tokens come from the workspace's ``tokens.yaml`` (its ``admin_role`` names the
    administrators). Without ``store``, runs and settings are kept in an embedded SQLite
    file, ``.flowwarden.db`` in the workspace. Returns the exit code: 0 after a clean
    shutdown, 2 when the workspace, the store or the address cannot be used.
    """
    configure_json_logs()
    logger = structlog.get_logger("flowwarden.http")
    root = Path(workspace)
    try:
        authenticator, default_store = await anyio.to_thread.run_sync(_read_workspace, root)
        engine = await Engine.open_workspace(
            root, store=default_store if store is None else store, execute=execute
        )
    except (FlowError, ValueError, OSError) as exc:
        print(f"flowwarden serve: {exc}", file=sys.stderr)
        return 2
    try:
        listener = _listen(host, port)
    except OSError as exc:
        print(f"flowwarden serve: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        await engine.store.close()
        return 2
    async with engine:
        app = create_app(engine, authenticator, admin_role=authenticator.admin_role)
        config = uvicorn.Config(
            app,
            http=HttpProtocol,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=int(_GRACE),
        )
        server = _Server(config)
        settle_heap()  # what start-up built lives as long as the server
        address = listener.getsockname()
        logger.info("http.listening", url=f"http://{_url_host(host)}:{address[1]}/")
        with listener:
            async with anyio.create_task_group() as group:
                group.start_soon(_stop_on_signal, server)
                await server.serve(sockets=[listener])
                # what a deploy sends: the runs in flight are not cancelled; each ends
                # its block and, with a durable store, is handed back for a worker
                await engine.hand_back(_GRACE)
                group.cancel_scope.cancel()
    logger.info("http.stopped")
    return 0


class _Server(uvicorn.Server):
    """uvicorn's server, leaving signals to :func:`serve` (which exits 0 on them)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _stop_on_signal(server: uvicorn.Server) -> None:
    """SIGINT or SIGTERM: finish the requests in flight and stop; a second one: at once."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if server.should_exit:
                server.force_exit = True
            server.should_exit = True


def _read_workspace(root: Path) -> tuple[TokenFileAuthenticator, str]:
    """The workspace's tokens and the URL of its default store."""
    if not root.is_dir():
        raise InvalidWorkspace([Problem("not a workspace directory", file=str(root))])
    return TokenFileAuthenticator(config_file(root, TOKEN_FILES)), store_url(root)


def _listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(2048)
    except OSError:
        listener.close()
        raise
    listener.set_inheritable(True)
    return listener


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
