"""Workspaces: a folder of flow documents plus ``permissions.yaml`` (and ``tokens.yaml``).

Every ``*.yaml``, ``*.yml`` and ``*.json`` file other than the configuration files is a
flow document, added in file-name order; a document's ``status`` (LIVE or PAUSED) is
applied after it is added. A document with problems is kept as an INVALID version and
reported in one warning line; it does not stop the rest of the workspace from loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.to_thread
import yaml

from permissions import SYSTEM_ROLES, Permission, Role, User

from .._model.document import parse_document
from .._model.errors import InvalidFlow, InvalidWorkspace, Problem
from .._model.limits import load_yaml
from .._model.logs import get_logger
from .._model.types import VersionInfo, VersionStatus
from .._store import Store
from .permissions import PermissionsAPI


class Loader(Protocol):
    """What loading a workspace needs of an :class:`Engine` (it is one)."""

    @property
    def store(self) -> Store: ...

    @property
    def permissions(self) -> PermissionsAPI: ...

    async def add_version(self, document: dict[str, Any] | str | bytes) -> int: ...

    async def get_version(self, flow: str, version: int) -> VersionInfo: ...

    async def start(self, flow: str, version: int) -> None: ...

    async def pause(self, flow: str) -> None: ...


__all__ = [
    "CONFIG_FILES",
    "WorkspaceReport",
    "load_workspace",
    "read_permissions",
    "summary",
]

PERMISSIONS_FILES = ("permissions.yaml", "permissions.yml")
TOKEN_FILES = ("tokens.yaml", "tokens.yml")
CONFIG_FILES = frozenset((*PERMISSIONS_FILES, *TOKEN_FILES))
"""A workspace's configuration files, which are not flow documents."""
STORE_FILE = ".flowwarden.db"
"""The workspace's own SQLite store, where commands keep runs unless told otherwise."""


def config_file(root: Path, names: tuple[str, ...]) -> Path:
    """The configuration file of ``root`` under one of ``names`` (the first that exists,
    else where the first name would be)."""
    return next((root / name for name in names if (root / name).is_file()), root / names[0])


def store_url(root: Path) -> str:
    """The URL of the workspace's own store."""
    return f"sqlite:///{(root / STORE_FILE).resolve()}"


_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class WorkspaceReport:
    """What loading a workspace found: flows loaded, documents with problems, warnings."""

    flows: dict[str, list[int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def broken(self) -> dict[str, list[Problem]]:
        """The problems of each document that has any, by file, in loading order."""
        found: dict[str, list[Problem]] = {}
        for problem in self.problems:
            found.setdefault(problem.file or "", []).append(problem)
        return found


def summary(file: str, problems: list[Problem]) -> str:
    """One line for a broken document: its first problem, where it is, how many more,
    so that a workspace with a broken file says so once, not once per problem."""
    first = problems[0]
    head = ": ".join([file, *first.place(), first.message])
    notes = [f"line {first.line}, column {first.column}"] if first.line is not None else []
    if len(problems) > 1:
        more = len(problems) - 1
        notes.append(f"{more} more problem{'s' if more > 1 else ''}")
    notes.append("the other flows still run; flowwarden validate lists every problem")
    return f"{head} ({'; '.join(notes)})"


def flow_files(root: Path) -> list[Path]:
    """The flow documents of a workspace, in the order they are loaded."""
    return sorted(
        path
        for path in root.iterdir()
        if path.is_file() and path.suffix in _SUFFIXES and path.name not in CONFIG_FILES
    )


async def load_workspace(engine: Loader, root: Path) -> WorkspaceReport:
    """Add every document of ``root`` to ``engine`` and apply ``permissions.yaml``."""
    files = await anyio.to_thread.run_sync(_read_flow_files, root)
    report = WorkspaceReport()
    for path, text in files:
        try:
            raw = parse_document(text)
            version = await _same_or_new_version(engine, raw, text)
        except InvalidFlow as exc:
            report.problems.extend(p.in_file(str(path)) for p in exc.problems)
            continue
        info = await engine.get_version(raw["flow"], version)
        report.flows.setdefault(info.flow, []).append(version)
        report.problems.extend(p.in_file(str(path)) for p in info.problems)
        wanted = info.document.get("status")
        if wanted in ("LIVE", "PAUSED"):
            if info.status is VersionStatus.INVALID:
                continue  # its problems say why (one summary line per broken file)
            await engine.start(info.flow, version)
            if wanted == "PAUSED":
                await engine.pause(info.flow)
    permissions_file = config_file(root, PERMISSIONS_FILES)
    if permissions_file.is_file():
        report.warnings.extend(await apply_permissions(engine, permissions_file, set(report.flows)))
    log = get_logger("flowwarden")
    for file, problems in report.broken().items():
        log.warning("workspace.warning", message=summary(file, problems))
    for warning in report.warnings:
        log.warning("workspace.warning", message=warning)
    return report


async def _same_or_new_version(engine: Loader, raw: dict[str, Any], text: str | bytes) -> int:
    """Reuse the newest version when its document is this one (a persistent store read
    by several commands keeps one version per change, not one per command). A new
    version is added from the text, so that its problems have their lines."""
    versions = await engine.store.list_versions(raw["flow"])
    if versions and versions[-1].document == raw:
        return versions[-1].version
    return await engine.add_version(text)


def _read_flow_files(root: Path) -> list[tuple[Path, str | bytes]]:
    if not root.is_dir():
        raise InvalidWorkspace([Problem("not a workspace directory", file=str(root))])
    found: list[tuple[Path, str | bytes]] = []
    for path in flow_files(root):
        try:
            found.append((path, path.read_bytes()))
        except OSError as exc:
            raise InvalidWorkspace([Problem(f"cannot read: {exc}", file=str(path))]) from exc
    return found


async def apply_permissions(engine: Loader, path: Path, flows: set[str]) -> list[str]:
    """Apply a ``permissions.yaml``; returns warnings (unknown flows).

    The file is the whole truth: a setting a persistent store still holds from an
    earlier read of the workspace, and that the file no longer has, is removed.
    """
    default, settings, warnings = await anyio.to_thread.run_sync(read_permissions, path, flows)
    wanted = {(subject, flow): permission for subject, permission, flow in settings}
    current = await engine.permissions.settings()
    levels = [(None, current.app), *current.flows.items()]
    for flow, level in levels:
        stale: list[User | Role] = [User(u) for u in level.users] + [Role(r) for r in level.roles]
        for subject in stale:
            if (subject, flow) not in wanted:
                await engine.permissions.inherit(subject, flow=flow)
    await engine.permissions.set_default(default)
    for (subject, flow), permission in wanted.items():
        await engine.permissions.set(subject, permission, flow=flow)
    return warnings


def read_permissions(
    path: Path, flows: set[str] | None = None
) -> tuple[Permission, list[tuple[User | Role, Permission, str | None]], list[str]]:
    """Parse and check ``permissions.yaml``::

    default: grant
    app:   {roles: {NonAuthenticatedUser: deny}, users: {mallory: deny}}
    flows: {order-approval: {roles: {Manager: grant}, users: {alice: grant}}}
    """
    file = str(path)
    try:
        raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidWorkspace([Problem(f"cannot read: {exc}", file=file)]) from exc
    problems: list[Problem] = []
    warnings: list[str] = []
    settings: list[tuple[User | Role, Permission, str | None]] = []
    if not isinstance(raw, dict):
        raise InvalidWorkspace([Problem("must be a mapping", file=file)])
    for key in raw:
        if key not in ("default", "app", "flows"):
            problems.append(Problem("unknown field", field=str(key), file=file))
    default = _word(raw.get("default", "grant"), "default", problems, file)
    if default is Permission.INHERIT:
        problems.append(Problem("the default must be grant or deny", field="default", file=file))
    _level(raw.get("app"), None, "app", settings, problems, file)
    flows_raw = raw.get("flows") or {}
    if not isinstance(flows_raw, dict):
        problems.append(Problem("must be a mapping of flow names", field="flows", file=file))
        flows_raw = {}
    for flow, level in flows_raw.items():
        if flows is not None and flow not in flows:
            warnings.append(f"{file}: settings for unknown flow {flow!r}")
        _level(level, str(flow), f"flows.{flow}", settings, problems, file)
    if problems:
        raise InvalidWorkspace(problems)
    return default or Permission.GRANT, settings, warnings


def _word(value: Any, where: str, problems: list[Problem], file: str) -> Permission | None:
    if isinstance(value, str) and value.upper() in Permission.__members__:
        return Permission(value.upper())
    problems.append(
        Problem(
            f"unknown permission {value!r} (use grant, deny or inherit)", field=where, file=file
        )
    )
    return None


def _level(
    raw: Any,
    flow: str | None,
    where: str,
    settings: list[tuple[User | Role, Permission, str | None]],
    problems: list[Problem],
    file: str,
) -> None:
    if raw is None:
        return
    if not isinstance(raw, dict):
        problems.append(Problem("must be a mapping with users and roles", field=where, file=file))
        return
    for key in raw:
        if key not in ("users", "roles"):
            problems.append(Problem("unknown field", field=f"{where}.{key}", file=file))
    for kind in ("users", "roles"):
        entries = raw.get(kind) or {}
        if not isinstance(entries, dict):
            problems.append(Problem("must be a mapping", field=f"{where}.{kind}", file=file))
            continue
        for name, word in entries.items():
            field_name = f"{where}.{kind}.{name}"
            permission = _word(word, field_name, problems, file)
            if not isinstance(name, str) or not name:
                problems.append(
                    Problem("names must be non-empty strings", field=field_name, file=file)
                )
                continue
            if kind == "users" and name in SYSTEM_ROLES:
                problems.append(
                    Problem(
                        f"{name} is a system role, not a user: list it under roles",
                        field=field_name,
                        file=file,
                    )
                )
                continue
            if permission is not None:
                subject: User | Role = User(name) if kind == "users" else Role(name)
                settings.append((subject, permission, flow))
