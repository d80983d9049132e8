"""The http block against a real HTTP server listening on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from engine import Engine, RunResult, RunStatus
from engine.testing import deploy


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            recorded = Recorded(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
            )
            with server.lock:
                server.requests.append(recorded)
            parts = self.path.strip("/").split("/")
            if parts[0] == "status":
                self._reply(int(parts[1]), b'{"error": "as asked"}', "application/json")
            elif parts[0] == "flaky":
                with server.lock:
                    left = server.failures.setdefault(self.path, int(parts[1]))
                    server.failures[self.path] = left - 1
                if left > 0:
                    self._reply(503, b"try again", "text/plain")
                else:
                    self._reply(200, b'{"recovered": true}', "application/json")
            elif parts[0] == "text":
                self._reply(200, b"plain words", "text/plain; charset=utf-8")
            else:
                echo = {
                    "method": self.command,
                    "path": self.path,
                    "body": body.decode() if body else None,
                }
                self._reply(200, json.dumps(echo).encode(), "application/json")

        def _reply(self, status: int, payload: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("X-Reply", "from-test-server")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


async def run(
    engine: Engine, blocks: Mapping[str, Any], inputs: Mapping[str, Any] | None = None
) -> RunResult:
    await deploy(engine, blocks, flow="web")
    return await engine.call_flow("web", inputs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_get_stores_status_headers_and_json_body(engine: Engine, server: Server) -> None:
    result = await run(
        engine,
        {
            "call": {
                "type": "http",
                "url": f"{server.url}/echo?q=1",
                "result": "reply",
                "next": "done",
            },
            "done": {"type": "return", "value": "=vars.reply"},
        },
    )

    assert result.status is RunStatus.COMPLETED, result.error
    reply = result.output
    assert reply["status"] == 200
    assert reply["headers"]["x-reply"] == "from-test-server"
    assert reply["headers"]["content-type"] == "application/json"
    assert reply["body"] == {"method": "GET", "path": "/echo?q=1", "body": None}
    assert [(r.method, r.path) for r in server.requests] == [("GET", "/echo?q=1")]


async def test_post_sends_evaluated_url_headers_and_json_body(
    engine: Engine, server: Server
) -> None:
    result = await run(
        engine,
        {
            "call": {
                "type": "http",
                "method": "POST",
                "url": "=inputs.base + '/orders/' + string(inputs.id)",
                "headers": {"X-Customer": "=inputs.customer", "Accept": "application/json"},
                "body": {"amount": "=inputs.amount", "items": ["=inputs.customer", 2]},
                "result": "reply",
            }
        },
        {"base": server.url, "id": 7, "customer": "ada", "amount": 12.5},
    )

    assert result.status is RunStatus.COMPLETED, result.error
    [request] = server.requests
    assert request.method == "POST"
    assert request.path == "/orders/7"
    assert request.headers["x-customer"] == "ada"
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {"amount": 12.5, "items": ["ada", 2]}


async def test_string_body_is_sent_as_is(engine: Engine, server: Server) -> None:
    result = await run(
        engine,
        {"call": {"type": "http", "method": "PUT", "url": f"{server.url}/raw", "body": "a=b&c"}},
    )

    assert result.status is RunStatus.COMPLETED, result.error
    assert [(r.method, r.body) for r in server.requests] == [("PUT", b"a=b&c")]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
async def test_every_method_is_sent(engine: Engine, server: Server, method: str) -> None:
    result = await run(engine, {"call": {"type": "http", "method": method, "url": server.url}})

    assert result.status is RunStatus.COMPLETED, result.error
    assert [r.method for r in server.requests] == [method]


async def test_non_json_body_is_kept_as_text(engine: Engine, server: Server) -> None:
    result = await run(
        engine,
        {
            "call": {"type": "http", "url": f"{server.url}/text", "result": "r", "next": "done"},
            "done": {"type": "return", "value": "=vars.r.body"},
        },
    )

    assert result.output == "plain words"


async def test_idempotency_key_header_is_sent(engine: Engine, server: Server) -> None:
    result = await run(engine, {"call": {"type": "http", "url": server.url}})

    [request] = server.requests
    key = request.headers["idempotency-key"]
    assert key
    assert result.run_id in key


async def test_idempotency_keys_differ_between_blocks_and_iterations(
    engine: Engine, server: Server
) -> None:
    await run(
        engine,
        {
            "each": {"type": "for_each", "items": "[1, 2]", "body": "call", "next": "again"},
            "call": {"type": "http", "url": server.url},
            "again": {"type": "http", "url": server.url},
        },
    )

    keys = [r.headers["idempotency-key"] for r in server.requests]
    assert len(keys) == 3
    assert len(set(keys)) == 3


@pytest.mark.parametrize("status", [400, 404, 500, 503])
async def test_error_status_is_an_http_error(engine: Engine, server: Server, status: int) -> None:
    result = await run(
        engine, {"call": {"type": "http", "method": "POST", "url": f"{server.url}/status/{status}"}}
    )

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.code == "http"
    assert result.error.block == "call"
    assert str(status) in result.error.message


async def test_connection_refused_is_an_http_error(engine: Engine) -> None:
    result = await run(
        engine, {"call": {"type": "http", "url": f"http://127.0.0.1:{_free_port()}/"}}
    )

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert (result.error.code, result.error.block) == ("http", "call")


async def test_http_error_can_be_handled(engine: Engine, server: Server) -> None:
    result = await run(
        engine,
        {
            "call": {"type": "http", "url": f"{server.url}/status/404", "on_error": "handled"},
            "handled": {"type": "return", "value": "=vars.error.code"},
        },
    )

    assert result.status is RunStatus.COMPLETED
    assert result.has_errors
    assert result.output == "http"


@pytest.mark.parametrize("url", ["ftp://example.invalid/x", "=42", "not a url"])
async def test_url_must_be_http(engine: Engine, url: str) -> None:
    result = await run(engine, {"call": {"type": "http", "url": url}})

    assert result.error is not None
    assert (result.error.code, result.error.block) == ("http", "call")
    assert "url" in result.error.message


async def test_headers_must_be_strings(engine: Engine, server: Server) -> None:
    result = await run(engine, {"call": {"type": "http", "url": server.url, "headers": {"X": 1}}})

    assert result.error is not None
    assert result.error.code == "http"
    assert "headers" in result.error.message
    assert server.requests == []


async def test_retry_recovers_after_failures_with_a_stable_idempotency_key(
    engine: Engine, server: Server
) -> None:
    result = await run(
        engine,
        {
            "call": {
                "type": "http",
                "url": f"{server.url}/flaky/2",
                "result": "reply",
                "retry": {"max_attempts": 3, "backoff": 0.05},
                "next": "done",
            },
            "done": {"type": "return", "value": "=vars.reply.body"},
        },
    )

    assert result.status is RunStatus.COMPLETED, result.error
    assert result.output == {"recovered": True}
    assert [e.outcome for e in result.trace if e.block == "call"] == ["http", "http", "ok"]
    assert len(server.requests) == 3
    assert len({r.headers["idempotency-key"] for r in server.requests}) == 1


async def test_retry_gives_up_after_max_attempts(engine: Engine, server: Server) -> None:
    result = await run(
        engine,
        {
            "call": {
                "type": "http",
                "url": f"{server.url}/flaky/5",
                "retry": {"max_attempts": 2, "backoff": 0.05},
            }
        },
    )

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.code == "http"
    assert len(server.requests) == 2


async def test_idempotency_key_is_stable_across_retries_in_a_parallel_branch(
    engine: Engine, server: Server
) -> None:
    result = await run(
        engine,
        {
            "par": {"type": "parallel", "branches": ["call", "busy"]},
            "call": {
                "type": "http",
                "url": f"{server.url}/flaky/1",
                "retry": {"max_attempts": 2, "backoff": 0.3},
            },
            "busy": {"type": "wait", "seconds": 0.05, "next": "busy2"},
            "busy2": {"type": "set", "values": {"x": 1}, "next": "busy3"},
            "busy3": {"type": "set", "values": {"y": 2}},
        },
    )

    assert result.status is RunStatus.COMPLETED, result.error
    assert len(server.requests) == 2
    assert len({r.headers["idempotency-key"] for r in server.requests}) == 1
