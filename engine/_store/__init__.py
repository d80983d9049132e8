"""Stores: where flows, versions, permission settings and runs are kept.

One interface, :class:`Store`; :class:`MemoryStore` is the library's default. Stores are
chosen by URL with :func:`open_store`; the database modules (and their drivers) are
imported only when a URL names them.
"""

from __future__ import annotations

from .base import Store
from .memory import MemoryStore

__all__ = ["MemoryStore", "Store", "open_store"]


def open_store(url: str | None) -> Store:
    """The store a URL names: ``memory:``, ``sqlite:///path/to/file.db`` or
    ``postgresql://user@host/db``."""
    if url is None or url in ("memory:", "memory://"):
        return MemoryStore()
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if url.startswith(("postgresql:", "postgres:")):
        from .postgres import PostgresStore

        return PostgresStore.from_url(url)
    raise ValueError(
        f"unsupported store URL {url!r} (use memory:, sqlite:///PATH or postgresql://…)"
    )
