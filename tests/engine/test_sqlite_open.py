"""Opening a SQLite store's file: connections that open a new file at the same moment
(two stores on one file, or a store's reader and writer) each get a connection to it
in WAL mode, however their switches to WAL interleave.

Real files and real connections, on threads released together: when two of them
switch a new file to WAL at once, SQLite may answer one "database is locked" without
waiting, and opening must not fail on that.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from engine._store.sqlite_file import open_connection

OPENERS = 6
ROUNDS = 40  # the lost race came in about one new file of ten before it was handled


def open_together(path: Path) -> tuple[list[str], list[BaseException]]:
    """Open ``path`` from ``OPENERS`` threads at once: each one's journal mode, and
    each error."""
    start = threading.Barrier(OPENERS)
    modes: list[str] = []
    errors: list[BaseException] = []

    def opener() -> None:
        start.wait()
        try:
            conn = open_connection(str(path), "FULL", 5.0)
        except BaseException as exc:
            errors.append(exc)
            return
        try:
            modes.append(conn.execute("PRAGMA journal_mode").fetchone()[0])
        finally:
            conn.close()

    threads = [threading.Thread(target=opener) for _ in range(OPENERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return modes, errors


def test_connections_opening_a_new_file_at_once_all_get_it_in_wal_mode(tmp_path: Path) -> None:
    for index in range(ROUNDS):
        path = tmp_path / f"new-{index}.db"
        modes, errors = open_together(path)
        assert errors == []
        assert modes == ["wal"] * OPENERS
        with sqlite3.connect(path) as db:  # and the schema was made once, whole
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert {"runs", "versions"} <= tables
