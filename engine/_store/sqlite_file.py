"""The SQLite file: what its URL says, creating it private, opening it migrated."""

from __future__ import annotations

import os
import sqlite3
from typing import Literal

from .sql import CREATE_VERSION_TABLE, READ_VERSION, migration

__all__ = ["Synchronous", "open_connection", "parse_url"]

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
