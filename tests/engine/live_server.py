"""A real uvicorn server on a free loopback port, serving a workspace from its own thread.

Tests talk to it over real HTTP (httpx, Chromium, schemathesis). The engine and the
server run on an event loop in a background thread; ``server.call(fn, *args)`` runs a
coroutine function on that loop, for the few checks that look at the engine directly.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import uvicorn
from anyio.from_thread import BlockingPortal, start_blocking_portal

from blocks import BlockRegistry
from engine import Engine
from engine._http.app import create_app
from engine._http.auth import Authenticator, TokenFileAuthenticator

T = TypeVar("T")


class LiveServer:
    def __init__(
        self,
        workspace: Path,
        *,
        registry: BlockRegistry | None = None,
        authenticator: Authenticator | None = None,
        store: str | None = None,
    ) -> None:
        self.workspace = workspace
        self.store = store  # a store URL (default: the library's in-memory store)
        self.registry = registry
        self.authenticator = authenticator
        self.url = ""
        self.engine: Engine | None = None
        self._stack = ExitStack()
        self._portal: BlockingPortal | None = None
        self._server: uvicorn.Server | None = None

    def __enter__(self) -> LiveServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(512)
        self._stack.callback(listener.close)
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        self._portal = self._stack.enter_context(start_blocking_portal("asyncio"))
        future = self._portal.start_task_soon(self._serve, listener)
        deadline = time.monotonic() + 20
        while self._server is None or not self._server.started:
            if future.done():
                future.result()  # raises what stopped the server
                raise RuntimeError("the server stopped before it started")
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not start")
            time.sleep(0.01)
        self._stack.callback(future.result, 20)
        self._stack.callback(self._stop)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def _stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    def call(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        assert self._portal is not None
        return self._portal.call(function, *args)

    async def _serve(self, listener: socket.socket) -> None:
        tokens = TokenFileAuthenticator(self.workspace / "tokens.yaml")
        authenticator = self.authenticator or tokens
        engine = await Engine.open_workspace(
            self.workspace, store=self.store, registry=self.registry
        )
        async with engine:
            self.engine = engine
            app = create_app(engine, authenticator, admin_role=tokens.admin_role)
            config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
            server = uvicorn.Server(config)
            self._server = server
            await server.serve(sockets=[listener])
