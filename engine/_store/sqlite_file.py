"""The SQLite file: what its URL says, creating it private, opening it migrated,
noticing it replaced, and which of its errors are worth retrying."""

from __future__ import annotations

import os
import sqlite3
from typing import Literal

from .._model.errors import StoreUnavailable
from .._model.logs import get_logger
from .schema import CREATE_VERSION_TABLE, READ_VERSION, migration

__all__ = ["FileGuard", "Synchronous", "open_connection", "parse_url", "unavailable"]

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
        conn.execute("PRAGMA journal_mode = WAL")
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
