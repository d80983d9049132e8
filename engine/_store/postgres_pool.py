"""How the PostgreSQL store's pool checks a connection before handing it out.

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

import psycopg
from psycopg_pool import AsyncConnectionPool

__all__ = ["check_connection"]


async def check_connection(conn: psycopg.AsyncConnection[Any]) -> None:
    """Raise if ``conn`` is broken (see the module docstring)."""
    if conn.closed or select.select([conn.fileno()], [], [], 0)[0]:
        await AsyncConnectionPool.check_connection(conn)
