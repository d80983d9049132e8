"""What a workspace's documents say about each other: ``call_flow`` blocks naming a
flow (or a pinned version) no document defines, two documents of the same flow, and a
``callable_by`` naming an unknown flow (a warning: it only allows, never breaks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from .document import locate
from .errors import Problem, suggestion
from .limits import Marks

__all__ = ["Document", "cross_problems"]


class Document(NamedTuple):
    """One parsed document of a workspace, with where its values are."""

    file: str
    raw: Mapping[str, Any]
    marks: Marks | None


def cross_problems(documents: Sequence[Document]) -> dict[str, list[Problem]]:
    """The problems of each file that only the workspace as a whole shows.

    A workspace loaded into a fresh store gives each document of a flow the next
    version number, in file-name order, so a flow "has" versions 1 to its number of
    documents."""
    files: dict[str, list[str]] = {}
    for document in documents:
        files.setdefault(str(document.raw["flow"]), []).append(document.file)
    found: dict[str, list[Problem]] = {}
    for document in documents:
        problems = found.setdefault(document.file, [])
        name = str(document.raw["flow"])
        if len(files[name]) > 1:
            others = " and ".join(files[name])
            problems.append(
                _at(Problem(f"flow {name!r} is defined by {others}", field="flow"), document)
            )
        problems.extend(_calls(document, files))
        callers = document.raw.get("callable_by")
        if isinstance(callers, list):
            for index, caller in enumerate(callers):
                if isinstance(caller, str) and caller not in files:
                    message = f"unknown flow {caller!r}{suggestion(caller, files)}"
                    problem = Problem(message, field=f"callable_by[{index}]", severity="warning")
                    problems.append(_at(problem, document))
    return found


def _calls(document: Document, files: Mapping[str, list[str]]) -> list[Problem]:
    problems: list[Problem] = []
    blocks = document.raw.get("blocks")
    if not isinstance(blocks, Mapping):
        return problems
    for block_id, block in blocks.items():
        if not isinstance(block, Mapping) or block.get("type") != "call_flow":
            continue
        target, pinned = block.get("flow"), block.get("version")
        if not isinstance(target, str):
            continue
        if target not in files:
            message = f"flow {target!r} is not defined in this workspace{suggestion(target, files)}"
            problems.append(_at(Problem(message, str(block_id), "flow"), document))
        elif isinstance(pinned, int) and not 1 <= pinned <= len(files[target]):
            count = len(files[target])
            message = (
                f"flow {target!r} has no version {pinned} in this workspace "
                f"(its {count} document{'s' if count > 1 else ''} give versions 1 to {count})"
            )
            problems.append(_at(Problem(message, str(block_id), "version"), document))
    return problems


def _at(problem: Problem, document: Document) -> Problem:
    """The problem in its file, at its value's line and column."""
    return locate(problem.in_file(document.file), document.marks)
