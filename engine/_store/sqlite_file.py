"""The SQLite file: what its URL says, creating it private, opening it migrated,
noticing it replaced, which of its errors are worth retrying, and the store's reader
connection.

Durability, the ``synchronous`` option:

* ``full`` (default): every commit fsyncs the write-ahead log before it returns, so an
  acknowledged activation, checkpoint or finish survives a process crash, an operating
  system crash and a power loss (on a disk that honours fsync).
* ``normal``: commits reach the operating system, but the log is fsynced only when
  SQLite copies it into the database file (its own "WAL checkpoint", by default every
  1000 pages). A killed *process* loses nothing; an operating system crash or a power
  loss can roll back the transactions committed since that copy: accepted activations
  may vanish, a run may resume from an older checkpoint and repeat blocks (and their
  side effects), a finished run may come back as RUNNING and run again. The file
  itself stays consistent.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from .._model.errors import StoreError, StoreUnavailable
from .._model.logs import get_logger
from .schema import CREATE_VERSION_TABLE, READ_VERSION, migration

__all__ = [
    "FileGuard",
    "Reader",
    "Synchronous",
    "failure",
    "open_connection",
    "parse_url",
    "unavailable",
]

Synchronous = Literal["FULL", "NORMAL"]


def parse_url(url: str) -> tuple[str, Synchronous, float]:
    """The file, ``synchronous`` mode and busy timeout a ``sqlite:`` URL names."""
    if not url.startswith("sqlite:"):
        raise ValueError(f"not a SQLite URL: {url!r}")
    rest, _, query = url.removeprefix("sqlite:").partition("?")
    if rest.startswith("///"):
        rest = rest[3:]
    elif rest.startswith("//"):
        raise ValueError(f"a SQLite URL names a file, not a host: {url!r}")
    if not rest:
        raise ValueError(f"the SQLite URL names no file: {url!r}")
    synchronous: Synchronous = "FULL"
    busy_timeout = 5.0
    for option in filter(None, query.split("&")):
        key, _, value = option.partition("=")
        if key == "synchronous" and value.upper() in ("FULL", "NORMAL"):
            synchronous = "FULL" if value.upper() == "FULL" else "NORMAL"
        elif key == "busy_timeout":
            busy_timeout = float(value)
        else:
            raise ValueError(f"unknown SQLite store option {option!r} in {url!r}")
    return rest, synchronous, busy_timeout


def open_connection(path: str, synchronous: Synchronous, busy_timeout: float) -> sqlite3.Connection:
    """A connection in WAL mode to the file, created private if new, its schema brought
    up to date under the write lock (so two processes opening a new file do not both
    create it). Raises :class:`sqlite3.Error`."""
    _create_private(path)
    conn = sqlite3.connect(
        path,
        timeout=busy_timeout,
        isolation_level=None,
        check_same_thread=False,  # used by one thread at a time: the loop's
    )
    try:
        _write_ahead(conn, busy_timeout)
        conn.execute(f"PRAGMA synchronous = {synchronous}")  # one of two names
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(CREATE_VERSION_TABLE)
        found = conn.execute(READ_VERSION).fetchone()
        for statement in migration(found, f"SQLite database {path}", "sqlite"):
            conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


def _write_ahead(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Put the file in WAL mode (it stays so). Connections switching a new file at once
    can each hold the lock the other waits for; SQLite then answers one of them
    ``SQLITE_BUSY`` at once, without its busy handler, as its documentation of the busy
    handler says it may. That one tries again, within the busy timeout: the other's
    switch is done in a moment, and then the file is in WAL mode already."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)


def _create_private(path: str) -> None:
    """Create the database file readable by its owner only, if it does not exist yet.

    SQLite gives its ``-wal`` and ``-shm`` files the mode of the database file, so they
    are private too. An existing file keeps the mode it has.
    """
    if path in ("", ":memory:"):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # sqlite3 reports what is wrong with the path
    os.close(fd)


# what makes an error worth retrying: the lock, and the disk or the file going away
_UNAVAILABLE = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_READONLY,
}


def failure(path: str, exc: sqlite3.Error) -> StoreError:
    """The store's error for a :class:`sqlite3.Error`."""
    kind = StoreUnavailable if unavailable(exc) else StoreError
    error = kind(f"SQLite store {path}: {exc}")
    error.__cause__ = exc
    return error


def unavailable(exc: sqlite3.Error) -> bool:
    """Whether the error is the database being away (locked, busy, its disk failing)
    rather than the statement being wrong."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _UNAVAILABLE  # the primary code of an extended one
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


class FileGuard:
    """The file a store opened, by device and inode: once its path names another file,
    or none (deleted, or replaced by a restore), :meth:`check` refuses for good. What
    was written went with the old file, and a new empty one must not be taken for it;
    restart the process once the right file is back."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: tuple[int, int] | None = None
        self._gone: str | None = None

    @property
    def unopened(self) -> bool:
        return self._file is None

    def opened(self) -> None:
        if self.path not in ("", ":memory:"):
            self._file = _identity(self.path)

    def check(self) -> None:
        if self._gone is None and self._file is not None and _identity(self.path) != self._file:
            self._gone = f"SQLite store {self.path}: the database file was removed or replaced"
            get_logger("flowwarden.store").error("store.file_replaced", path=self.path)
        if self._gone is not None:
            raise StoreUnavailable(self._gone)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


class Reader:
    """A store's file and its reader connection, used on the event loop's thread: in
    WAL mode a read takes no lock and never waits for the writer. :meth:`open` opens a
    connection to the same file (the writer's, too), checking that it still is."""

    def __init__(self, path: str, synchronous: Synchronous, busy_timeout: float) -> None:
        self.path = path
        self.synchronous: Synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.file = FileGuard(path)
        self._conn: sqlite3.Connection | None = None

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise failure(self.path, exc) from exc

    def open(self) -> sqlite3.Connection:
        conn = open_connection(self.path, self.synchronous, self.busy_timeout)
        if self.file.unopened:
            self.file.opened()
        else:
            self.file.check()  # the connection opened is to the file first opened
        return conn

    def connection(self) -> sqlite3.Connection:
        """The reader connection (opened on first use)."""
        if self._conn is not None:
            self.file.check()
            return self._conn
        with self.errors():
            self._conn = conn = self.open()
        return conn

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.errors():
            return self.connection().execute(sql, params).fetchall()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: one consistent view of several tables."""
        with self.errors():
            conn = self.connection()
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
