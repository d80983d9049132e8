"""The database stores' tables: their layout, the schema version and its migrations.

The same DDL serves SQLite and PostgreSQL (both accept these types). JSON values —
documents, problems, roles, inputs, outputs, errors, checkpoints — are kept as JSON
text, so both databases store exactly what was written and decode it the same way.

Tables::

    schema_version    one row: the version of this layout in the database
    settings_state    one row: a counter bumped by every permission change, the default
    permission_settings  (flow, kind, name) -> GRANT|DENY; flow '' is app-wide
    flows             flow -> last version number (numbers are taken from it atomically)
    versions          (flow, version) -> status, document, problems, created_at
    runs              one row per run (a RunRecord); trace_len counts its trace rows
    run_trace         (run_id, seq) -> block, type, start, duration, outcome
    checkpoints       (run_id, seq) -> state, trace (SQLite only, from version 2)
    run_steps         (run_id, trace_index) -> block, size, variables (from version 5)

A run's state is its newest ``checkpoints`` row, else the ``checkpoint`` column of its
``runs`` row; its trace is its ``run_trace`` rows followed by the ``trace`` of each of
its ``checkpoints`` rows in order. SQLite appends one ``checkpoints`` row per block (an
insert is the cheapest write it has) and folds them into ``runs`` and ``run_trace`` now
and then and when the run ends; PostgreSQL updates the ``runs`` row instead.

A run's steps (the variables after each block, bounded as the steps module of the model
says) are its ``run_steps`` rows; on SQLite also those its ``checkpoints`` rows will
give when they are folded, which readers work out from them. PostgreSQL writes a
step in the checkpoint's own statement; they are kept until the run is pruned.

Migrations: :data:`MIGRATIONS` lists, for each schema version and each database, the
statements that bring a database from the previous version to it. A store runs the missing ones in
one transaction while holding the database's write lock, so two processes opening a
new database at once do not both create it; a database newer than this code is
refused with :class:`StoreError` rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from .._model.errors import StoreError

__all__ = ["CREATE_VERSION_TABLE", "MIGRATIONS", "READ_VERSION", "SCHEMA_VERSION", "migration"]

SCHEMA_VERSION = 5

_V1 = (
    """CREATE TABLE settings_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version BIGINT NOT NULL,
        default_permission TEXT NOT NULL CHECK (default_permission IN ('GRANT', 'DENY')))""",
    "INSERT INTO settings_state (id, version, default_permission) VALUES (1, 0, 'GRANT')",
    """CREATE TABLE permission_settings (
        flow TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('user', 'role')),
        name TEXT NOT NULL,
        permission TEXT NOT NULL CHECK (permission IN ('GRANT', 'DENY')),
        PRIMARY KEY (flow, kind, name))""",
    "CREATE TABLE flows (flow TEXT PRIMARY KEY, last_version INTEGER NOT NULL)",
    """CREATE TABLE versions (
        flow TEXT NOT NULL,
        version INTEGER NOT NULL,
        status TEXT NOT NULL,
        document TEXT NOT NULL,
        problems TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (flow, version))""",
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        version INTEGER NOT NULL,
        status TEXT NOT NULL,
        user_id TEXT,
        roles TEXT NOT NULL,
        inputs TEXT NOT NULL,
        parent_run_id TEXT,
        root_run_id TEXT,
        depth INTEGER NOT NULL,
        via TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        output TEXT,
        error TEXT,
        has_errors BOOLEAN NOT NULL,
        checkpoint TEXT,
        cancel_requested BOOLEAN NOT NULL,
        owner TEXT,
        lease_expires DOUBLE PRECISION,
        log TEXT,
        trace_len INTEGER NOT NULL)""",
    # What claim_runs scans: unfinished runs, oldest first.
    """CREATE INDEX runs_unfinished ON runs (created_at, run_id)
        WHERE status IN ('QUEUED', 'RUNNING')""",
    "CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL",
    """CREATE TABLE run_trace (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        block TEXT NOT NULL,
        type TEXT NOT NULL,
        start DOUBLE PRECISION NOT NULL,
        duration DOUBLE PRECISION NOT NULL,
        outcome TEXT NOT NULL,
        PRIMARY KEY (run_id, seq))""",
)

# Version 2: SQLite appends a row per checkpoint instead of rewriting the run's row.
# Without a rowid the row lives in the primary key's own tree: one tree to write.
_V2_SQLITE = (
    """CREATE TABLE checkpoints (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        state TEXT NOT NULL,
        trace TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)) WITHOUT ROWID""",
)

# Version 3: listing runs newest first, with or without a filter, and pruning old ones
# read an index instead of the whole table (the key is (created_at, run_id), see
# the listing module).
_V3_LISTING = (
    "CREATE INDEX runs_created ON runs (created_at, run_id)",
    "CREATE INDEX runs_flow_created ON runs (flow, created_at, run_id)",
    "CREATE INDEX runs_user_created ON runs (user_id, created_at, run_id)",
    "CREATE INDEX runs_root_created ON runs (root_run_id, created_at, run_id)",
)

# Version 4: claims are fenced. Each claim bumps ``lease_epoch``; writes for a claimed
# run name the epoch they hold, so a process that stalled past its lease (even one that
# claimed the run again meanwhile) can no longer change it.
_V4_LEASE_EPOCH = ("ALTER TABLE runs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0",)

# Version 5: the variables after each block, kept until the run is pruned.
_V5_STEPS = """CREATE TABLE run_steps (
        run_id TEXT NOT NULL,
        trace_index INTEGER NOT NULL,
        block TEXT NOT NULL,
        size INTEGER NOT NULL,
        variables TEXT,
        PRIMARY KEY (run_id, trace_index))"""

Dialect = Literal["sqlite", "postgresql"]

MIGRATIONS: dict[int, dict[Dialect, tuple[str, ...]]] = {
    1: {"sqlite": _V1, "postgresql": _V1},
    2: {"sqlite": _V2_SQLITE, "postgresql": ()},
    3: {"sqlite": _V3_LISTING, "postgresql": _V3_LISTING},
    4: {"sqlite": _V4_LEASE_EPOCH, "postgresql": _V4_LEASE_EPOCH},
    5: {"sqlite": (_V5_STEPS + " WITHOUT ROWID",), "postgresql": (_V5_STEPS,)},
}
"""Statements taking a database of each kind from version ``n - 1`` to ``n``."""

CREATE_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
READ_VERSION = "SELECT version FROM schema_version"


def migration(found: Sequence[Any] | None, where: str, dialect: Dialect) -> list[str]:
    """The statements to run on a database whose ``schema_version`` row is ``found``."""
    current = 0 if found is None else int(found[0])
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"{where} has schema version {current}, newer than this flowwarden knows "
            f"({SCHEMA_VERSION}); upgrade flowwarden to use it"
        )
    if current == SCHEMA_VERSION:
        return []
    steps = range(current + 1, SCHEMA_VERSION + 1)
    statements = [s for n in steps for s in MIGRATIONS[n][dialect]]
    if found is None:
        statements.append(f"INSERT INTO schema_version (version) VALUES ({SCHEMA_VERSION})")
    else:
        statements.append(f"UPDATE schema_version SET version = {SCHEMA_VERSION}")
    return statements
