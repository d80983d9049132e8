"""HTTP benchmark: activate-blocking of a three-block flow next to a bare ASGI endpoint.

Run by hand from the repository root (about a minute on 2 idle cores)::

    python bench/http_api.py
    python bench/http_api.py --quick     # smoke run: 1 s per measurement
    python bench/http_api.py --json      # also print every figure as one JSON object

Three servers, each uvicorn in a process of its own on 127.0.0.1 with the same
settings, are measured in the same run:

- ``bare``: an ASGI app that reads the body and answers ``{}``: what uvicorn, loopback
  and the client cost by themselves;
- ``memory``: ``flowwarden serve`` with the in-memory store, ``POST
  /api/flows/bench/activate-blocking`` of a flow of three blocks (``set``, ``set``,
  ``return``), anonymous callers allowed, JSON access logs written (to /dev/null);
- ``sqlite``: the same with the default store, the workspace's SQLite file, where an
  accepted activation is a row before the run starts and every block is checkpointed.

For 1, 16 and 64 concurrent clients (asyncio tasks, each with a keep-alive connection
of its own and a minimal HTTP/1.1 client, so that a general-purpose client's overhead
is not what is measured), each server gets a warm-up and then requests for a fixed time;
figures are completed requests per second and the p50 and p99 latency. The client
runs in this process, so on a small machine it competes with the server for the CPU:
the bare endpoint shows that ceiling. Traffic stays on the loopback interface and
every loop is bounded in time.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on the path, and this file's name
# would hide the standard library's http package from everything imported below.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FLOW = """\
flow: bench
description: Three blocks, no inputs schema.
status: LIVE
start: first
blocks:
  first: {type: set, values: {a: 1}, next: second}
  second: {type: set, values: {b: "=vars.a + 1"}, next: done}
  done: {type: return, value: {b: "=vars.b"}}
"""
CONCURRENCY = (1, 16, 64)
BODY = b'{"n": 1}'


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The do-nothing ASGI endpoint: read the body, answer ``{}``."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


def serve_bare(port: int) -> None:
    import uvicorn

    config = uvicorn.Config(
        bare_app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
    )
    uvicorn.Server(config).run()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server(kind: str, workspace: Path) -> Iterator[int]:
    port = free_port()
    if kind == "bare":
        command = [sys.executable, __file__, "--serve-bare", str(port)]
    else:
        store = ["--store", "memory:"] if kind == "memory" else []
        code = "import sys; from engine._cli.main import main; sys.exit(main())"
        command = [sys.executable, "-c", code, "serve", str(workspace), "--port", str(port)]
        command += store
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {kind} server did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


class Connection:
    """A bare HTTP/1.1 keep-alive client for one connection: a fixed request, the
    status and body of each answer. Lighter than a general client, so that the client
    is not what is measured."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        return status, body

    def close(self) -> None:
        self.writer.close()


async def measure(
    port: int, path: str, clients: int, seconds: float, warmup: float
) -> dict[str, Any]:
    raw = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    connections = [await Connection.open(port) for _ in range(clients)]

    async def worker(
        connection: Connection, stop: float, latencies: list[float], errors: list[int]
    ) -> None:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            status, _ = await connection.request(raw)
            latencies.append(time.perf_counter() - start)
            if status != 200:
                errors.append(status)

    async def phase(duration: float) -> tuple[list[float], list[int], float]:
        latencies: list[float] = []
        errors: list[int] = []
        began = time.perf_counter()
        stop = began + duration
        await asyncio.gather(*(worker(c, stop, latencies, errors) for c in connections))
        return latencies, errors, time.perf_counter() - began

    try:
        await phase(warmup)
        latencies, errors, elapsed = await phase(seconds)
    finally:
        for connection in connections:
            connection.close()
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies),
        "per_second": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "errors": len(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s per measurement")
    parser.add_argument("--json", action="store_true", help="also print JSON")
    parser.add_argument("--seconds", type=float, default=None, help="time per measurement")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    seconds = args.seconds or (1.0 if args.quick else 4.0)
    warmup = min(1.0, seconds / 2)
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        workspace = Path(folder)
        (workspace / "bench.yaml").write_text(FLOW)
        for kind in ("bare", "memory", "sqlite"):
            with server(kind, workspace) as port:
                path = "/" if kind == "bare" else "/api/flows/bench/activate-blocking"
                results[kind] = [
                    asyncio.run(measure(port, path, clients, seconds, warmup))
                    for clients in CONCURRENCY
                ]
    print(
        f"HTTP activate-blocking, 3-block flow; {os.cpu_count()} CPUs, {platform.python_version()}"
    )
    print(f"{seconds:g} s per measurement after {warmup:g} s of warm-up; client in-process\n")
    print("| server | clients | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    names = {
        "bare": "bare ASGI endpoint",
        "memory": "flowwarden, in-memory store",
        "sqlite": "flowwarden, SQLite store (default)",
    }
    for kind, rows in results.items():
        for row in rows:
            print(
                f"| {names[kind]} | {row['clients']} | {row['per_second']:,.0f} | "
                f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['errors']} |"
            )
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
