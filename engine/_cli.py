"""The ``flowwarden`` command line: run a flow, validate documents, check who may run what.

    flowwarden run WORKSPACE FLOW [-i key=value ...] [--inputs JSON] [--user ID] [--role R ...]
    flowwarden validate PATH ...
    flowwarden check WORKSPACE FLOW [--user ID] [--role R ...]
    flowwarden serve WORKSPACE [--host H] [--port P] [--store URL]
    flowwarden token add WORKSPACE --user ID [--role R ...]

Results go to stdout; progress, warnings and errors to stderr. Exit codes: 0 completed,
valid or allowed; 1 the run failed or was cancelled; 2 bad usage, an invalid document or
invalid inputs; 3 activation denied; 4 flow not found or not LIVE. The workspace is read
afresh on every command. The CLI configures structlog (stderr, WARNING; ``-v`` for info);
the library never does.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import sys
from collections import deque
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO

import anyio
import networkx as nx
import structlog

from blocks import BlockRegistry
from permissions import ANONYMOUS, Identity

from ._document import parse_document, validate_document
from ._engine import Engine
from ._errors import (
    ActivationDenied,
    FlowError,
    FlowNotFound,
    FlowNotLive,
    InvalidFlow,
    InvalidInputs,
    Problem,
)
from ._http_cmd import add_http_commands
from ._types import RunResult, RunStatus, TraceEntry, VersionStatus, json_safe
from ._worker_cmd import add_worker_command
from ._workspace import (
    CONFIG_FILES,
    InvalidWorkspace,
    WorkspaceReport,
    flow_files,
    load_workspace,
    read_permissions,
)

__all__ = ["main"]

OK, FAILED, USAGE, DENIED, NOT_FOUND = 0, 1, 2, 3, 4
_POLL = 0.1  # seconds between progress reads of a running run
_SHOWN = 100  # blocks listed one by one; after that only failures, then a count


class _UsageError(Exception):
    """Bad input on the command line: exit 2 with the message."""


def main(argv: list[str] | None = None) -> int:
    """Run one ``flowwarden`` command and return its exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's usage errors (2) and --help (0)
        return exc.code if isinstance(exc.code, int) else USAGE
    saved = structlog.get_config()
    _configure_logging(args.verbose)
    try:
        code: int = args.command(args)
        return code
    except _UsageError as exc:
        _say(f"error: {exc}")
        return USAGE
    except FlowError as exc:  # an unusable workspace, a bad permissions.yaml, ...
        _say(f"error: {exc}")
        return USAGE
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    finally:
        structlog.configure(**saved)


# -- arguments ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowwarden",
        description="Run flows, validate flow documents and check execution permissions.",
        epilog="Exit codes: 0 ok; 1 run failed or cancelled; 2 bad usage, invalid document "
        "or inputs; 3 activation denied; 4 flow not found or not LIVE.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=0, help="log info events (-vv: debug)"
    )
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--user", metavar="ID", help="the user id to act as (default: anonymous)")
    who.add_argument(
        "--role", metavar="R", action="append", default=[], help="a custom role (repeatable)"
    )

    run = commands.add_parser(
        "run",
        parents=[common, who],
        help="run a flow of a workspace",
        description="Run FLOW of WORKSPACE and print its output as JSON on stdout; the "
        "blocks it runs and any error go to stderr.",
        epilog="Exit codes: 0 completed; 1 failed or cancelled; 2 bad usage, invalid "
        "document or invalid inputs; 3 activation denied; 4 flow not found or not LIVE.",
    )
    run.add_argument("workspace", metavar="WORKSPACE")
    run.add_argument("flow", metavar="FLOW")
    run.add_argument(
        "-i",
        "--input",
        dest="pairs",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="one input; VALUE is parsed as JSON when it parses, else taken as a string "
        "(n=4 is 4, name=Ada is 'Ada'); overrides --inputs",
    )
    run.add_argument("--inputs", metavar="JSON", help="the inputs as one JSON object")
    run.add_argument(
        "--json",
        action="store_true",
        help="print the whole result object, failed runs too (a refused activation prints "
        "nothing on stdout: the exit code and stderr say why)",
    )
    run.add_argument(
        "-q", "--quiet", action="store_true", help="do not list the blocks as they run"
    )
    run.add_argument("--store", metavar="URL", help="the store to use (default: in memory)")
    run.set_defaults(command=lambda args: anyio.run(_run, args))

    validate = commands.add_parser(
        "validate",
        parents=[common],
        help="validate flow documents and workspaces",
        description="Report every problem of every document, one per line with its file "
        "and block. A directory is a workspace: each flow document in it and its "
        "permissions.yaml are checked.",
        epilog="Exit codes: 0 all valid; 2 any problem.",
    )
    validate.add_argument("paths", metavar="PATH", nargs="+", type=Path)
    validate.set_defaults(command=_validate)

    check = commands.add_parser(
        "check",
        parents=[common, who],
        help="check who may run a flow and every flow it calls",
        description="Show the permission decision for FLOW and for every flow it can "
        "reach through call_flow blocks, as the gate would take it now: one line per "
        "flow reached, plus callable_by refusals and call cycles.",
        epilog="Exit codes: 0 every activation in the chain would be allowed; 3 any part "
        "would be refused: denied by permission, callable_by or the depth limit, and also "
        "a flow that does not exist or is not LIVE (a chain that cannot complete is "
        "refused). Cycles are reported but do not change the exit code: the depth limit "
        "bounds recursion at run time.",
    )
    check.add_argument("workspace", metavar="WORKSPACE", type=Path)
    check.add_argument("flow", metavar="FLOW")
    check.set_defaults(command=lambda args: anyio.run(_check, args))
    add_worker_command(commands)
    add_http_commands(commands)
    return parser


def _version() -> str:
    try:
        return f"flowwarden {importlib.metadata.version('flowwarden')}"
    except importlib.metadata.PackageNotFoundError:
        return "flowwarden (not installed)"


def _identity(args: argparse.Namespace) -> Identity:
    try:
        return Identity(user_id=args.user, roles=args.role)
    except ValueError as exc:
        hint = ""
        if "system role" in str(exc):
            hint = " (AuthenticatedUser comes with --user, NonAuthenticatedUser without it)"
        raise _UsageError(f"--user/--role: {exc}{hint}") from exc


def _inputs(pairs: Iterable[str], text: str | None) -> dict[str, Any]:
    """``--inputs`` as the base, each ``-i key=value`` over it."""
    inputs: dict[str, Any] = {}
    if text is not None:
        try:
            loaded = json.loads(text, parse_constant=_no_constant)
        except ValueError as exc:
            raise _UsageError(f"--inputs is not valid JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise _UsageError(f"--inputs must be a JSON object, not {type(loaded).__name__}")
        inputs.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise _UsageError(f"-i expects KEY=VALUE, got {pair!r}")
        try:
            inputs[key] = json.loads(raw, parse_constant=_no_constant)
        except ValueError:
            inputs[key] = raw
    return inputs


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _registry() -> BlockRegistry:
    """Built-ins plus the blocks installed packages publish, so their documents count."""
    try:
        return BlockRegistry.from_entry_points()
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise _UsageError(f"cannot load the blocks of installed packages: {exc}") from exc


# -- output ------------------------------------------------------------------------------


def _say(text: str, stream: TextIO | None = None) -> None:
    """Print a line, degrading characters the stream's encoding cannot show."""
    stream = stream if stream is not None else sys.stderr
    try:
        print(text, file=stream, flush=True)
    except UnicodeEncodeError:
        encoding = stream.encoding or "ascii"
        print(text.encode(encoding, "replace").decode(encoding), file=stream, flush=True)


def _out(text: str) -> None:
    _say(text, sys.stdout)


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _configure_logging(verbosity: int) -> None:
    level = (logging.WARNING, logging.INFO)[verbosity] if verbosity < 2 else logging.DEBUG
    structlog.configure(
        processors=[
            _drop_reported,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            structlog.dev.ConsoleRenderer(
                colors=False, exception_formatter=structlog.dev.plain_traceback
            ),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )


def _drop_reported(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Workspace warnings are printed by the CLI itself, once, without a log prefix."""
    if event.get("event") == "workspace.warning":
        raise structlog.DropEvent
    return event


def _notes(report: WorkspaceReport, held: Callable[[str], bool]) -> list[Problem]:
    """Print the workspace's problems and warnings; return those ``held`` keeps back."""
    kept = []
    for problem in report.problems:
        if problem.file is not None and held(problem.file):
            kept.append(problem)
        else:
            _say(f"warning: {problem}")
    for warning in report.warnings:
        _say(f"warning: {warning}")
    return kept


def _document_flow(file: str) -> str:
    """The flow a document names, or its file stem when it names none."""
    try:
        return str(parse_document(Path(file))["flow"])
    except InvalidFlow:
        return Path(file).stem


# -- run ---------------------------------------------------------------------------------


async def _run(args: argparse.Namespace) -> int:
    identity = _identity(args)
    inputs = _inputs(args.pairs, args.inputs)
    registry = _registry()
    try:
        engine = Engine(args.store, registry=registry)
    except ValueError as exc:
        raise _UsageError(f"--store: {exc}") from exc
    async with engine:
        report = await load_workspace(engine, Path(args.workspace))
        flow: str = args.flow
        owners: dict[str, str] = {}

        def owned(file: str) -> bool:
            if file not in owners:
                owners[file] = _document_flow(file)
            return owners[file] == flow

        own = _notes(report, owned)
        try:
            run_id = await engine.call_flow(
                args.flow, inputs, identity=identity, wait=False, via="cli"
            )
        except ActivationDenied as exc:
            decision = exc.decision
            if decision is not None and not decision.allowed:
                _say(f"activation denied: flow {exc.flow!r} (layer {decision.layer}): {exc.reason}")
            else:
                _say(f"activation denied ({exc.reason}): {exc}")
            return DENIED
        except InvalidInputs as exc:
            if exc.problems:
                _say(f"invalid inputs for flow {exc.flow!r}:")
                for detail in exc.problems:
                    _say(f"  - {detail}")
            else:
                _say(f"invalid inputs: {exc}")
            return USAGE
        except (FlowNotFound, FlowNotLive) as exc:
            return await _not_runnable(engine, exc, own)
        if own:  # another document of this flow is invalid, but a LIVE version runs
            for problem in own:
                _say(f"warning: {problem}")
        result = await _follow(engine, run_id, quiet=args.quiet)
    if args.json:
        _out(_dumps(result.to_json()))
    elif result.status is RunStatus.COMPLETED:
        _out(_dumps(json_safe(result.output)))
    return _report_end(result)


async def _not_runnable(engine: Engine, exc: FlowNotFound | FlowNotLive, own: list[Problem]) -> int:
    """Exit 2 when the flow's document is invalid, else 4 (no such flow, not LIVE)."""
    invalid = []
    if exc.version is not None and isinstance(exc, FlowNotLive):
        info = await engine.get_version(exc.flow, exc.version)
        if info.status is VersionStatus.INVALID:
            invalid = own or list(info.problems)
    elif isinstance(exc, FlowNotFound):
        invalid = own
    if invalid:
        _say(f"error: flow {exc.flow!r} has an invalid document:")
        for problem in invalid:
            _say(f"  - {problem}")
        return USAGE
    _say(f"error: {exc}")
    return NOT_FOUND


async def _follow(engine: Engine, run_id: str, *, quiet: bool) -> RunResult:
    """Wait for the run, listing blocks on stderr as they finish (the first hundred,
    then only failures, so a long loop does not bury the end of the run)."""
    first = await engine.get_run(run_id)
    blocks = (await engine.get_version(first.flow, first.version)).document.get("blocks", {})
    if not quiet:
        _say(f"run {run_id}: {first.flow} v{first.version}")
    seen = 0
    hidden = 0

    def show(entries: Iterable[TraceEntry]) -> None:
        nonlocal seen, hidden
        for entry in entries:
            seen += 1
            ok, line = _trace_line(entry, blocks.get(entry.block, {}))
            if quiet or (ok and seen > _SHOWN):
                hidden += 1
            else:
                _say(line)

    async with anyio.create_task_group() as group:

        async def watch() -> None:
            while True:
                await anyio.sleep(_POLL)
                show((await engine.get_run(run_id)).trace[seen:])

        group.start_soon(watch)
        result = await engine.wait_for(run_id)
        group.cancel_scope.cancel()
    show(result.trace[seen:])
    if hidden and not quiet:
        _say(f"  … {hidden} more blocks ran (--json lists the whole trace)")
    return result


def _trace_line(entry: TraceEntry, block: dict[str, Any]) -> tuple[bool, str]:
    """Whether the block succeeded, and its line: ``  ✓ check (condition) 0.1 ms → then``,
    or ``✗`` with the error code of a failed attempt."""
    ms = entry.duration * 1000
    took = f"{ms:.1f} ms" if ms < 1000 else f"{entry.duration:.2f} s"
    head = f"{entry.block} ({entry.type}) {took}"
    outcome = entry.outcome
    ports = {"then", "else"} if entry.type == "condition" else set()
    if entry.type == "router":
        ports = {*block.get("routes", {}), "default"}
    if outcome == "ok":
        return True, f"  ✓ {head}"
    if outcome in ports:
        return True, f"  ✓ {head} → {outcome}"
    if outcome == "cancelled":
        return False, f"  - {head} cancelled"
    return False, f"  ✗ {head} [{outcome}]"


def _report_end(result: RunResult) -> int:
    where = f"{result.flow} v{result.version}, run {result.run_id}"
    if result.status is RunStatus.COMPLETED:
        handled = " with handled errors (has_errors)" if result.has_errors else ""
        _say(f"completed{handled}: {where}")
        return OK
    error = result.error
    _say(f"{result.status.value.lower()}: {where}")
    if error is not None:
        block = f" (block {error.block!r})" if error.block else ""
        _say(f"error: [{error.code}] {error.message}{block}")
    return FAILED


# -- validate ----------------------------------------------------------------------------


def _validate(args: argparse.Namespace) -> int:
    registry = _registry()
    bad = 0
    for path in args.paths:
        if path.is_dir():
            bad += _validate_workspace(path, registry)
        elif path.is_file():
            bad += _validate_file(path, registry, None)
        else:
            _out(f"{path}: no such file or directory")
            bad += 1
    return USAGE if bad else OK


def _validate_workspace(root: Path, registry: BlockRegistry) -> int:
    names: dict[str, list[str]] = {}
    files = flow_files(root)
    if not files:
        _out(f"{root}: no flow documents in this directory")
        return 1
    bad = sum(_validate_file(path, registry, names) for path in files)
    for name in ("permissions.yaml", "permissions.yml"):
        if (root / name).is_file():
            bad += _validate_file(root / name, registry, names)
    for flow, live in sorted(names.items()):
        if len(live) > 1:
            _say(f"warning: flow {flow!r} is LIVE in {', '.join(live)}; the last one wins")
    return bad


def _validate_file(path: Path, registry: BlockRegistry, names: dict[str, list[str]] | None) -> int:
    """Print the file's problems (or ``ok:``); return 1 when it has any."""
    file = str(path)
    if path.suffix not in (".yaml", ".yml", ".json"):
        _out(f"skipped: {file} (flow documents are .yaml, .yml or .json files)")
        return 0
    if path.name in CONFIG_FILES:
        if not path.name.startswith("permissions"):
            _out(f"skipped: {file} (not a flow document; checked when a server loads it)")
            return 0
        try:
            _, _, warnings = read_permissions(path, set(names) if names is not None else None)
        except InvalidWorkspace as exc:
            for problem in exc.problems:
                _out(str(problem))
            return 1
        for warning in warnings:
            _say(f"warning: {warning}")
        _out(f"ok: {file} (permissions)")
        return 0
    try:
        raw = parse_document(path)
    except InvalidFlow as exc:
        for problem in exc.problems:
            _out(str(problem.in_file(file)))
        return 1
    _, problems = validate_document(raw, registry)
    for problem in problems:
        _out(str(problem.in_file(file)))
    if names is not None:
        names.setdefault(raw["flow"], [])
        if raw.get("status") == "LIVE":
            names[raw["flow"]].append(file)
    if problems:
        return 1
    _out(f"ok: {file} ({raw['flow']})")
    return 0


# -- check -------------------------------------------------------------------------------


_Node = tuple[str, int | None, bool]  # flow, pinned version, narrowed to anonymous


@dataclass(frozen=True)
class _Reach:
    """One way the chain reaches a flow: as whom, through which callers."""

    flow: str
    version: int | None
    anonymous: bool
    chain: tuple[str, ...]
    refused_at: str | None  # an earlier link that the gate would refuse


async def _check(args: argparse.Namespace) -> int:
    identity = _identity(args)
    async with Engine(registry=_registry()) as engine:
        _notes(await load_workspace(engine, args.workspace), lambda _file: False)
        graph = await _call_graph(engine)
        refused = False
        printed: set[tuple[_Node, str | None, bool]] = set()
        allowed_shown: set[tuple[_Node, bool]] = set()  # an ALLOW line is enough once
        reached_cleanly: set[_Node] = set()
        expanded: set[tuple[_Node, bool]] = set()
        pending = deque([_Reach(args.flow, None, identity.is_anonymous, (), None)])
        while pending:
            reach = pending.popleft()
            node = (reach.flow, reach.version, reach.anonymous)
            clean = reach.refused_at is None
            if not clean and node in reached_cleanly:
                continue  # what a refused chain would reach is reported on a live one
            if clean:
                reached_cleanly.add(node)
            narrowed = reach.anonymous and not identity.is_anonymous
            allowed, line = await _verdict(
                engine, reach, ANONYMOUS if reach.anonymous else identity, narrowed
            )
            caller = reach.chain[-1] if reach.chain else None
            if not (allowed and (node, clean) in allowed_shown) and (
                (node, caller, clean) not in printed
            ):
                printed.add((node, caller, clean))
                if not clean:
                    line += f" [not reached: {reach.refused_at} is refused]"
                _out(line)
            if allowed:
                allowed_shown.add((node, clean))
            refused = refused or (clean and not allowed)
            effective = clean and allowed
            if (node, effective) in expanded or reach.flow not in graph:
                continue
            expanded.add((node, effective))
            refused_at = None if effective else reach.refused_at or reach.flow
            for _, target, data in graph.out_edges(reach.flow, data=True):  # document order
                pending.append(
                    _Reach(
                        target,
                        data["version"],
                        reach.anonymous or data["anonymous"],
                        (*reach.chain, reach.flow),
                        refused_at,
                    )
                )
        for cycle in _cycles(graph, args.flow):
            limit = engine.limits.max_depth
            loop = " → ".join([*cycle, cycle[0]])
            _out(f"CYCLE {loop}: recursion, stopped at run time by the depth limit ({limit})")
    return DENIED if refused else OK


def _cycles(graph: nx.MultiDiGraph[str], root: str) -> list[list[str]]:
    """Call cycles reachable from ``root``, each starting at its node nearest the root."""
    if root not in graph:
        return []
    distance = nx.single_source_shortest_path_length(graph, root)
    found: list[list[str]] = []
    cycle: list[str]
    for cycle in nx.simple_cycles(nx.DiGraph(graph.subgraph(distance))):
        start = min(range(len(cycle)), key=lambda i: (distance[cycle[i]], cycle[i]))
        found.append(cycle[start:] + cycle[:start])
    return sorted(found, key=lambda cycle: (len(cycle), cycle))


async def _call_graph(engine: Engine) -> nx.MultiDiGraph[str]:
    """Flows (LIVE versions) and their call_flow blocks as edges."""
    graph: nx.MultiDiGraph[str] = nx.MultiDiGraph()
    for flow in await engine.list_flows():
        for info in await engine.list_versions(flow):
            if info.status is not VersionStatus.LIVE:
                continue
            graph.add_node(flow)
            for block_id, block in info.document.get("blocks", {}).items():
                if isinstance(block, dict) and block.get("type") == "call_flow":
                    graph.add_edge(
                        flow,
                        block["flow"],
                        block=str(block_id),
                        version=block.get("version"),
                        anonymous=block.get("identity") == "anonymous",
                    )
    return graph


async def _verdict(
    engine: Engine, reach: _Reach, identity: Identity, narrowed: bool
) -> tuple[bool, str]:
    """The gate's checks for one reach, in the gate's order, as a line."""
    flow = reach.flow
    caller = reach.chain[-1] if reach.chain else None
    name = flow if reach.version is None else f"{flow} v{reach.version}"
    via = f" via {' → '.join(reach.chain)}" if reach.chain else ""
    who = " as anonymous" if narrowed else ""
    decision = await engine.permissions.resolve(flow, identity)
    layer = f"(layer {decision.layer})"
    if not decision.allowed:
        return False, f"DENY {name} {layer}{who}{via}: {decision.reason}"
    selected = await engine.store.select_version(flow, reach.version)
    if selected is None:
        missing = f"flow {flow!r} does not exist"
        if reach.version is not None:
            missing = f"flow {flow!r} has no version {reach.version}"
        return False, f"NOT-FOUND {name}{who}{via}: {missing}"
    version, status = selected
    if status is not VersionStatus.LIVE:
        return False, f"NOT-LIVE {name}{who}{via}: version {version} is {status.value}"
    info = await engine.get_version(flow, version)
    callable_by = info.document.get("callable_by")
    if caller is not None and isinstance(callable_by, list) and caller not in callable_by:
        allowed_callers = ", ".join(callable_by) or "no flow (external activation only)"
        return False, f"DENY {name} (callable_by){who}{via}: callable only by {allowed_callers}"
    if len(reach.chain) > engine.limits.max_depth:
        limit = engine.limits.max_depth
        return False, f"DENY {name} (depth limit){who}{via}: deeper than {limit}"
    return True, f"ALLOW {name} {layer}{who}{via}: {decision.reason}"


if __name__ == "__main__":
    sys.exit(main())
