"""How PostgreSQL workers learn that there is work: ``LISTEN``/``NOTIFY``.

A statement that queues a run (an activation recorded QUEUED) or hands runs back
notifies the store's channel in its own transaction, so the notification is delivered
once the rows are committed and visible, and only then. A worker listens on a connection
of its own (not one of the pool's, which are shared and reset) and claims when woken.

Notifications are a hint, not a queue: one sent while a worker's listening connection
was down (the server restarted, say) is lost, and a run whose worker died is orphaned
without any. Workers therefore still poll, slowly, and every wake-up ends in an
ordinary claim; a lost notification only delays a run until the next poll.

``NOTIFY`` is per database, and several stores may share one database in different
schemas (the tests do): the channel is named after the store's schema, so that one
store's queue does not wake another's workers.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import psycopg
from psycopg import sql

from .._model.errors import StoreUnavailable
from .sql import INSERT_RUN, UNFINISHED

__all__ = ["CURRENT_SCHEMA", "QUEUE_RUN", "RELEASE", "Listener", "channel_of"]

CURRENT_SCHEMA = "SELECT current_schema()"
_NAME_BYTES = 63  # PostgreSQL truncates longer identifiers; pg_notify refuses them


def channel_of(schema: str) -> str:
    """The notification channel of a store whose tables are in ``schema``."""
    return f"flowwarden.{schema}".encode()[:_NAME_BYTES].decode(errors="ignore")


def notifying(statement: str) -> str:
    """``statement`` (one that ends ``RETURNING run_id``) and, in the same transaction,
    a notification on the channel given as the last parameter if it changed a row;
    the statement's answer is the number of rows changed."""
    return f"WITH r AS ({statement}) SELECT count(pg_notify(%s, '')) FROM r"


QUEUE_RUN = notifying(INSERT_RUN.replace("?", "%s") + " RETURNING run_id")
"""Insert a QUEUED run (no trace yet) and announce it."""
RELEASE = notifying(
    "UPDATE runs SET status = 'QUEUED', owner = NULL, lease_expires = NULL "
    f"WHERE owner = %s AND {UNFINISHED} AND run_id = ANY(%s) RETURNING run_id"
)
"""Hand back the runs an owner holds, and announce them."""


class Listener:
    """A connection of its own that listens on a store's channel (see the module)."""

    def __init__(self, conninfo: str, *, timeout: float, name: str) -> None:
        self.conninfo = conninfo
        self.timeout = timeout
        self.name = name  # the store, for messages
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = anyio.Lock()

    async def wait(self) -> None:
        """See :meth:`QueueSignals.wait_for_queued`: a notification, or listening
        (re)started, since what was sent before that is lost. Cancelling the wait
        leaves the connection listening."""
        async with self._lock:
            try:
                if self._conn is None:
                    self._conn = await self._listen()
                    return
                async with contextlib.aclosing(self._conn.notifies(stop_after=1)) as received:
                    async for _ in received:
                        break
            except psycopg.Error as exc:
                await self._drop()
                raise StoreUnavailable(f"PostgreSQL store {self.name}: {exc}") from exc

    async def _listen(self) -> psycopg.AsyncConnection[Any]:
        try:
            with anyio.fail_after(self.timeout):
                conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        except TimeoutError as exc:
            raise StoreUnavailable(f"PostgreSQL store {self.name}: connect timed out") from exc
        try:
            row = await (await conn.execute(CURRENT_SCHEMA)).fetchone()
            assert row is not None
            channel = sql.Identifier(channel_of(row[0]))
            await conn.execute(sql.SQL("LISTEN {}").format(channel))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await conn.close()
            raise
        return conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await conn.close()

    async def close(self) -> None:
        await self._drop()  # a wait in progress fails: the store is closing
