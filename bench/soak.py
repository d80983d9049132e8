"""Soak: ``flowwarden serve --queue-only`` and two workers under load and faults, for a
while, printing each process's resident memory over time. Not a test.

Every few seconds one fault strikes, in turn: the first worker paused past its lease
(SIGSTOP, then SIGCONT; it is never restarted, so its memory is one series), the
second killed (SIGKILL) and started again, the second stopped (SIGTERM) and started
again, the server stopped (SIGTERM, what a deploy sends) and started again. Meanwhile
a client activates runs over HTTP (each POSTs twice to a recorder in this process,
with a wait between). At the end every accepted run must have COMPLETED exactly once,
with each of its effects sent at most twice and always with one key. RSS is printed
every ``--every`` seconds, by process (a restarted process starts a new series).

    .venv/bin/python bench/soak.py --minutes 15 [--store postgresql://…]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread
import httpx

ROOT = Path(__file__).resolve().parent.parent
# Not this folder: a benchmark's file name here could hide a standard module.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "engine"))

from durable_support import CLI, Recorder, WorkerProcess, query  # noqa: E402

FLOW = {
    "flow": "soak",
    "status": "LIVE",
    "inputs": {"type": "object", "required": ["url", "n"]},
    "start": "one",
    "blocks": {
        "one": {
            "type": "http",
            "method": "POST",
            "url": "=inputs.url",
            "body": {"run": "=run.id", "label": "one"},
            "next": "nap",
        },
        "nap": {"type": "wait", "seconds": 0.5, "next": "two"},
        "two": {
            "type": "http",
            "method": "POST",
            "url": "=inputs.url",
            "body": {"run": "=run.id", "label": "two"},
            "next": "done",
        },
        "done": {"type": "return", "value": {"n": "=inputs.n"}},
    },
}


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Serve:
    """A ``flowwarden serve --queue-only`` process."""

    def __init__(self, workspace: Path, store: str, folder: Path, port: int) -> None:
        self.log = folder / "serve.log"
        self._err: IO[bytes] = open(self.log, "ab")  # noqa: SIM115 (closed in stop())
        command = [sys.executable, "-c", CLI, "serve", str(workspace), "--store", store]
        command += ["--port", str(port), "--queue-only"]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._err,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        self._err.close()
        return code


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--store", help="a postgresql:// URL (default: a SQLite file)")
    parser.add_argument("--rate", type=float, default=10.0, help="activations a second (10)")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between RSS lines")
    parser.add_argument("--fault-every", type=float, default=6.0)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="flowwarden-soak-"))
    workspace = folder / "ws"
    workspace.mkdir()
    (workspace / "soak.yaml").write_text(json.dumps(FLOW))
    store = args.store or f"sqlite:///{folder / 'runs.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    accepted: list[str] = []
    refused = Counter[int]()
    rss: dict[str, list[tuple[float, int]]] = {}
    faults = Counter[str]()

    with Recorder() as recorder:
        serve = Serve(workspace, store, folder, port)
        workers = [WorkerProcess(store, folder, f"w{n}", lease=3.0, poll=0.1) for n in (1, 2)]
        for worker in workers:
            await worker.started()
        began = time.monotonic()
        deadline = began + args.minutes * 60

        def sample() -> None:
            now = time.monotonic() - began
            processes = [("serve", serve.process.pid)] + [(w.name, w.process.pid) for w in workers]
            for name, pid in processes:
                found = rss_kib(pid)
                if found is not None:
                    rss.setdefault(f"{name}[{pid}]", []).append((now, found))
            line = "  ".join(
                f"{name}={(rss_kib(pid) or 0) / 1024:.1f}MiB" for name, pid in processes
            )
            print(f"{now:7.0f}s  accepted={len(accepted)}  {line}", flush=True)

        async def load() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                n = 0
                while time.monotonic() < deadline:
                    try:
                        answer = await client.post(
                            "/api/flows/soak/activate", json={"url": recorder.url, "n": n}
                        )
                    except httpx.HTTPError:
                        refused[0] += 1  # the server is restarting
                    else:
                        if answer.status_code == 202:
                            accepted.append(answer.json()["run_id"])
                            n += 1
                        else:
                            refused[answer.status_code] += 1
                    await anyio.sleep(1 / args.rate)

        async def strike() -> None:
            nonlocal serve
            turn = 0
            while time.monotonic() < deadline - args.fault_every:
                await anyio.sleep(args.fault_every)
                kind = ("pause", "kill", "term", "deploy")[turn % 4]
                turn += 1
                faults[kind] += 1
                # the first worker is only ever paused, so its memory is one series from
                # start to end; the second is killed and stopped, the server redeployed
                index = 0 if kind == "pause" else 1
                if kind == "pause":
                    workers[index].signal(signal.SIGSTOP)
                    await anyio.sleep(4.0)  # past its 3 s lease
                    workers[index].signal(signal.SIGCONT)
                elif kind in ("kill", "term"):
                    old = workers[index]
                    old.signal(signal.SIGKILL if kind == "kill" else signal.SIGTERM)
                    await old.exited(60)
                    old.close()
                    workers[index] = WorkerProcess(store, folder, f"w2.{turn}", lease=3.0, poll=0.1)
                    await workers[index].started()
                else:
                    code = await anyio.to_thread.run_sync(serve.stop)
                    assert code == 0, f"serve exited {code}"
                    serve = Serve(workspace, store, folder, port)

        async def watch() -> None:
            while time.monotonic() < deadline:
                sample()
                await anyio.sleep(args.every)

        async with anyio.create_task_group() as group:
            group.start_soon(load)
            group.start_soon(strike)
            group.start_soon(watch)
        sample()
        print("draining…", flush=True)
        with anyio.fail_after(300):
            while True:
                rows = query(store, "SELECT status, count(*) FROM runs GROUP BY status")
                if all(status in ("COMPLETED", "FAILED", "CANCELLED") for status, _ in rows):
                    break
                await anyio.sleep(1)
        statuses: dict[str, Any] = dict(rows)
        serve.stop()
        for worker in workers:
            worker.signal(signal.SIGTERM)
            await worker.exited(60)
            worker.close()

        counts = recorder.counts()
        keys = recorder.keys()
        done = {
            run for (run,) in query(store, "SELECT run_id FROM runs WHERE status = 'COMPLETED'")
        }
        missing = [run for run in accepted if run not in done]
        twice = sum(1 for count in counts.values() if count == 2)
        worse = [pair for pair, count in counts.items() if count > 2]
        keyed = [pair for pair, sent in keys.items() if len(sent) > 1]
        incomplete = [run for run in accepted if {(run, "one"), (run, "two")} - set(counts)]

    print(f"\nstore {store.split('?')[0]}  minutes {args.minutes:g}  faults {dict(faults)}")
    print(f"accepted {len(accepted)}  refused {dict(refused)}  statuses {statuses}")
    print(f"not completed: {len(missing)}  effects missing: {len(incomplete)}")
    print(f"effects sent twice (in flight at a fault): {twice}  more than twice: {len(worse)}")
    print(f"effects with more than one key: {len(keyed)}")
    print("RSS (MiB) first → last, per process:")
    for name, series in rss.items():
        if len(series) > 1:
            first, last = series[0][1] / 1024, series[-1][1] / 1024
            print(
                f"  {name:18} {first:6.1f} → {last:6.1f}  over {series[-1][0] - series[0][0]:.0f} s"
            )
    ok = not (missing or worse or keyed or incomplete)
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    anyio.run(main)
