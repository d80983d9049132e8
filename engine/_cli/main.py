"""The ``flowwarden`` command line: run a flow, validate documents, check who may run what.

    flowwarden run WORKSPACE FLOW [-i key=value ...] [--inputs JSON] [--user ID] [--role R ...]
    flowwarden validate PATH ... [--json]
    flowwarden check WORKSPACE FLOW [--user ID] [--role R ...]
    flowwarden serve WORKSPACE [--host H] [--port P] [--store URL]
    flowwarden token add WORKSPACE --user ID [--role R ...]
    flowwarden schema
    flowwarden runs WORKSPACE [--flow F] [--status S ...] [--user ID] [--limit N] [--json]
    flowwarden runs prune WORKSPACE --older-than DAYS
    flowwarden show WORKSPACE RUN_ID [--json]
    flowwarden cancel WORKSPACE RUN_ID
    flowwarden graph WORKSPACE FLOW [--version N] [--format mermaid|dot] [--run RUN_ID]

Results go to stdout; progress, warnings and errors to stderr. Exit codes: 0 completed,
valid or allowed; 1 the run failed or was cancelled; 2 bad usage, an invalid document or
invalid inputs; 3 activation denied; 4 flow not found or not LIVE (or no such run). The
workspace is read afresh on every command. The CLI configures structlog (stderr,
WARNING; ``-v`` for info, ``--log-level``, ``--log-format json``); the library never does.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import sys
from pathlib import Path

import anyio

from .._model.errors import FlowError
from . import inspect
from .common import (
    USAGE,
    UsageError,
    VersionAction,
    add_logging_options,
    add_store_option,
    logging_configured,
    say,
)
from .run import run as run_flow
from .runs import PRUNE, add_runs_commands
from .schema import add_schema_command
from .serve import add_http_commands
from .validate import validate as validate_paths
from .worker import add_worker_command

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run one ``flowwarden`` command and return its exit code."""
    _skip_final_collection()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["runs", "prune"]:  # a command of its own, under the runs command
        argv[:2] = [PRUNE]
    parser = _parser(argv[0] if argv else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse's usage errors (2) and --help (0)
        return exc.code if isinstance(exc.code, int) else USAGE
    verbosity, log_format = args.verbose, getattr(args, "log_format", "console")
    with logging_configured(verbosity, log_format, getattr(args, "log_level", None)):
        try:
            code: int = args.command(args)
            return code
        except UsageError as exc:
            say(f"error: {exc}")
            return USAGE
        except FlowError as exc:  # an unusable workspace, a bad permissions.yaml, ...
            say(f"error: {exc}")
            return USAGE
        except KeyboardInterrupt:
            say("interrupted")
            return 130


def _skip_final_collection() -> None:
    """At exit, freeze what the command built (modules, models, compiled expressions)
    so that the interpreter's last collection does not walk it all only for the process
    to end: a short command spends a fifth of its time there otherwise. Registered at
    exit, not now, so that a process that runs commands in turn (tests) collects as
    usual until it ends; registering again replaces the one handler. Finalizers still
    run: :mod:`weakref` finalizers, logging's flush and every other exit handler."""
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


# -- arguments ---------------------------------------------------------------------------


_COMMANDS = frozenset(
    {"run", "validate", "check", "runs", PRUNE, "show", "cancel", "graph", "worker", "serve"}
    | {"token", "schema"}
)


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``command`` alone when it names one: parsing
    a command's arguments needs no other command's parser, and building them all is
    most of the parser's cost. Help and an unknown word get every command."""

    def wanted(*names: str) -> bool:
        return command not in _COMMANDS or command in names

    parser = argparse.ArgumentParser(
        prog="flowwarden",
        description="Run flows, validate flow documents and check execution permissions.",
        epilog="Exit codes: 0 ok; 1 run failed or cancelled; 2 bad usage, invalid document "
        "or inputs; 3 activation denied; 4 flow not found or not LIVE.",
    )
    parser.add_argument("--version", action=VersionAction)
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=0, help="log info events (-vv: debug)"
    )
    add_logging_options(common)
    who = argparse.ArgumentParser(add_help=False)
    who.add_argument("--user", metavar="ID", help="the user id to act as (default: anonymous)")
    who.add_argument(
        "--role", metavar="R", action="append", default=[], help="a custom role (repeatable)"
    )

    if wanted("run"):
        _add_run(commands, [common, who])
    if wanted("validate"):
        _add_validate(commands, [common])
    if wanted("check"):
        _add_check(commands, [common, who])
    if wanted("runs", PRUNE, "show", "cancel", "graph"):
        add_runs_commands(commands, common)
    if wanted("worker"):
        add_worker_command(commands)
    if wanted("serve", "token"):
        add_http_commands(commands)
    if wanted("schema"):
        add_schema_command(commands, [common])
    return parser


def _add_run(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    run = commands.add_parser(
        "run",
        parents=parents,
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
    add_store_option(run, "WORKSPACE/.flowwarden.db; memory: keeps nothing")
    run.set_defaults(command=lambda args: anyio.run(run_flow, args))


def _add_validate(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    validate = commands.add_parser(
        "validate",
        parents=parents,
        help="validate flow documents and workspaces",
        description="Report every problem of every document, one per line with its file "
        "and block. A directory is a workspace: each flow document in it and its "
        "permissions.yaml are checked.",
        epilog="Exit codes: 0 all valid; 2 any problem.",
    )
    validate.add_argument("paths", metavar="PATH", nargs="+", type=Path)
    validate.add_argument(
        "--json",
        action="store_true",
        help='print {"ok": bool, "files": [{"file", "flow", "problems": [...]}]} instead',
    )
    validate.set_defaults(command=validate_paths)


def _add_check(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    check = commands.add_parser(
        "check",
        parents=parents,
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
    check.add_argument(
        "--json",
        action="store_true",
        help='print {"allowed": …, "chain": [{"flow", "called_from", "allowed", "layer", '
        '"reason", "problem"}…]} instead of lines',
    )
    check.set_defaults(command=lambda args: anyio.run(inspect.check, args))


if __name__ == "__main__":
    sys.exit(main())
