"""``flowwarden validate`` and ``flowwarden check``: what is wrong with documents, and
who may run a flow and every flow it reaches through Call Flow blocks."""

from __future__ import annotations

import argparse
from pathlib import Path

from blocks import BlockRegistry

from .._model.document import parse_document, validate_document
from .._model.errors import InvalidFlow, InvalidWorkspace
from .._runtime.chain import analyse_chain
from .._runtime.engine import Engine
from .._runtime.workspace import (
    CONFIG_FILES,
    PERMISSIONS_FILES,
    config_file,
    flow_files,
    load_workspace,
    read_permissions,
)
from .common import (
    DENIED,
    OK,
    USAGE,
    dumps,
    identity_of,
    load_registry,
    notes,
    out,
    say,
)

__all__ = ["check", "validate"]


# -- validate ----------------------------------------------------------------------------


def validate(args: argparse.Namespace) -> int:
    registry = load_registry()
    bad = 0
    for path in args.paths:
        if path.is_dir():
            bad += _validate_workspace(path, registry)
        elif path.is_file():
            bad += _validate_file(path, registry, None)
        else:
            out(f"{path}: no such file or directory")
            bad += 1
    return USAGE if bad else OK


def _validate_workspace(root: Path, registry: BlockRegistry) -> int:
    names: dict[str, list[str]] = {}
    files = flow_files(root)
    if not files:
        out(f"{root}: no flow documents in this directory")
        return 1
    bad = sum(_validate_file(path, registry, names) for path in files)
    permissions_file = config_file(root, PERMISSIONS_FILES)
    if permissions_file.is_file():
        bad += _validate_file(permissions_file, registry, names)
    for flow, live in sorted(names.items()):
        if len(live) > 1:
            say(f"warning: flow {flow!r} is LIVE in {', '.join(live)}; the last one wins")
    return bad


def _validate_file(path: Path, registry: BlockRegistry, names: dict[str, list[str]] | None) -> int:
    """Print the file's problems (or ``ok:``); return 1 when it has any."""
    file = str(path)
    if path.suffix not in (".yaml", ".yml", ".json"):
        out(f"skipped: {file} (flow documents are .yaml, .yml or .json files)")
        return 0
    if path.name in CONFIG_FILES:
        if not path.name.startswith("permissions"):
            out(f"skipped: {file} (not a flow document; checked when a server loads it)")
            return 0
        try:
            _, _, warnings = read_permissions(path, set(names) if names is not None else None)
        except InvalidWorkspace as exc:
            for problem in exc.problems:
                out(str(problem))
            return 1
        for warning in warnings:
            say(f"warning: {warning}")
        out(f"ok: {file} (permissions)")
        return 0
    try:
        raw = parse_document(path)
    except InvalidFlow as exc:
        for problem in exc.problems:
            out(str(problem.in_file(file)))
        return 1
    _, problems = validate_document(raw, registry)
    for problem in problems:
        out(str(problem.in_file(file)))
    if names is not None:
        names.setdefault(raw["flow"], [])
        if raw.get("status") == "LIVE":
            names[raw["flow"]].append(file)
    if problems:
        return 1
    out(f"ok: {file} ({raw['flow']})")
    return 0


# -- check -------------------------------------------------------------------------------


async def check(args: argparse.Namespace) -> int:
    identity = identity_of(args)
    async with Engine(registry=load_registry()) as engine:
        notes(await load_workspace(engine, args.workspace), lambda _file: False)
        report = await analyse_chain(engine, args.flow, identity)
    if getattr(args, "json", False):
        out(dumps(report.to_json()))
    else:
        for entry in report.chain:
            out(entry.line())
    return OK if report.allowed else DENIED
