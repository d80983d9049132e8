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
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import anyio
import structlog

from blocks import BlockRegistry
from permissions import Identity

from .._model.document import parse_document
from .._model.errors import (
    ActivationDenied,
    FlowError,
    FlowNotFound,
    FlowNotLive,
    InvalidFlow,
    InvalidInputs,
    Problem,
)
from .._model.limits import NestingTooDeep, loads_json
from .._model.types import RunResult, RunStatus, TraceEntry, VersionStatus, json_safe
from .._runtime.engine import Engine
from .._runtime.workspace import WorkspaceReport, load_workspace
from .serve import add_http_commands
from .worker import add_worker_command

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
    validate.set_defaults(command=lambda args: _inspect().validate(args))

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
    check.set_defaults(command=lambda args: anyio.run(_inspect().check, args))
    add_worker_command(commands)
    add_http_commands(commands)
    return parser


def _inspect() -> Any:
    """The validate and check commands (their module imports this one's helpers)."""
    from . import inspect as _inspect_cmd

    return _inspect_cmd


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
            loaded = loads_json(text)
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
            inputs[key] = loads_json(raw)
        except NestingTooDeep as exc:  # JSON, but refused: not silently taken as text
            raise _UsageError(f"-i {key}: {exc}") from exc
        except ValueError:
            inputs[key] = raw
    return inputs


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


if __name__ == "__main__":
    sys.exit(main())
