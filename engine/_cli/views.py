"""What ``runs`` and ``show`` print for a person: tables, a timeline, a tree (rich).

On a terminal rich fits the output to its width and colours it; elsewhere (a pipe, a
file, the tests) the lines are plain text, wide enough that no run id is cut.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Collection, Mapping
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from .._model.listing import RunPage, RunSummary
from .._model.types import RunResult, RunStatus, json_safe

__all__ = ["LiveLine", "console", "duration", "print_run", "print_runs"]

_STYLE = {
    RunStatus.QUEUED: "yellow",
    RunStatus.RUNNING: "cyan",
    RunStatus.COMPLETED: "green",
    RunStatus.FAILED: "red",
    RunStatus.CANCELLED: "magenta",
}
_BAR = 30  # the width of the timeline's bars, in characters


def console(stderr: bool = False) -> Console:
    """A console on the current stdout (or stderr); 160 columns when not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 160
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return dt.datetime.fromtimestamp(moment).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def _status(status: RunStatus, has_errors: bool = False) -> str:
    text = status.value + (" (handled errors)" if has_errors else "")
    return f"[{_STYLE[status]}]{text}[/]"


def _took(run: RunSummary | RunResult) -> float | None:
    start = run.started_at if run.started_at is not None else run.created_at
    return None if run.finished_at is None else max(0.0, run.finished_at - start)


def print_runs(page: RunPage) -> None:
    """The runs table, newest first, and how to get the next page."""
    out = console()
    if not page.runs:
        out.print("no runs")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("RUN", "FLOW", "STATUS", "USER", "STARTED", "DURATION", "ERROR"):
        table.add_column(name, no_wrap=True)
    for run in page.runs:
        table.add_row(
            run.run_id,
            escape(f"{run.flow} v{run.version}"),
            _status(run.status, run.has_errors),
            escape(run.user_id or "(anonymous)"),
            when(run.started_at if run.started_at is not None else run.created_at),
            duration(_took(run)),
            escape(run.error_code or ""),
        )
    out.print(table)
    if page.next_cursor is not None:
        out.print(f"more: --cursor {page.next_cursor}")


def _json(value: Any) -> str:
    return escape(json.dumps(json_safe(value), ensure_ascii=False))


def print_run(
    result: RunResult, family: list[RunResult], ports: Mapping[str, Collection[str]]
) -> None:
    """One run: header, identity, inputs and outcome, trace timeline, log, child tree.
    ``ports`` are each block's port labels: outcomes that are not failures."""
    out = console()
    out.print(
        f"[bold]run {result.run_id}[/]  {escape(result.flow)} v{result.version}  "
        f"{_status(result.status, result.has_errors)}"
    )
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    roles = ", ".join(result.roles) or "-"
    facts.add_row("user", escape(f"{result.user_id or '(anonymous)'}  roles: {roles}"))
    if result.parent_run_id is not None:
        facts.add_row("parent", f"{result.parent_run_id}  (root {result.root_run_id})")
    facts.add_row("depth", str(result.depth))
    facts.add_row("created", when(result.created_at))
    facts.add_row("started", when(result.started_at))
    facts.add_row("finished", f"{when(result.finished_at)}  ({duration(_took(result))})")
    facts.add_row("inputs", _json(result.inputs))
    if result.error is not None:
        error = result.error
        where = f" in block {error.block}" if error.block else ""
        facts.add_row("error", escape(f"[{error.code}] {error.message}{where}"))
    elif result.status is RunStatus.COMPLETED:
        facts.add_row("output", _json(result.output))
    out.print(facts)
    _timeline(out, result, ports)
    if result.log:
        out.print("\n[bold]log[/]")
        for entry in result.log:
            extra = {
                k: v for k, v in entry.items() if k not in ("time", "level", "message", "block")
            }
            tail = f"  {_json(extra)}" if extra else ""
            moment = entry.get("time")
            stamp = when(moment) if isinstance(moment, int | float) else "-"
            out.print(
                f"  {stamp}  {escape(str(entry.get('level', 'info'))):<7}  "
                f"{escape(str(entry.get('block')))}: {escape(str(entry.get('message')))}{tail}"
            )
    if family:
        out.print()
        out.print(_tree(result, family))


def _timeline(out: Console, result: RunResult, ports: Mapping[str, Collection[str]]) -> None:
    """Each trace entry as a row with a bar placed on the run's time axis."""
    if not result.trace:
        out.print("\n[bold]trace[/]  (no blocks ran)")
        return
    origin = min(entry.start for entry in result.trace)
    end = max(entry.start + entry.duration for entry in result.trace)
    span = max(end - origin, 1e-9)
    table = Table(box=None, header_style="bold", pad_edge=False, title_justify="left")
    for name in ("AT", "BLOCK", "TYPE", "TOOK", "OUTCOME", "TIMELINE"):
        table.add_column(name, no_wrap=True)
    for entry in result.trace:
        left = int((entry.start - origin) / span * _BAR)
        width = max(1, round(entry.duration / span * _BAR))
        bar = " " * min(left, _BAR - 1) + "█" * min(width, _BAR - min(left, _BAR - 1))
        good = entry.outcome == "ok" or entry.outcome in ports.get(entry.block, ())
        colour = "green" if good else "yellow" if entry.outcome == "cancelled" else "red"
        table.add_row(
            f"+{duration(entry.start - origin)}",
            escape(entry.block),
            escape(entry.type),
            duration(entry.duration),
            f"[{colour}]{escape(entry.outcome)}[/]",
            f"[{colour}]{bar}[/]",
        )
    out.print("\n[bold]trace[/]")
    out.print(table)


def _tree(result: RunResult, family: list[RunResult]) -> Tree:
    tree = Tree(f"[bold]child runs of {result.run_id}[/]")
    nodes = {result.run_id: tree}
    for child in family:
        parent = nodes.get(child.parent_run_id or "")
        if parent is None:
            continue
        nodes[child.run_id] = parent.add(
            f"{child.run_id}  {escape(child.flow)} v{child.version}  "
            f"{_status(child.status, child.has_errors)}"
            + (f"  {escape(f'[{child.error.code}]')}" if child.error else "")
        )
    return tree


class LiveLine:
    """One line on a terminal's stderr, redrawn in place under the lines printed above
    it, and gone when the block is left (``flowwarden run``'s running block)."""

    def __init__(self) -> None:
        self._live = Live(Text(""), console=console(stderr=True), transient=True)

    def __enter__(self) -> LiveLine:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()

    def print(self, line: str) -> None:
        self._live.console.print(Text(line))

    def update(self, line: str) -> None:
        self._live.update(Text(line, style="dim"))
