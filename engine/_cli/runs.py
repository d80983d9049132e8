"""``flowwarden runs``, ``runs prune``, ``show``, ``cancel`` and ``graph``: seeing the
runs a workspace's store keeps, and a flow's block graph.

A WORKSPACE argument means its store, ``WORKSPACE/.flowwarden.db``; ``--store`` names
another. These commands read runs: a workspace that has no store file yet has no runs,
and none is created for it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anyio

from .._model.errors import FlowError, InvalidFlow, RunNotFound
from .._model.types import RunResult, RunStatus
from .._runtime.engine import Engine
from .._runtime.workspace import load_workspace
from .common import (
    FAILED,
    NOT_FOUND,
    OK,
    USAGE,
    UsageError,
    add_store_option,
    dumps,
    load_registry,
    notes,
    out,
    say,
    workspace_store,
)

__all__ = ["PRUNE", "add_runs_commands"]

PRUNE = "runs-prune"
"""The parser name ``runs prune`` is dispatched to (``main`` rewrites the words)."""
_CANCEL_POLL = 0.1


def _engine(args: argparse.Namespace, *, create: bool = False) -> Engine:
    url = workspace_store(args.workspace, args.store, create=create)
    try:
        return Engine(url, registry=load_registry())
    except ValueError as exc:
        raise UsageError(f"--store: {exc}") from exc


def _workspace(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a workspace directory")
    return path


def add_runs_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    runs = commands.add_parser(
        "runs",
        parents=[common],
        help="list the runs a workspace's store keeps, newest first",
        description="A table of runs, newest first: run id, flow and version, status, "
        "user, start, duration, error code. 'flowwarden runs prune WORKSPACE "
        "--older-than DAYS' removes old finished runs.",
    )
    runs.add_argument("workspace", metavar="WORKSPACE", type=_workspace)
    runs.add_argument("--flow", metavar="F", help="only runs of this flow")
    runs.add_argument(
        "--status",
        metavar="S",
        action="append",
        type=str.upper,
        choices=[s.value for s in RunStatus],
        help="only runs with this status (repeatable)",
    )
    runs.add_argument("--user", metavar="ID", help="only runs of this user id")
    runs.add_argument("--limit", metavar="N", type=int, default=50, help="at most N runs (50)")
    runs.add_argument("--cursor", metavar="C", help="the next_cursor of a previous --json page")
    runs.add_argument("--json", action="store_true", help="print the page as one JSON object")
    add_store_option(runs, "WORKSPACE/.flowwarden.db")
    runs.set_defaults(command=lambda args: anyio.run(_runs, args))

    prune = commands.add_parser(
        PRUNE,
        parents=[common],
        prog="flowwarden runs prune",
        help="(flowwarden runs prune) remove finished runs older than DAYS",
        description="Remove the finished runs created more than DAYS days ago, with their "
        "traces; print how many were removed.",
    )
    prune.add_argument("workspace", metavar="WORKSPACE", type=_workspace)
    prune.add_argument("--older-than", metavar="DAYS", type=float, required=True)
    add_store_option(prune, "WORKSPACE/.flowwarden.db")
    prune.set_defaults(command=lambda args: anyio.run(_prune, args))

    show = commands.add_parser(
        "show",
        parents=[common],
        help="show one run: identity, inputs, outcome, trace, log, child runs",
        description="The run's header, identity, inputs, output or error, its trace as a "
        "timeline, its log and its child runs as a tree.",
        epilog="Exit codes: 0 shown; 4 no such run.",
    )
    show.add_argument("workspace", metavar="WORKSPACE", type=_workspace)
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument(
        "--json", action="store_true", help="print the run as GET /api/runs/{id} does"
    )
    add_store_option(show, "WORKSPACE/.flowwarden.db")
    show.set_defaults(command=lambda args: anyio.run(_show, args))

    cancel = commands.add_parser(
        "cancel",
        parents=[common],
        help="cancel a run and wait until it has ended",
        description="Ask for the run to be cancelled and wait until it is CANCELLED; a "
        "run that has already finished is left as it is. Its status is printed.",
        epilog="Exit codes: 0 cancelled or already finished; 1 still running when the "
        "wait ran out; 4 no such run.",
    )
    cancel.add_argument("workspace", metavar="WORKSPACE", type=_workspace)
    cancel.add_argument("run_id", metavar="RUN_ID")
    cancel.add_argument(
        "--wait", metavar="SECONDS", type=float, default=30.0, help="how long to wait (30)"
    )
    add_store_option(cancel, "WORKSPACE/.flowwarden.db")
    cancel.set_defaults(command=lambda args: anyio.run(_cancel, args))

    graph = commands.add_parser(
        "graph",
        parents=[common],
        help="print a flow's block graph as Mermaid or Graphviz DOT text",
        description="One node per block (its id and type), one edge per next, port and "
        "on_error, labelled with the port. With --run, the blocks that run executed have "
        "the class 'executed' and those that failed 'failed'.",
        epilog="Exit codes: 0 printed; 2 the version is invalid; 4 no such flow, version or run.",
    )
    graph.add_argument("workspace", metavar="WORKSPACE", type=_workspace)
    graph.add_argument("flow", metavar="FLOW")
    graph.add_argument("--version", metavar="N", type=int, help="(default: the LIVE one)")
    graph.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    graph.add_argument("--run", metavar="RUN_ID", help="mark what this run executed")
    add_store_option(graph, "WORKSPACE/.flowwarden.db")
    graph.set_defaults(command=lambda args: anyio.run(_graph, args))


async def _runs(args: argparse.Namespace) -> int:
    async with _engine(args) as engine:
        try:
            page = await engine.list_runs(
                flow=args.flow,
                status=args.status,
                user_id=args.user,
                limit=args.limit,
                cursor=args.cursor,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    if args.json:
        out(dumps(page.to_json()))
    else:
        from .views import print_runs  # rich: loaded only by the commands that draw

        print_runs(page)
    return OK


async def _prune(args: argparse.Namespace) -> int:
    if not args.older_than >= 0:
        raise UsageError("--older-than must be a number of days, 0 or more")
    async with _engine(args) as engine:
        removed = await engine.prune_runs(before=time.time() - args.older_than * 86400)
    out(f"removed {removed} finished run{'s' if removed != 1 else ''}")
    return OK


async def _show(args: argparse.Namespace) -> int:
    async with _engine(args) as engine:
        try:
            result = await engine.get_run(args.run_id)
        except RunNotFound:
            say(f"error: no run {args.run_id!r}")
            return NOT_FOUND
        family = await _descendants(engine, result)
        ports = await _ports(engine, result)
    if args.json:
        out(dumps(result.to_json()))
    else:
        from .views import print_run

        print_run(result, family, ports)
    return OK


async def _ports(engine: Engine, result: RunResult) -> dict[str, set[str]]:
    """Each block's port labels in the run's version (none if it cannot be read)."""
    try:
        document = (await engine.program(result.flow, result.version)).document
    except FlowError:
        return {}
    return {
        block_id: {port.label for port in spec.params.ports()}
        for block_id, spec in document.blocks.items()
    }


async def _descendants(engine: Engine, result: RunResult) -> list[RunResult]:
    """The run's child runs, their children and so on (parents before children)."""
    root = result.root_run_id or result.run_id
    found, cursor = [], None
    while True:
        page = await engine.list_runs(root_run_id=root, limit=500, cursor=cursor)
        found.extend(page.runs)
        cursor = page.next_cursor
        if cursor is None:
            break
    below = {result.run_id}
    family = []
    for summary in sorted(found, key=lambda run: (run.depth, run.created_at)):
        if summary.parent_run_id in below:
            below.add(summary.run_id)
            family.append(await engine.get_run(summary.run_id))
    return family


async def _cancel(args: argparse.Namespace) -> int:
    async with _engine(args) as engine:
        try:
            await engine.cancel(args.run_id)
            result = await engine.get_run(args.run_id)
            with anyio.move_on_after(args.wait):
                while not result.status.finished:
                    await anyio.sleep(_CANCEL_POLL)
                    result = await engine.get_run(args.run_id)
        except RunNotFound:
            say(f"error: no run {args.run_id!r}")
            return NOT_FOUND
    out(result.status.value)
    if not result.status.finished:
        say(
            f"the run is still {result.status.value} after {args.wait:g} s; it ends once "
            "the process running it sees the request"
        )
        return FAILED
    return OK


async def _graph(args: argparse.Namespace) -> int:
    async with _engine(args) as engine:
        notes(await load_workspace(engine, args.workspace), lambda _file: False)
        run = None
        if args.run is not None:
            try:
                run = await engine.get_run(args.run)
            except RunNotFound:
                say(f"error: no run {args.run!r}")
                return NOT_FOUND
            if run.flow != args.flow:
                say(f"error: run {args.run} is a run of flow {run.flow!r}, not {args.flow!r}")
                return USAGE
        version = args.version if args.version is not None else run.version if run else None
        selected = await engine.store.select_version(args.flow, version)
        if selected is None:
            which = f"version {version} of flow" if version is not None else "flow"
            say(f"error: no {which} {args.flow!r}")
            return NOT_FOUND
        try:
            document = (await engine.program(args.flow, selected[0])).document
        except InvalidFlow as exc:
            say(f"error: {args.flow} v{selected[0]} is invalid:")
            for problem in exc.problems:
                say(f"  - {problem}")
            return USAGE
    from .._runtime.graph import marks, render  # only this command draws graphs

    executed, failed = marks(document, run) if run is not None else (set(), set())
    out(render(document, args.format, executed=executed, failed=failed).rstrip("\n"))
    return OK
