"""In-process split of an activate-blocking request: what the engine adds to the
framework, and how much of that is the two sharing the processor's caches.

Run by hand from the repository root (about a minute)::

    python bench/http_inprocess.py
    python bench/http_inprocess.py --quick      # smoke run: fewer requests and rounds

Everything runs in this process, with no socket: a request is one call of an ASGI
application with the scope and body uvicorn would hand it, so what is measured is the
application's CPU time a request, without the HTTP parser, the loopback or a client
(``bench/http_api.py`` measures those, through real servers). Log lines are written
to ``/dev/null``, as in that benchmark. Four loops, each of the same number of
requests, in interleaved rounds; the figures are medians of the rounds, in µs of this
process's CPU time a request:

- ``floor``: the framework floor of ``bench/http_api.py`` (Starlette, the JSON body
  read, an answer of activate-blocking's shape and size, one access-log line);
- ``engine``: ``Engine.start_flow`` of the same three-block flow with the same body, in
  a loop of its own: the gate with its log line, the run, its result kept;
- ``floor + engine``: the two one after the other in each turn of one loop;
- ``flowwarden``: ``POST /api/flows/bench/activate-blocking`` through flowwarden's own
  application, in-memory store, anonymous callers allowed.

Derived, with no target: what ``floor + engine`` costs more than the two loops alone
(each of which keeps its own code and data in the processor's caches, so that a
benchmark of either alone shows less than either costs in a server, where the other
runs between its turns), and what flowwarden's HTTP layer costs beyond both (the
caller, the body's limit, the answer made from the run, the access log's fields).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from http_api import BODY, FLOW, framework_app  # noqa: E402  (this folder's benchmark)

PATH = "/api/flows/bench/activate-blocking"
_HEADERS = [
    (b"host", b"127.0.0.1:8080"),
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
]


def scope() -> dict[str, Any]:
    """A request's scope as uvicorn makes it: a new one for each request."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "headers": list(_HEADERS),
        "state": {},
    }


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": BODY, "more_body": False}


class Answers:
    """The ASGI ``send`` of a request: it keeps the status, for the check."""

    def __init__(self) -> None:
        self.status = 0

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]


@contextlib.contextmanager
def logs_to_devnull() -> Iterator[None]:
    """Standard error (where the log lines go) to /dev/null, as the servers' are."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(null)
        os.close(saved)


async def measure(requests: int, rounds: int) -> dict[str, list[float]]:
    from engine import Engine, RunStatus
    from engine._http.app import _read_workspace, create_app

    floor = framework_app()  # configures the JSON logs as flowwarden serve does
    with tempfile.TemporaryDirectory() as folder:
        workspace = Path(folder)
        (workspace / "bench.yaml").write_text(FLOW)
        authenticator, _ = _read_workspace(workspace)
        engine = await Engine.open_workspace(workspace, store="memory:")
        async with engine:
            app = create_app(engine, authenticator, admin_role=authenticator.admin_role)
            answers = Answers()
            start_flow = engine.start_flow

            async def engine_alone() -> None:
                for _ in range(requests):
                    await start_flow("bench", BODY, via="http")

            async def floor_alone() -> None:
                for _ in range(requests):
                    await floor(scope(), receive, answers)

            async def both() -> None:
                for _ in range(requests):
                    await start_flow("bench", BODY, via="http")
                    await floor(scope(), receive, answers)

            async def flowwarden() -> None:
                for _ in range(requests):
                    await app(scope(), receive, answers)

            loops: dict[str, Callable[[], Awaitable[None]]] = {
                "floor": floor_alone,
                "engine": engine_alone,
                "floor + engine": both,
                "flowwarden": flowwarden,
            }
            result = await start_flow("bench", BODY, via="http")
            if isinstance(result, str) or result.status is not RunStatus.COMPLETED:
                raise RuntimeError(f"the benchmark flow did not complete at once: {result!r}")
            for loop in loops.values():  # warm-up; the servers' heap is frozen so too
                await loop()
                if answers.status != 200:
                    raise RuntimeError(f"a request was answered {answers.status}")
            gc.collect()
            gc.freeze()
            samples: dict[str, list[float]] = {name: [] for name in loops}
            names = list(loops)
            for turn in range(rounds):
                # each round in another order, so that none always follows the same one
                for name in names[turn % len(names) :] + names[: turn % len(names)]:
                    loop = loops[name]
                    began = time.process_time()
                    await loop()
                    samples[name].append((time.process_time() - began) / requests * 1e6)
                    if answers.status != 200:
                        raise RuntimeError(f"a request was answered {answers.status}")
            gc.unfreeze()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and rounds")
    parser.add_argument("--requests", type=int, default=None, help="requests a loop")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 9)")
    args = parser.parse_args()
    requests = args.requests or (500 if args.quick else 3_000)
    rounds = args.rounds or (2 if args.quick else 9)
    with logs_to_devnull():
        samples = anyio.run(measure, requests, rounds)
    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"{requests:,} requests a loop, medians of {rounds} rounds, µs of CPU a request\n")
    for name, value in median.items():
        ratio = value / median["floor"]
        print(f"  {name:<16}{value:8.1f}   {ratio:4.2f}x the floor")
    # derived round by round (the machine's speed changes between rounds), then medians
    order = ("floor", "engine", "floor + engine", "flowwarden")  # as unpacked below
    rows = list(zip(*(samples[name] for name in order), strict=True))
    more = statistics.median(both - floor - engine for floor, engine, both, _ in rows)
    layer = statistics.median(ours - both for _, _, both, ours in rows)
    over = statistics.median(ours - floor for floor, _, _, ours in rows)
    alone = statistics.median(floor + engine for floor, engine, _, _ in rows)
    print()
    print(f"  floor and engine, each in a loop of its own, summed   {alone:8.1f}")
    print(f"  ... what the two cost more in one loop                {more:8.1f}")
    print(f"  flowwarden's HTTP layer beyond floor + engine         {layer:8.1f}")
    print(f"  flowwarden over the floor                             {over:8.1f}")


if __name__ == "__main__":
    main()
