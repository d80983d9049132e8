"""The PostgreSQL store's pool: opened with the schema migrated, and how it checks a
connection before handing it out.

A connection broken by a server restart must be replaced, not handed out (the caller
would fail once for nothing). psycopg's own check is a round trip per hand-out, which
doubled the statements of a run's hot path (a finish, a claim). An idle pooled
connection receives nothing unless the server is ending it: a server that stops or
restarts, or terminates the backend, sends its last error message and closes the
socket, and either makes the socket readable. So the check looks, without waiting,
whether the socket is readable, and only then makes the round trip that tells a
broken connection from a stray message. A connection cut without a word (a network
partition) is found when it is used, as any failure is (:class:`StoreUnavailable`).
"""

from __future__ import annotations

import select
from typing import Any

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool

from .postgres_queue import CURRENT_SCHEMA, channel_of
from .schema import CREATE_VERSION_TABLE, READ_VERSION, migration

__all__ = ["check_connection", "open_pool"]

_MIGRATION_LOCK = 0x666C6F77  # an advisory lock key of our own ("flow")


async def open_pool(
    conninfo: str, size: int, wait: float, name: str
) -> tuple[AsyncConnectionPool, str]:
    """A pool of autocommit connections to the database ``name`` (for messages), its
    schema created or migrated (one process at a time), and the channel on which its
    queued runs are announced."""
    pool = AsyncConnectionPool(
        conninfo,
        min_size=1,
        max_size=size,
        timeout=wait,
        kwargs={"autocommit": True},
        # a connection broken by a server restart is replaced, not handed out
        check=check_connection,
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=wait)
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(CREATE_VERSION_TABLE)
            found = await (await conn.execute(READ_VERSION)).fetchone()
            for statement in migration(found, name, "postgresql"):
                await conn.execute(statement)
            schema = await (await conn.execute(CURRENT_SCHEMA)).fetchone()
            assert schema is not None
            return pool, channel_of(schema[0])
    except BaseException:
        with anyio.CancelScope(shield=True):
            await pool.close()
        raise


async def check_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """Raise if ``conn`` is broken (see the module docstring)."""
    if conn.closed or select.select([conn.fileno()], [], [], 0)[0]:
        await AsyncConnectionPool.check_connection(conn)
