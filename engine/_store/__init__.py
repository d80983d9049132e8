"""Stores: where flows, versions, permission settings and runs are kept.

One interface, :class:`Store`; :class:`MemoryStore` is the library's default. Stores are
chosen by URL with :func:`open_store`; the database modules (and their drivers) are
imported only when a URL names them.
"""

from __future__ import annotations

from .base import Store
from .memory import MemoryStore

__all__ = ["MemoryStore", "Store", "open_store"]


def open_store(url: str | None, *, keep_finished_runs: int | None = None) -> Store:
    """The store a URL names: ``memory:``, ``sqlite:///path/to/file.db`` or
    ``postgresql://user@host/db``. ``keep_finished_runs`` bounds what the in-memory
    store keeps (the database stores keep finished runs until they are pruned)."""
    if url is None or url in ("memory:", "memory://"):
        if keep_finished_runs is None:
            return MemoryStore()
        return MemoryStore(keep_finished_runs=keep_finished_runs)
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if url.startswith(("postgresql:", "postgres:")):
        from .postgres import PostgresStore

        return PostgresStore.from_url(url)
    raise ValueError(
        f"unsupported store URL {url!r} (use memory:, sqlite:///PATH or postgresql://…)"
    )
