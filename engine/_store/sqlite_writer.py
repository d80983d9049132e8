"""Group commit for the SQLite store: the writes that arrive together share one
transaction, and so one fsync of the log.

Every write of the store is a function of a connection, handed to :meth:`GroupWriter.write`.
The writes waiting when a transaction starts are run in it, in the order they came,
each inside a ``SAVEPOINT`` of its own, on the writer's one connection. They run on the
event loop's thread, as reads do: they only change pages in memory, and a worker
thread running them would hand the interpreter lock back and forth with the loop at
every statement. The commit, which waits for the disk, runs in a worker thread; the
event loop goes on meanwhile, so the writes of other tasks gather for the next
transaction. Each caller is answered once the transaction holding its write has
committed:

- a write that raises (a lost lease, a run that exists already, a statement error) is
  rolled back to its savepoint and fails its own caller only; the others commit;
- a transaction that cannot begin or commit (the write lock held elsewhere past the
  busy timeout, a full disk, an I/O error, the file replaced) fails every caller of the
  group, with :class:`StoreUnavailable` when the database is away; none of them was
  acknowledged, so nothing acknowledged is lost.

A transaction begins on the loop's thread only if the write lock is free: when another
process holds it, the group is handed to the worker thread whole, which waits for the
lock (up to the busy timeout) while the loop goes on. The first group, which opens the
connection (and may migrate the file), runs there too, and so does a group holding a
write its caller marked slow (pruning or cancelling runs by the thousand). A write
alone after several groups of one write each (one client, nothing to overlap with)
commits on the loop's thread as well, where that costs less than the hand-over to a
thread.

No task leads for long: the task whose write is first in a group runs that one
transaction, then hands the next group to the first write waiting, so a caller is held
up by at most the transaction before its own. A write, once handed over, is not
cancelled: the caller waits for its transaction (bounded by the busy timeout), so a
cancelled caller never leaves a write half known.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from .._model.errors import StoreError

__all__ = ["GroupWriter"]

_T = TypeVar("_T")
_ALONE = 8  # groups of one write in a row after which the next runs on the loop's thread


class _Write(Generic[_T]):
    """One caller's write, and then its outcome or the turn to lead the next group."""

    __slots__ = ("done", "error", "lead", "op", "value")

    def __init__(self, op: Callable[[sqlite3.Connection], _T], done: anyio.Event | None) -> None:
        self.op = op
        self.done = done  # None: answered at once, never waited for
        self.lead = False  # woken to run the next group, not answered
        self.value: _T | None = None
        self.error: BaseException | None = None

    def outcome(self) -> _T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


class GroupWriter:
    """One writer connection and the queue of writes for its next transaction.

    ``connect`` opens the connection (raising :class:`sqlite3.Error`), ``failure``
    turns a :class:`sqlite3.Error` into the store's error, and ``check`` makes sure,
    before and after each transaction, that the file written is the store's (raising
    :class:`StoreError`): what was committed went where it will be found. With
    ``threaded=False`` each transaction runs on the event loop's thread instead, for
    commits cheaper than handing them to a thread (``synchronous=normal``, which does
    not wait for the disk): each write is then a transaction of its own, at once.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        failure: Callable[[sqlite3.Error], StoreError],
        check: Callable[[], None],
        *,
        threaded: bool = True,
    ) -> None:
        self._connect = connect
        self._failure = failure
        self._check = check
        self._threaded = threaded
        self._alone = 0  # how many groups in a row were one write each
        self._conn: sqlite3.Connection | None = None
        self._busy = 0  # the connection's busy timeout (ms), for the worker thread's begin
        self._pending: list[_Write[Any]] = []
        self._pending_slow = False  # whether a write pending may take long (see write)
        self._leading = False
        self._idle: anyio.Event | None = None  # set when the group in flight has ended

    async def write(self, op: Callable[[sqlite3.Connection], _T], *, slow: bool = False) -> _T:
        """``op(connection)`` inside a savepoint of the next transaction; its value
        once that transaction has committed. ``slow``: a write whose size its caller
        does not bound (many rows), which runs in the worker thread with its group,
        so that it does not hold up the loop."""
        if not self._threaded:  # every transaction on the loop's thread: nothing waits
            alone = _Write(op, None)
            self._run([alone])
            return alone.outcome()
        done = anyio.Event()
        entry = _Write(op, done)
        self._pending.append(entry)
        if slow:
            self._pending_slow = True
        leads = not self._leading
        if leads:
            self._leading = True
            self._idle = anyio.Event()
        try:
            if leads:
                # nothing in flight: let the tasks ready now queue their writes too
                # (callers answered together write again together)
                await anyio.lowlevel.checkpoint()
            else:
                await done.wait()
        except anyio.get_cancelled_exc_class():
            # the write is handed over all the same: its caller waits for its
            # transaction, leading it when that is its turn, and then stops
            with anyio.CancelScope(shield=True):
                if not leads:
                    await done.wait()
                if leads or entry.lead:
                    await self._lead()
            raise
        if leads or entry.lead:
            with anyio.CancelScope(shield=True):  # a group's leader only: it must run
                await self._lead()
        return entry.outcome()

    async def _lead(self) -> None:
        """Run the group waiting now (it holds this caller's write), then hand on."""
        assert self._idle is not None
        group, self._pending = self._pending, []
        slow, self._pending_slow = self._pending_slow, False
        try:
            # a write alone after many alone commits here: with nobody to overlap with,
            # handing it to a thread would only add to its time
            self._alone = self._alone + 1 if len(group) == 1 else 0
            if self._conn is None or slow or not self._begin(group):  # (or the lock held)
                await anyio.to_thread.run_sync(self._run, group)
            elif self._alone <= _ALONE and self._conn.in_transaction:
                await anyio.to_thread.run_sync(self._commit, group)
            else:
                self._commit(group)  # (nothing to commit if the group failed)
        finally:
            # the next group first: its leader wakes before this group's callers, so
            # its transaction runs while they go on with their work
            if self._pending:
                following = self._pending[0]
                following.lead = True
                if following.done is not None:
                    following.done.set()
            else:
                self._leading = False
                self._idle.set()
            for entry in group:
                if entry.done is not None:
                    entry.done.set()

    def _begin(self, group: list[_Write[Any]], *, wait: bool = False) -> bool:
        """Begin the group's transaction and run its writes; a failure fails the group.
        Without ``wait`` (on the loop's thread, the connection open) it begins only if
        the write lock is free: False when it is held elsewhere, and nothing was done.
        With it (in the worker thread) it opens the connection if need be and waits
        for the lock up to the busy timeout."""
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connection()
            self._check()
            if wait and self._threaded:
                conn.execute(f"PRAGMA busy_timeout = {self._busy}")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                finally:
                    conn.execute("PRAGMA busy_timeout = 0")
            else:
                try:
                    conn.execute("BEGIN IMMEDIATE")  # threaded, the busy timeout is 0 here
                except sqlite3.OperationalError as exc:
                    if not wait and exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                        return False
                    raise
            self._writes(conn, group)
        except Exception as exc:
            self._failed(conn, group, exc)
        return True

    def _commit(self, group: list[_Write[Any]]) -> None:
        """Commit the transaction :meth:`_begin` ran the group's writes in."""
        conn = self._conn
        if conn is None or not conn.in_transaction:  # it failed: every caller knows
            return
        try:
            conn.execute("COMMIT")
            self._check()
        except Exception as exc:
            self._failed(conn, group, exc)

    def _run(self, group: list[_Write[Any]]) -> None:
        """The group's whole transaction: in the worker thread, opening the connection
        if it is not open yet and waiting for the write lock (or on the loop's thread
        when not threaded)."""
        self._begin(group, wait=True)
        self._commit(group)

    def _writes(self, conn: sqlite3.Connection, group: list[_Write[Any]]) -> None:
        if len(group) == 1:  # its own transaction: no savepoint needed
            group[0].value = group[0].op(conn)
        else:
            for entry in group:
                self._apply(conn, entry)

    def _failed(
        self, conn: sqlite3.Connection | None, group: list[_Write[Any]], exc: Exception
    ) -> None:
        """The group's transaction did not commit: roll it back and fail every caller."""
        if conn is not None and conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # reported on its next use
                conn.execute("ROLLBACK")
        for entry in group:  # nobody in the group was acknowledged
            if entry.error is None:
                entry.error = self._translated(exc)
                entry.value = None

    def _apply(self, conn: sqlite3.Connection, entry: _Write[Any]) -> None:
        """One write of a group, inside a savepoint: if it raises, only it is undone."""
        conn.execute("SAVEPOINT w")
        try:
            entry.value = entry.op(conn)
        except Exception as exc:
            if not conn.in_transaction:  # SQLite rolled the whole group back
                raise
            conn.execute("ROLLBACK TO w")
            entry.error = self._translated(exc)
        conn.execute("RELEASE w")

    def _translated(self, exc: Exception) -> Exception:
        return self._failure(exc) if isinstance(exc, sqlite3.Error) else exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = self._connect()
            if self._threaded:  # a begin on the loop's thread must not wait: see _run
                self._busy = int(conn.execute("PRAGMA busy_timeout").fetchall()[0][0])
                conn.execute("PRAGMA busy_timeout = 0")
            self._conn = conn
        return self._conn

    async def close(self) -> None:
        """Wait for the group in flight, then close the connection."""
        with anyio.CancelScope(shield=True):
            while self._idle is not None and not self._idle.is_set():
                await self._idle.wait()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
