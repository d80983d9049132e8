"""Store fixtures: one behavioural suite runs against every store.

``backend`` is parametrized over ``memory``, ``sqlite`` (a file in the test's temporary
directory) and ``postgresql`` (a fresh schema on the session's server, see
``tests/pgserver.py``); ``store`` is a store on it. ``backend.open()`` makes another
store object on the same database, as a second process would.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from engine._store import open_store
from engine._store.base import Store
from engine._store.memory import MemoryStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests/pgserver.py
from pgserver import PostgresServer, fresh_schema, postgres_server

STORE_KINDS = ["memory", "sqlite", "postgresql"]


class Backend:
    """A database for one test and the store objects opened on it."""

    def __init__(self, kind: str, url: str | None) -> None:
        self.kind = kind
        self.url = url
        self.stores: list[Store] = []
        self._memory = MemoryStore(durable=True)

    @property
    def persistent(self) -> bool:
        """Whether separate store objects share one database (not so for memory)."""
        return self.url is not None

    def open(self) -> Store:
        """A new store object on this backend's database (memory: the one store)."""
        if self.url is None:
            return self._memory
        store = open_store(self.url)
        self.stores.append(store)
        return store

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run SQL on the database directly (``?`` placeholders), outside any store."""
        assert self.url is not None, "the memory store has no database"
        if self.kind == "sqlite":
            path = self.url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path)) as db, db:
                return db.execute(sql, params).fetchall()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer | str]:
    """The session's PostgreSQL server, or why there is none."""
    with postgres_server() as server:
        yield server


@pytest.fixture(params=STORE_KINDS)
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, str | None]]:
    kind: str = request.param
    if kind == "memory":
        yield kind, None
    elif kind == "sqlite":
        yield kind, f"sqlite:///{tmp_path / 'flowwarden.db'}"
    else:
        postgres: PostgresServer | str = request.getfixturevalue("postgres")  # started once
        if isinstance(postgres, str):
            pytest.skip(postgres)
        with fresh_schema(postgres) as url:
            yield kind, url


@pytest.fixture
async def backend(database_url: tuple[str, str | None]) -> AsyncIterator[Backend]:
    backend = Backend(*database_url)
    try:
        yield backend
    finally:
        for store in backend.stores:
            await store.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


@pytest.fixture(params=["sqlite", "postgresql"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL on a new database: a SQLite file or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runs.db'}"
        return
    postgres: PostgresServer | str = request.getfixturevalue("postgres")
    if isinstance(postgres, str):
        pytest.skip(postgres)
    with fresh_schema(postgres) as url:
        yield url
