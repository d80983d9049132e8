"""``flowwarden validate``: every problem of every document, each with its file, line
and column, block and field; a directory is a workspace, whose documents are also
checked against each other (``call_flow`` targets, pinned versions, duplicate flow
names, ``callable_by``). ``--json`` prints the same as one object."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blocks import BlockRegistry

from .._model.document import read_document, validate_document
from .._model.errors import InvalidFlow, InvalidWorkspace, Problem
from .._runtime.workspace import (
    CONFIG_FILES,
    PERMISSIONS_FILES,
    config_file,
    flow_files,
    read_permissions,
)
from .common import OK, USAGE, dumps, load_registry, out, say

if TYPE_CHECKING:
    from .._model.crosscheck import Document

__all__ = ["validate"]


class _Findings:
    """What validation found, file by file, printed as it goes or kept for ``--json``."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.files: list[dict[str, Any]] = []
        self.ok = True

    def report(self, file: str, flow: str | None, problems: list[Problem], ok_line: str) -> None:
        errors = [p for p in problems if p.severity == "error"]
        self.ok = self.ok and not errors
        self.files.append({"file": file, "flow": flow, "problems": [p.as_json() for p in problems]})
        if self.as_json:
            return
        for problem in problems:
            if problem.severity == "error":
                out(str(problem))
            else:
                say(f"warning: {problem}")
        if not errors and ok_line:
            out(ok_line)

    def line(self, text: str, *, bad: bool = False) -> None:
        self.ok = self.ok and not bad
        if not self.as_json:
            out(text)


def validate(args: argparse.Namespace) -> int:
    registry = load_registry()
    found = _Findings(getattr(args, "json", False))
    for path in args.paths:
        if path.is_dir():
            _validate_workspace(path, registry, found)
        elif path.is_file():
            document = _validate_file(path, registry, found)
            if document is not None:
                found.report(*document)
        else:
            found.files.append({"file": str(path), "flow": None, "problems": [_missing(path)]})
            found.line(f"{path}: no such file or directory", bad=True)
    if found.as_json:
        out(dumps({"ok": found.ok, "files": found.files}))
    return OK if found.ok else USAGE


def _missing(path: Path) -> dict[str, Any]:
    return Problem("no such file or directory", file=str(path)).as_json()


_Report = tuple[str, str | None, list[Problem], str]


def _validate_workspace(root: Path, registry: BlockRegistry, found: _Findings) -> None:
    files = flow_files(root)
    if not files:
        found.files.append({"file": str(root), "flow": None, "problems": [_empty(root)]})
        found.line(f"{root}: no flow documents in this directory", bad=True)
        return
    from .._model.crosscheck import cross_problems  # problems across a workspace's files

    reports: list[_Report] = []
    documents: list[Document] = []
    for path in files:
        report = _validate_file(path, registry, found, documents)
        if report is not None:
            reports.append(report)
    across = cross_problems(documents)
    for file, flow, problems, ok_line in reports:
        found.report(file, flow, problems + across.get(file, []), ok_line)
    permissions_file = config_file(root, PERMISSIONS_FILES)
    if permissions_file.is_file():
        names = {str(document.raw["flow"]) for document in documents}
        _validate_permissions(permissions_file, names, found)


def _empty(root: Path) -> dict[str, Any]:
    return Problem("no flow documents in this directory", file=str(root)).as_json()


def _validate_file(
    path: Path,
    registry: BlockRegistry,
    found: _Findings,
    documents: list[Document] | None = None,
) -> _Report | None:
    """The file's problems (none reported yet); None for a file that is not a flow
    document (said so at once)."""
    file = str(path)
    if path.suffix not in (".yaml", ".yml", ".json"):
        found.line(f"skipped: {file} (flow documents are .yaml, .yml or .json files)")
        return None
    if path.name in CONFIG_FILES:
        if path.name.startswith("permissions"):
            _validate_permissions(path, None, found)
        else:
            found.line(f"skipped: {file} (not a flow document; checked when a server loads it)")
        return None
    try:
        raw, marks = read_document(path)
    except InvalidFlow as exc:
        return file, None, [problem.in_file(file) for problem in exc.problems], ""
    _, problems = validate_document(raw, registry, marks=marks)
    if documents is not None:
        from .._model.crosscheck import Document

        documents.append(Document(file, raw, marks))
    flow = str(raw["flow"])
    return file, flow, [problem.in_file(file) for problem in problems], f"ok: {file} ({flow})"


def _validate_permissions(path: Path, flows: set[str] | None, found: _Findings) -> None:
    file = str(path)
    try:
        _, _, warnings = read_permissions(path, flows)
    except InvalidWorkspace as exc:
        found.report(file, None, list(exc.problems), "")
        return
    problems = [Problem(text, severity="warning") for text in warnings]
    found.files.append({"file": file, "flow": None, "problems": [p.as_json() for p in problems]})
    if not found.as_json:
        for warning in warnings:
            say(f"warning: {warning}")
        out(f"ok: {file} (permissions)")
