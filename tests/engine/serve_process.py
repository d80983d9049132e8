"""``flowwarden serve`` as a real process on a free loopback port, for the tests that
need the whole command: its signals, its logs, its exit code."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Self

import httpx

FLOWWARDEN = [
    sys.executable,
    "-c",
    "import sys; from engine._cli import main; sys.exit(main())",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServeProcess:
    """``flowwarden serve`` in a process of its own; stopped with SIGINT on exit."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [*FLOWWARDEN, "serve", *args, "--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.stdout = self.stderr = ""

    def __enter__(self) -> Self:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{self.url}/openapi.json", timeout=1)
                return self
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise AssertionError(f"the server did not start: {self.stderr}") from None
                time.sleep(0.05)

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        out, err = self.process.communicate(timeout=20)
        self.stdout, self.stderr = out.decode(), err.decode()
