"""What the durable-run tests share: a recording HTTP server, worker processes, stores.

The flows under test make their effects visible to the test: every ``http`` block POSTs
``{run, label}`` to a :class:`Recorder` on 127.0.0.1, which keeps each request with
its ``Idempotency-Key`` header. Counting requests per ``(run, label)`` counts how often
each block ran; :meth:`Recorder.hold` keeps one chosen request waiting, so a test
knows a block is in flight when it kills or stops the worker running it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread

from engine._store.sqlite_file import parse_url

ROOT = Path(__file__).resolve().parents[2]
CLI = "import sys; from engine._cli import main; sys.exit(main())"

# A long run whose blocks can be counted: four POSTs in a loop, a wait after each.
HITS_FLOW = {
    "flow": "hits",
    "inputs": {"type": "object", "required": ["url", "n"]},
    "start": "init",
    "blocks": {
        "init": {"type": "set", "values": {"count": 0}, "next": "loop"},
        "loop": {"type": "repeat", "while": "iteration <= 4", "body": "hit", "next": "done"},
        "hit": {
            "type": "http",
            "method": "POST",
            "url": "=inputs.url",
            "body": {"run": "=run.id", "label": "='hit-' + string(iteration)"},
            "next": "pause",
        },
        "pause": {"type": "wait", "seconds": 0.2, "next": "count"},
        "count": {"type": "set", "values": {"count": "=vars.count + 1"}},
        "done": {"type": "return", "value": {"n": "=inputs.n", "count": "=vars.count"}},
    },
}
HITS_BLOCKS = {"init": 1, "loop": 1, "hit": 4, "pause": 4, "count": 4, "done": 1}
"""How many trace entries each block of a finished ``hits`` run has."""

# The same effects in a straight line: no loop, so nothing is resumed inside a block.
LINE_FLOW = {
    "flow": "line",
    "inputs": {"type": "object", "required": ["url", "n"]},
    "start": "hit1",
    "blocks": {
        **{
            f"hit{i}": {
                "type": "http",
                "method": "POST",
                "url": "=inputs.url",
                "body": {"run": "=run.id", "label": f"hit-{i}"},
                "next": f"pause{i}",
            }
            for i in range(1, 5)
        },
        **{
            f"pause{i}": {
                "type": "wait",
                "seconds": 0.2,
                "next": f"hit{i + 1}" if i < 4 else "done",
            }
            for i in range(1, 5)
        },
        "done": {"type": "return", "value": {"n": "=inputs.n"}},
    },
}

# A parent that waits for a ``hits`` child and returns what it returned.
PARENT_FLOW = {
    "flow": "parent",
    "start": "call",
    "blocks": {
        "call": {
            "type": "call_flow",
            "flow": "hits",
            "inputs": {"url": "=inputs.url", "n": "=inputs.n"},
            "result": "child",
            "next": "done",
        },
        "done": {"type": "return", "value": "=vars.child"},
    },
}


# Two blocks doubling ``inputs.n``: what the worker tests and benchmark queue by the thousand.
TINY: dict[str, Any] = {
    "flow": "tiny",
    "start": "double",
    "blocks": {
        "double": {"type": "set", "values": {"x": "=inputs.n * 2"}, "next": "done"},
        "done": {"type": "return", "value": "=vars.x"},
    },
}


@dataclass(frozen=True)
class Hit:
    """One request the recorder received."""

    run: str
    label: str
    key: str
    at: float


@dataclass
class Held:
    """A request the recorder keeps waiting until :meth:`release`."""

    match: Callable[[Hit], bool]
    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    hit: Hit | None = None

    def release(self) -> None:
        self.released.set()

    async def wait(self, seconds: float) -> Hit:
        """The held request, once it has arrived (``TimeoutError`` after ``seconds``)."""
        if not await anyio.to_thread.run_sync(self.arrived.wait, seconds):
            raise TimeoutError(f"no matching request within {seconds} s")
        assert self.hit is not None
        return self.hit


class Recorder:
    """An HTTP server on 127.0.0.1 that records every POST and answers 200."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        self._held: list[Held] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                recorder._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hit"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for held in self._held:
            held.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def hold(self, match: Callable[[Hit], bool]) -> Held:
        """Keep the next request that ``match`` accepts waiting until released."""
        held = Held(match)
        with self._lock:
            self._held.append(held)
        return held

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        try:
            length = int(request.headers.get("Content-Length") or 0)
            data = request.rfile.read(length)
            if len(data) < length:  # the client died while sending: nothing arrived
                return
            body = json.loads(data or b"{}")
            key = request.headers.get("Idempotency-Key", "")
            hit = Hit(str(body.get("run")), str(body.get("label")), key, time.time())
            with self._lock:
                self.hits.append(hit)
                held = next(
                    (h for h in self._held if not h.arrived.is_set() and h.match(hit)), None
                )
                if held is not None:
                    held.hit = hit
                    held.arrived.set()
            if held is not None:
                held.released.wait(60)
            payload = b'{"ok":true}'
            request.send_response(200)
            request.send_header("Content-Type", "application/json")
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            request.wfile.write(payload)
        except OSError:  # the client was killed while we answered
            pass

    def snapshot(self) -> list[Hit]:
        with self._lock:
            return list(self.hits)

    def counts(self) -> Counter[tuple[str, str]]:
        """How many requests each ``(run, label)`` made."""
        return Counter((hit.run, hit.label) for hit in self.snapshot())

    def keys(self) -> dict[tuple[str, str], set[str]]:
        """The idempotency keys each ``(run, label)`` sent."""
        keys: dict[tuple[str, str], set[str]] = {}
        for hit in self.snapshot():
            keys.setdefault((hit.run, hit.label), set()).add(hit.key)
        return keys


class WorkerProcess:
    """A ``flowwarden worker`` process; its stderr goes to a file in ``folder``. It runs
    the engine of the checkout at ``root`` (this one unless a benchmark compares)."""

    def __init__(
        self,
        url: str,
        folder: Path,
        name: str,
        *,
        concurrency: int = 4,
        lease: float = 3.0,
        poll: float = 0.05,
        grace: float | None = None,
        root: Path = ROOT,
    ) -> None:
        self.name = name
        self.log = folder / f"{name}.log"
        self._stderr: IO[bytes] = open(self.log, "wb")  # noqa: SIM115 (closed in close())
        command = [sys.executable, "-c", CLI, "worker", "--store", url]
        command += ["--concurrency", str(concurrency), "--lease", str(lease), "--poll", str(poll)]
        if grace is not None:
            command += ["--grace", str(grace)]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env={**os.environ, "PYTHONPATH": str(root)},  # whose engine runs
            cwd=folder,
        )
        self.owner: str | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def started(self, seconds: float = 60.0) -> str:
        """The name the worker claims runs under, once it is running."""
        with anyio.fail_after(seconds):
            while True:
                found = re.search(r"^worker (\S+) running", self.output(), re.MULTILINE)
                if found:
                    self.owner = found.group(1)
                    return self.owner
                if self.process.poll() is not None:
                    raise AssertionError(f"worker {self.name} exited:\n{self.output()}")
                await anyio.sleep(0.05)

    async def exited(self, seconds: float) -> int:
        """The exit code (``subprocess.TimeoutExpired`` after ``seconds``)."""
        code: int = await anyio.to_thread.run_sync(self.process.wait, seconds)
        return code

    def signal(self, number: signal.Signals) -> None:
        self.process.send_signal(number)

    def claimed(self) -> int:
        """How many claims the worker made, from the line it prints when it stops."""
        found = re.search(r"stopped after (\d+) runs", self.output())
        assert found, f"worker {self.name} did not say how many runs it claimed:\n{self.output()}"
        return int(found.group(1))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        self._stderr.close()


@contextlib.contextmanager
def worker_processes() -> Iterator[list[WorkerProcess]]:
    """A list to start workers into; every one is killed on the way out."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.close()


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Rows from the store's database, read directly (``?`` placeholders)."""
    if url.startswith("sqlite:"):
        with contextlib.closing(sqlite3.connect(parse_url(url)[0], timeout=30)) as db:
            return db.execute(sql, params).fetchall()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
        return cursor.fetchall()
