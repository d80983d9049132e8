"""A PostgreSQL server for the tests: the one named by ``FLOWWARDEN_TEST_POSTGRES_URL``,
or a throwaway cluster started from the machine's PostgreSQL binaries.

The throwaway cluster lives in a temporary directory, listens on 127.0.0.1 on a free
port with trust authentication, and is stopped and removed when the session ends. As
root, ``initdb`` refuses to run, so the cluster is made and run by the ``postgres``
system user. Without a URL and without binaries, the tests that need PostgreSQL skip;
binaries that fail to start a server make them error.

Each test gets a schema of its own (:func:`fresh_schema`), or a database of its own
(:func:`fresh_database`), dropped afterwards. The store benchmarks use it too, with
:func:`bare_commits` as their baseline.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

__all__ = [
    "PostgresServer",
    "fresh_database",
    "fresh_schema",
    "postgres_server",
    "server_binaries",
]

URL_VARIABLE = "FLOWWARDEN_TEST_POSTGRES_URL"


@dataclass(frozen=True)
class PostgresServer:
    """Where the server is: ``url`` names its maintenance database."""

    url: str
    cluster: _Cluster | None = field(default=None, compare=False, repr=False)

    def restart_immediately(self, down: float) -> None:
        """Kill the server (``pg_ctl stop -m immediate``: no shutdown, as a crash), keep it
        down ``down`` seconds and start it again on the same port. Throwaway servers only."""
        if self.cluster is None:
            raise RuntimeError("only a throwaway server can be restarted")
        self.cluster.restart(down)

    def database_url(self, name: str) -> str:
        """The URL of database ``name`` on this server."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path=f"/{name}"))

    def schema_url(self, schema: str) -> str:
        """The URL of this server's database with ``schema`` first on the search path."""
        parts = urlsplit(self.url)
        option = "options=" + quote(f"-c search_path={schema}", safe="")
        query = f"{parts.query}&{option}" if parts.query else option
        return urlunsplit(parts._replace(query=query))


def server_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, else the newest Debian one."""
    initdb = shutil.which("initdb")
    if initdb is not None and shutil.which("pg_ctl") is not None:
        return Path(initdb).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    for initdb in reversed(candidates):
        folder = Path(initdb).parent
        if (folder / "pg_ctl").exists():
            return folder
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Cluster:
    """A cluster in a temporary directory, run as ``postgres`` when we are root."""

    def __init__(self, binaries: Path, *, fsync: bool) -> None:
        self.binaries = binaries
        self.fsync = fsync
        self.prefix: list[str] = []
        self.options = ""
        self.watchdog: subprocess.Popen[bytes] | None = None
        parent = tempfile.gettempdir()
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no 'postgres' user") from None
            self.prefix = ["runuser", "-u", "postgres", "--"]
            if not os.stat(parent).st_mode & 0o001:  # postgres could not reach it
                parent = "/tmp"
        self.root = Path(tempfile.mkdtemp(prefix="flowwarden-pg-", dir=parent))
        self.data = self.root / "data"
        if self.prefix:
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def _run(self, *args: str) -> None:
        command = [*self.prefix, str(self.binaries / args[0]), *args[1:]]
        done = subprocess.run(
            command,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def start(self) -> str:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        last: Exception | None = None
        for _ in range(3):  # the free port may be taken before the server binds it
            port = _free_port()
            options = [
                "-h 127.0.0.1",
                f"-p {port}",
                f"-k {self.root}",
                "-c max_connections=200",
            ]
            if not self.fsync:
                options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
            self.options = " ".join(options)
            try:
                self._start()
            except RuntimeError as exc:
                last = exc
                continue
            self._watch()
            return f"postgresql://postgres@127.0.0.1:{port}/postgres"
        raise RuntimeError(f"the PostgreSQL server did not start: {last}")

    def _start(self) -> None:
        log = str(self.root / "server.log")
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", log, "-o", self.options, "-w", "-t", "60", "start"
        )

    def restart(self, down: float) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        time.sleep(down)
        self._start()

    def _watch(self) -> None:
        """Stop the server if this process dies without stopping it (killed, timed out)."""
        pg_ctl = shlex.join(
            [*self.prefix, str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "immediate"]
        )
        script = (
            f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
            f"{pg_ctl} stop >/dev/null 2>&1; rm -rf {shlex.quote(str(self.root))}"
        )
        self.watchdog = subprocess.Popen(
            ["sh", "-c", script],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.watchdog is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.watchdog.pid, signal.SIGTERM)
            self.watchdog.wait()
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def postgres_server(*, fsync: bool = False) -> Iterator[PostgresServer | str]:
    """The server to test against, or a string saying why there is none.

    ``fsync=False`` (the default, for the tests) trades crash safety for speed in the
    throwaway cluster; benchmarks ask for ``fsync=True``. A server named by the
    environment variable is used as it is.
    """
    url = os.environ.get(URL_VARIABLE)
    if url:
        yield PostgresServer(url)
        return
    binaries = server_binaries()
    if binaries is None:
        yield f"no PostgreSQL: set {URL_VARIABLE} or install the server (initdb, pg_ctl)"
        return
    try:
        cluster = _Cluster(binaries, fsync=fsync)
    except RuntimeError as exc:
        yield f"cannot make a PostgreSQL cluster: {exc}"
        return
    try:
        # A server that is installed but does not start is an error, not a skip.
        yield PostgresServer(cluster.start(), cluster)
    finally:
        cluster.stop()


@contextlib.contextmanager
def fresh_database(server: PostgresServer) -> Iterator[str]:
    """A new empty database on ``server`` (its URL), dropped afterwards."""
    name = f"flowwarden_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield server.database_url(name)
    finally:
        with psycopg.connect(server.url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextlib.contextmanager
def fresh_schema(server: PostgresServer) -> Iterator[str]:
    """A new empty schema on ``server`` (a URL whose connections use it), dropped afterwards.

    Much cheaper than a database per test, and as independent: every table a store
    makes goes into the first schema of its search path.
    """
    name = f"flowwarden_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield server.schema_url(name)
    finally:
        with psycopg.connect(server.url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def with_synchronous_commit(url: str, mode: str) -> str:
    """``url`` with every connection's ``synchronous_commit`` set to ``mode``."""
    return f"{url}{'&' if '?' in url else '?'}options=-c%20synchronous_commit%3D{mode}"


@contextlib.asynccontextmanager
async def bare_commits(url: str, table: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """The baseline of the store benchmarks: a function committing one small row
    (``INSERT`` with autocommit) into a new ``table`` of ``url``'s database."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("CREATE TABLE {} (id SERIAL PRIMARY KEY, payload TEXT)").format(
                sql.Identifier(table)
            )
        )
        # composed once, as a store's prepared statement text would be
        insert = sql.SQL("INSERT INTO {} (payload) VALUES (%s)").format(sql.Identifier(table))
        text = insert.as_string(conn)

        async def bare() -> None:
            await conn.execute(text, ("x" * 100,))  # type: ignore[arg-type]

        yield bare
