"""HTTP benchmark: activate-blocking of a three-block flow next to a bare ASGI endpoint.

Run by hand from the repository root (about five minutes)::

    python bench/http_api.py
    python bench/http_api.py --quick     # smoke run: 1 s per measurement, one round
    python bench/http_api.py --rounds 5  # more repetitions
    python bench/http_api.py --json      # also print every figure as one JSON object

Seven servers, each uvicorn in a process of its own on 127.0.0.1 with the same
settings, are measured in the same run:

- ``bare``: an ASGI app that reads the body and answers ``{}``: what uvicorn, loopback
  and the client cost by themselves;
- ``framework``: the framework floor, a Starlette endpoint that parses the JSON body and
  renders an answer of activate-blocking's shape and size with the same headers, behind
  an access log of one structlog JSON event per request: what such a request costs on
  the stack the spec names when the engine's part costs nothing;
- ``memory``: ``flowwarden serve`` with the in-memory store, ``POST
  /api/flows/bench/activate-blocking`` of a flow of three blocks (``set``, ``set``,
  ``return``), anonymous callers allowed, JSON access logs written (to /dev/null);
- ``sqlite``: the same with the default store, the workspace's SQLite file, where an
  accepted activation is a row before the run starts and every block is checkpointed;
- ``durable``: the durable floor, the framework floor whose endpoint first commits the
  three writes a run of that flow needs (its row, one checkpoint, its end), one after
  another, each answered once its transaction has committed, through the store's group
  writer on a file opened as the store opens its own: what such a request costs on
  SQLite when the engine's part costs nothing;
- ``minimal``: the same writes through the simplest group commit instead (a writer task
  that hands every group, even a write alone, to a worker thread);
- ``store``: the store floor, the framework floor whose endpoint first makes the SQLite
  store's own calls of a run of that flow (the gate's read, the run's row, its
  checkpoint, its end), with the values the engine passed in one run made at start-up:
  what such a request costs when the engine's part costs nothing but the store's does.

For 1, 16 and 64 concurrent clients (asyncio tasks, each with a keep-alive connection
of its own and a minimal HTTP/1.1 client, so that a general-purpose client's overhead
is not what is measured), each server gets a warm-up and then requests for a fixed time;
figures are completed requests per second, the p50 and p99 latency, and the CPU time
per request of the server's process (all its threads, from ``/proc``) and of this one.
The servers run side by side, and each round measures all of them at each
concurrency back to back; the figures are medians of the rounds, and a ratio of two
servers (or of one server's 16 clients to its 1) is the median of each round's ratio,
of two measurements taken minutes apart at most. The client runs in
this process, apart from the servers' processes and event loops, but on a small machine
it competes with them for the CPUs: the bare endpoint shows that ceiling. Traffic stays
on the loopback interface and every loop is bounded in time.

Printed against their targets (PASS or FAIL): the in-memory store's requests per second
as a share of the bare endpoint's at each concurrency (at least 0.5), with both servers'
CPU per request; where the framework floor is itself under that share, the target is
out of reach, and the one held next to it is the in-memory store's share of the
framework floor's requests per second (at least 0.5: the engine's part of a request
costs at most what the framework's does); and the SQLite store's at 16 clients against
1 client (at least 3: concurrent activations share commits), next to the floor of that
store, one bare SQLite commit with ``synchronous=FULL`` measured in each round in the
workspace's folder, and one hand-over of a function that does nothing to a worker
thread and back, as each group's transaction takes (its wall time and the event loop's
CPU). For SQLite the same run also gives the ceiling of that ratio: one client's time
per request is the server's CPU, the client's CPU and the wait for commits; 16 clients
cannot do better than one request per CPU time of the server's event-loop thread per
request at 16 clients (read from ``/proc`` too), nor than the machine's CPUs, shared by
the server and the client, allow. The durable floor's own ratio shows where that target
lies: where the floor is under 3, it is out of reach here.
The ratio also rewards a slow single client: the minimal group commit's is higher
because it is slower with one client, not faster with 16. So two targets are held next
to it: the store's group writer against the minimal one in the durable floors (at 16
clients at least 0.9: commits shared as well; at 1 client at least 1: a write alone
answered no later), and the SQLite store's requests per second as a share of the
durable floor's (at least 0.5, as the in-memory store's against the framework floor).
Where that share goes is printed after it, with no target: the store floor against the
durable floor (what the store's record, its indexes, trace and steps, costs beyond three
one-row writes) and the SQLite store against the store floor (the engine apart from the
store).
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
import contextlib
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
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


def serve(app: Any, port: int) -> None:
    """Serve ``app`` on uvicorn with the settings every server here shares."""
    import uvicorn

    from engine._http.protocol import HttpProtocol

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=HttpProtocol,  # the parser flowwarden serve uses
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
    )
    uvicorn.Server(config).run()


# The answer of the framework floor: what activate-blocking answers for this flow, in
# shape and size (a 24-digit run id, three trace entries, Unix times)
_RUN_ID = "0123456789abcdef01234567"
_NOW = 1_796_000_000.123456
ANSWER: dict[str, Any] = {
    "run_id": _RUN_ID,
    "flow": "bench",
    "version": 1,
    "status": "COMPLETED",
    "output": {"b": 2},
    "error": None,
    "has_errors": False,
    "user_id": None,
    "roles": [],
    "parent_run_id": None,
    "root_run_id": _RUN_ID,
    "depth": 0,
    "inputs": {"n": 1},
    "trace": [
        {"block": block, "type": kind, "start": _NOW, "duration": 3.6950004869e-06, "outcome": "ok"}
        for block, kind in (("first", "set"), ("second", "set"), ("done", "return"))
    ],
    "log": [],
    "created_at": _NOW,
    "started_at": _NOW,
    "finished_at": _NOW,
}


def framework_app() -> Any:
    """The framework floor: a Starlette endpoint that reads the JSON body and renders an
    answer of the same shape as activate-blocking's, with the same headers, behind an
    access log writing one structlog JSON event per request, logs configured as
    ``flowwarden serve`` configures them. Everything an activate-blocking request costs
    that is not the engine's: the stack the spec names, and one log line."""
    import orjson
    import structlog
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from engine._http.app import _SECURITY_HEADERS, configure_json_logs

    configure_json_logs()
    headers = {name.decode(): value.decode() for name, value in _SECURITY_HEADERS}
    logger = structlog.get_logger("bench.http")

    class AccessLog:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            status = 0
            started = time.perf_counter()

            async def send_logged(message: Any) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, send_logged)
            finally:
                logger.info(
                    "http.request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 3),
                )

    async def answer(request: Request) -> Response:
        json.loads(await request.body())
        body = orjson.dumps(ANSWER)  # as the server writes its answers
        return Response(body, media_type="application/json", headers=headers)

    return Starlette(
        routes=[Route("/api/flows/{flow}/activate-blocking", answer, methods=["POST"])],
        middleware=[Middleware(AccessLog)],
    )


# The durable floors' writes: what a run of the bench flow must have committed before
# its answer (its row, one checkpoint, its end), each a one-row statement
_FLOOR_TABLES = (
    "CREATE TABLE IF NOT EXISTS floor_runs (run_id TEXT PRIMARY KEY, inputs TEXT, "
    "result TEXT, status TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS floor_checkpoints (run_id TEXT, seq INTEGER, state TEXT, "
    "PRIMARY KEY (run_id, seq)) WITHOUT ROWID",
)


class MinimalGroupCommit:
    """The simplest group commit: every write is queued for one writer task, which
    takes all that wait, runs them in one transaction in a worker thread, and answers
    them once it has committed. Unlike the store's writer, even a write alone is handed
    to the thread."""

    def __init__(self, connect: Any) -> None:
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        self._waiting: list[tuple[Any, asyncio.Future[None]]] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def write(self, op: Any) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._commits())
        answered = asyncio.get_running_loop().create_future()
        self._waiting.append((op, answered))
        self._wake.set()
        await answered

    async def _commits(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            group, self._waiting = self._waiting, []
            try:
                await asyncio.to_thread(self._transaction, [op for op, _ in group])
            except Exception as exc:  # nothing of the group committed: each caller hears
                for _, answered in group:
                    answered.set_exception(exc)
            else:
                for _, answered in group:
                    answered.set_result(None)

    def _transaction(self, ops: list[Any]) -> None:
        if self._conn is None:
            self._conn = self._connect()
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                op(self._conn)
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise


def durable_app(folder: Path, minimal: bool) -> Any:
    """A durable floor: the framework floor, whose endpoint first commits the three
    writes a run of the bench flow needs, one after another, each answered once its
    transaction has committed, so that the writes of concurrent requests share
    transactions. They go through the store's group writer, or, with ``minimal``,
    through :class:`MinimalGroupCommit`; on a file opened as the store opens its own
    (WAL, ``synchronous=FULL``), keyed by run ids as the engine makes them (ordered by
    time, so that each index grows at one end). Everything an activate-blocking request
    on SQLite costs that is not the engine's."""
    from starlette.routing import Route

    from engine._runtime.runs import new_run_id
    from engine._store.sqlite_file import failure, open_connection
    from engine._store.sqlite_writer import GroupWriter

    path = str(folder / ("floor-minimal.db" if minimal else "floor-durable.db"))

    def connect() -> sqlite3.Connection:
        conn = open_connection(path, "FULL", 5.0)
        for statement in _FLOOR_TABLES:
            conn.execute(statement)
        return conn

    writer: Any
    if minimal:
        writer = MinimalGroupCommit(connect)
    else:
        writer = GroupWriter(connect, partial(failure, path), lambda: None)
    app = framework_app()
    answer = next(route for route in app.routes if isinstance(route, Route)).endpoint
    result = json.dumps(ANSWER["output"])

    async def activate(request: Any) -> Any:
        run_id = new_run_id()
        inputs = (await request.body()).decode()
        await writer.write(
            lambda conn: conn.execute(
                "INSERT INTO floor_runs VALUES (?, ?, NULL, 'RUNNING')", (run_id, inputs)
            )
        )
        await writer.write(
            lambda conn: conn.execute(
                "INSERT INTO floor_checkpoints VALUES (?, 1, ?)", (run_id, '{"a": 1}')
            )
        )
        await writer.write(
            lambda conn: conn.execute(
                "UPDATE floor_runs SET result = ?, status = 'COMPLETED' WHERE run_id = ?",
                (result, run_id),
            )
        )
        return await answer(request)

    app.router.routes = [Route("/api/flows/{flow}/activate-blocking", activate, methods=["POST"])]
    return app


async def _store_calls(url: str) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """The store calls one run of the bench flow makes, with their arguments, as the
    engine made them on the store at ``url`` (which keeps the flow, LIVE)."""
    from engine import Engine

    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def recorded(name: str, call: Any) -> Any:
        async def recording(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, args, kwargs))
            return await call(*args, **kwargs)

        return recording

    async with Engine(url) as engine:
        await engine.start("bench", await engine.add_version(FLOW))
        store: Any = engine.store
        for name in ("gate_view", "create_run", "checkpoint", "finish_run"):
            setattr(store, name, recorded(name, getattr(store, name)))
        result = await engine.call_flow("bench", json.loads(BODY))
        if result.output != ANSWER["output"]:
            raise RuntimeError(f"the bench flow answered {result.output!r}")
    return calls


def store_app(folder: Path) -> Any:
    """The store floor: the framework floor whose endpoint first makes the SQLite
    store's calls that a run of the bench flow makes (the gate's read, the run's row,
    its checkpoint, its end), in order, with the values the engine passed in one run
    made at start-up, for a new run id each request, on a store file of its own. What
    an activate-blocking request on SQLite costs when the engine's part costs nothing
    but the store's does: against the durable floor, what the store's record costs
    (its indexes, trace and steps); against it, the SQLite server's engine apart from
    the store."""
    from dataclasses import replace

    from starlette.routing import Route

    from engine._runtime.runs import new_run_id
    from engine._store.sqlite import SQLiteStore

    url = f"sqlite:///{folder / 'floor-store.db'}"
    calls = anyio.run(_store_calls, url)
    store = SQLiteStore.from_url(url)
    app = framework_app()
    answer = next(route for route in app.routes if isinstance(route, Route)).endpoint

    async def activate(request: Any) -> Any:
        run_id = new_run_id()
        for name, args, kwargs in calls:
            if name == "gate_view":
                await store.gate_view(*args, **kwargs)
            elif name == "checkpoint":
                await store.checkpoint(run_id, *args[1:], **kwargs)
            else:  # create_run, finish_run: the record, for this run
                record = args[0]
                header = replace(record.header, run_id=run_id, root_run_id=run_id)
                await getattr(store, name)(replace(record, header=header), *args[1:], **kwargs)
        return await answer(request)

    app.router.routes = [Route("/api/flows/{flow}/activate-blocking", activate, methods=["POST"])]
    return app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int, *, main_thread: bool = False) -> float:
    """User and system CPU time of process ``pid`` so far: all its threads, or only its
    main thread, the one that runs the event loop (Linux)."""
    stat = Path(f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat")
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy so far, all processes (Linux)."""
    fields = [int(field) for field in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and waiting for I/O
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@contextmanager
def server(kind: str, workspace: Path) -> Iterator[tuple[int, int]]:
    port = free_port()
    if kind in ("bare", "framework"):
        command = [sys.executable, __file__, f"--serve-{kind}", str(port)]
    elif kind in ("durable", "minimal", "store"):
        command = [sys.executable, __file__, f"--serve-{kind}", str(port), str(workspace)]
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
        yield port, process.pid
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
    port: int, pid: int, path: str, clients: int, seconds: float, warmup: float
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
        server_cpu, client_cpu = cpu_seconds(pid), time.process_time()
        loop_cpu, machine_cpu = cpu_seconds(pid, main_thread=True), machine_cpu_seconds()
        latencies, errors, elapsed = await phase(seconds)
        server_cpu = cpu_seconds(pid) - server_cpu
        loop_cpu = cpu_seconds(pid, main_thread=True) - loop_cpu
        client_cpu = time.process_time() - client_cpu
        machine_cpu = machine_cpu_seconds() - machine_cpu
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
        "server_cpu_us": server_cpu / len(latencies) * 1e6,
        "loop_cpu_us": loop_cpu / len(latencies) * 1e6,
        "client_cpu_us": client_cpu / len(latencies) * 1e6,
        # CPUs' worth the rest of the machine kept busy meanwhile (other work on it)
        "others_cpus": max(0.0, machine_cpu - server_cpu - client_cpu) / elapsed,
    }


def bare_commits(folder: Path, count: int = 200) -> float:
    """Commits per second of one-row ``INSERT`` transactions, one after another, in a
    SQLite file in WAL mode with ``synchronous=FULL`` (the store's default) next to the
    workspace's: what one fsync of the log costs on this disk now."""
    db = sqlite3.connect(folder / "floor.db", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, payload TEXT)")
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (payload) VALUES (?)", ("x" * 100,))
            db.execute("COMMIT")
            samples.append(time.perf_counter() - started)
    finally:
        db.close()
    return 1 / statistics.median(samples)


def _nothing() -> None:
    pass


def thread_handover(count: int = 200) -> tuple[float, float]:
    """One hand-over to a worker thread and back, as the store's group writer makes for
    each group's transaction: its median wall time and the event loop's mean CPU time,
    in µs, for a function that does nothing."""

    async def handovers() -> tuple[float, float]:
        await anyio.to_thread.run_sync(_nothing)  # the worker thread exists
        samples = []
        cpu = time.thread_time()
        for _ in range(count):
            started = time.perf_counter()
            await anyio.to_thread.run_sync(_nothing)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples) * 1e6, (time.thread_time() - cpu) / count * 1e6

    return anyio.run(handovers)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s per measurement, 1 round")
    parser.add_argument("--json", action="store_true", help="also print JSON")
    parser.add_argument("--seconds", type=float, default=None, help="time per measurement")
    parser.add_argument("--rounds", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-framework", type=int, metavar="PORT", help=argparse.SUPPRESS)
    for kind in ("durable", "minimal", "store"):
        parser.add_argument(
            f"--serve-{kind}", nargs=2, metavar=("PORT", "FOLDER"), help=argparse.SUPPRESS
        )
    args = parser.parse_args()
    if args.serve_bare:
        serve(bare_app, args.serve_bare)
        return
    if args.serve_framework:
        serve(framework_app(), args.serve_framework)
        return
    for floor in (args.serve_durable, args.serve_minimal):
        if floor:
            serve(durable_app(Path(floor[1]), floor is args.serve_minimal), int(floor[0]))
            return
    if args.serve_store:
        serve(store_app(Path(args.serve_store[1])), int(args.serve_store[0]))
        return
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    rounds = args.rounds or (1 if args.quick else 3)
    warmup = min(1.0, seconds / 2)
    kinds = ("bare", "framework", "memory", "sqlite", "durable", "minimal", "store")
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {
        (kind, clients): [] for kind in kinds for clients in CONCURRENCY
    }
    floors: list[float] = []
    handovers: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as servers:
        workspace = Path(folder)
        (workspace / "bench.yaml").write_text(FLOW)
        started = {kind: servers.enter_context(server(kind, workspace)) for kind in kinds}
        # rounds of every server at every concurrency, back to back, so that what the
        # machine does meanwhile weighs on all of them alike; medians of the rounds
        for _ in range(rounds):
            floors.append(bare_commits(workspace))
            handovers.append(thread_handover())
            for clients in CONCURRENCY:
                for kind in kinds:
                    path = "/" if kind == "bare" else "/api/flows/bench/activate-blocking"
                    port, pid = started[kind]
                    row = asyncio.run(measure(port, pid, path, clients, seconds, warmup))
                    samples[kind, clients].append(row)
    results = {key: median_row(rows) for key, rows in samples.items()}
    handover = (
        statistics.median(wall for wall, _ in handovers),
        statistics.median(cpu for _, cpu in handovers),
    )
    report(results, samples, statistics.median(floors), handover, rounds, seconds, warmup)
    if args.json:
        flat = {f"{kind}/{clients}": row for (kind, clients), row in results.items()}
        floor = {
            "bare_commits_per_second": statistics.median(floors),
            "thread_handover_us": handover[0],
            "thread_handover_loop_cpu_us": handover[1],
        }
        print(json.dumps({"results": flat, **floor}, indent=2))


def report(
    results: dict[tuple[str, int], dict[str, Any]],
    samples: dict[tuple[str, int], list[dict[str, Any]]],
    commits: float,
    handover: tuple[float, float],
    rounds: int,
    seconds: float,
    warmup: float,
) -> None:
    cpus = os.cpu_count() or 1
    print(f"HTTP activate-blocking, 3-block flow; {cpus} CPUs, {platform.python_version()}")
    print(
        f"medians of {rounds} round(s); {seconds:g} s per measurement after {warmup:g} s "
        "of warm-up; client in this process, each server in its own\n"
    )
    print(
        "| server | clients | requests/s | p50 ms | p99 ms | errors "
        "| server CPU µs/req | client CPU µs/req | other work, CPUs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = {
        "bare": "bare ASGI endpoint",
        "framework": "framework floor (Starlette, access log)",
        "memory": "flowwarden, in-memory store",
        "sqlite": "flowwarden, SQLite store (default)",
        "durable": "durable floor (framework floor, 3 writes, the store's group writer)",
        "minimal": "durable floor, minimal group commit",
        "store": "store floor (framework floor, the SQLite store's calls of a run)",
    }
    for kind in names:
        for clients in CONCURRENCY:
            row = results[kind, clients]
            print(
                f"| {names[kind]} | {clients} | {row['per_second']:,.0f} | "
                f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['errors']} | "
                f"{row['server_cpu_us']:,.0f} | {row['client_cpu_us']:,.0f} | "
                f"{row['others_cpus']:.2f} |"
            )
    print("\nin-memory store against the bare endpoint (target: at least 0.50)")
    shares(results, samples, "memory", "bare", 0.5)
    print(
        "\nthe framework floor against the bare endpoint: where the target above lies"
        " (the engine's part costing nothing)"
    )
    shares(results, samples, "framework", "bare")
    print(
        "\nin-memory store against the framework floor: the engine's part at most what"
        " the framework costs (target: at least 0.50)"
    )
    shares(results, samples, "memory", "framework", 0.5)
    one, sixteen = results["sqlite", 1], results["sqlite", 16]
    commit_us = 1e6 / commits
    print("\nSQLite store, 16 clients against 1 client (target: at least 3.0)")
    print(
        f"  bare commit (WAL, synchronous=FULL, one at a time): {commits:,.0f} commits/s, "
        f"{commit_us:,.0f} µs each"
    )
    print(
        f"  hand-over to a worker thread and back (each group's transaction makes one): "
        f"{handover[0]:,.0f} µs, {handover[1]:,.0f} µs of it the event loop's CPU"
        f" ({handover[0] / commit_us:.2f} bare commits)"
    )
    ratios = {}
    for kind in ("sqlite", "durable", "minimal"):
        alone, together = results[kind, 1]["per_second"], results[kind, 16]["per_second"]
        ratios[kind] = paired(samples[kind, 16], samples[kind, 1])
        judged = f"  {verdict(ratios[kind] >= 3.0)}" if kind == "sqlite" else ""
        print(
            f"  {names[kind]}: 1 client {alone:,.0f} req/s, 16 clients {together:,.0f} req/s,"
            f" ratio {ratios[kind]:.2f}{judged}"
        )
    # one client: a request's time is the CPU of the server and the client plus the
    # time neither runs, which is the commits it waits for
    latency = 1e6 / one["per_second"]
    waiting = max(0.0, latency - one["server_cpu_us"] - one["client_cpu_us"])
    print(
        f"  1 client: {latency:,.0f} µs a request = server CPU {one['server_cpu_us']:,.0f}"
        f" + client CPU {one['client_cpu_us']:,.0f} + waiting {waiting:,.0f}"
        f" ({waiting / commit_us:.1f} bare commits)"
    )
    # sixteen clients cannot do better than the server's event loop allows (one thread:
    # the writer's thread adds to the process, not to the loop), nor than the machine's
    # CPUs, less what other work on it took meanwhile, shared by server and client allow
    server_cpu, client_cpu = sixteen["server_cpu_us"], sixteen["client_cpu_us"]
    loop_cpu = sixteen["loop_cpu_us"]
    others = sixteen["others_cpus"]
    ceiling = min(1e6 / loop_cpu, max(0.1, cpus - others) * 1e6 / (server_cpu + client_cpu))
    print(
        f"  16 clients: server CPU {server_cpu:,.0f} µs/req ({loop_cpu:,.0f} of it the event "
        f"loop's thread), client CPU {client_cpu:,.0f} µs/req: ceiling {ceiling:,.0f} req/s "
        f"(the loop's thread on one CPU, or server and client on the {cpus} CPUs less "
        f"the {others:.2f} the machine's other work kept busy), "
        f"{ceiling / one['per_second']:.2f} times 1 client"
        f" ({sixteen['per_second'] / ceiling:.2f} of it reached)"
    )
    print(
        f"  where the target lies: the durable floor, the engine costing nothing, gets "
        f"{ratios['durable']:.2f}"
        + (": under 3.0, out of reach on this machine" if ratios["durable"] < 3.0 else "")
    )
    print(
        "\nthe store's group writer against the minimal group commit, both durable floors:"
        " commits shared as well (16 clients, target: at least 0.90), a lone write answered"
        " no later (1 client, target: at least 1.00); the minimal one's higher ratio comes"
        " from its slower single client"
    )
    shares(results, samples, "durable", "minimal", {1: 1.0, 16: 0.9})
    print(
        "\nSQLite store against the durable floor: the engine's part of a durable request"
        " at most what the rest costs (target: at least 0.50)"
    )
    shares(results, samples, "sqlite", "durable", 0.5)
    print(
        "\nwhere that share goes: the store floor (the store's own calls of a run, no"
        " engine) against the durable floor, what the store's record costs beyond three"
        " one-row writes; and the SQLite store against the store floor, the engine's part"
        " apart from the store"
    )
    print("  the store floor against the durable floor:")
    shares(results, samples, "store", "durable")
    print("  the SQLite store against the store floor:")
    shares(results, samples, "sqlite", "store")


def paired(rows: list[dict[str, Any]], bases: list[dict[str, Any]]) -> float:
    """The median over the rounds of one round's requests per second against another's."""
    return statistics.median(
        row["per_second"] / base["per_second"] for row, base in zip(rows, bases, strict=True)
    )


def shares(
    results: dict[tuple[str, int], dict[str, Any]],
    samples: dict[tuple[str, int], list[dict[str, Any]]],
    kind: str,
    floor: str,
    target: float | Mapping[int, float] | None = None,
) -> None:
    """``kind``'s requests per second as a share of ``floor``'s at each concurrency,
    against ``target`` when there is one (one for all, or by number of clients), with
    both servers' CPU per request."""
    for clients in CONCURRENCY:
        row, base = results[kind, clients], results[floor, clients]
        ratio = paired(samples[kind, clients], samples[floor, clients])
        goal = target.get(clients) if isinstance(target, Mapping) else target
        judged = f"  {verdict(ratio >= goal)}" if goal is not None else ""
        print(
            f"  {clients:>2} clients: {row['per_second']:,.0f} req/s, floor "
            f"{base['per_second']:,.0f} req/s, ratio {ratio:.2f}{judged}"
            f"  (server CPU {row['server_cpu_us']:,.0f} µs/req against "
            f"{base['server_cpu_us']:,.0f})"
        )


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the rounds."""
    return {
        name: statistics.median(row[name] for row in rows)
        for name in (
            "per_second",
            "p50_ms",
            "p99_ms",
            "server_cpu_us",
            "loop_cpu_us",
            "client_cpu_us",
            "others_cpus",
        )
    } | {"errors": sum(row["errors"] for row in rows)}


if __name__ == "__main__":
    main()
