"""What every ``flowwarden`` command shares: exit codes, output, identity and inputs
options, the block registry, logging."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, MutableMapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TextIO

from blocks import BlockRegistry
from permissions import Identity

from .._model.document import parse_document
from .._model.errors import InvalidFlow, Problem
from .._model.limits import NestingTooDeep, loads_json
from .._model.logs import configured, settle
from .._runtime.workspace import STORE_FILE, WorkspaceReport, store_url, summary

OK, FAILED, USAGE, DENIED, NOT_FOUND = 0, 1, 2, 3, 4


class UsageError(Exception):
    """Bad input on the command line: exit 2 with the message."""


class VersionAction(argparse.Action):
    """``--version``: the installed version, looked up when asked for, not by every
    command that builds the parser."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "show program's version number and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        out(version_text())
        parser.exit()


def version_text() -> str:
    try:
        return f"flowwarden {importlib.metadata.version('flowwarden')}"
    except importlib.metadata.PackageNotFoundError:
        return "flowwarden (not installed)"


def identity_of(args: argparse.Namespace) -> Identity:
    try:
        return Identity(user_id=args.user, roles=args.role)
    except ValueError as exc:
        hint = ""
        if "system role" in str(exc):
            hint = " (AuthenticatedUser comes with --user, NonAuthenticatedUser without it)"
        raise UsageError(f"--user/--role: {exc}{hint}") from exc


def inputs_of(pairs: Iterable[str], text: str | None) -> dict[str, Any]:
    """``--inputs`` as the base, each ``-i key=value`` over it."""
    inputs: dict[str, Any] = {}
    if text is not None:
        try:
            loaded = loads_json(text)
        except ValueError as exc:
            raise UsageError(f"--inputs is not valid JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise UsageError(f"--inputs must be a JSON object, not {type(loaded).__name__}")
        inputs.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"-i expects KEY=VALUE, got {pair!r}")
        try:
            inputs[key] = loads_json(raw)
        except NestingTooDeep as exc:  # JSON, but refused: not silently taken as text
            raise UsageError(f"-i {key}: {exc}") from exc
        except ValueError:
            inputs[key] = raw
    return inputs


def load_registry() -> BlockRegistry:
    """Built-ins plus the blocks installed packages publish, so their documents count."""
    try:
        registry = BlockRegistry.from_entry_points()
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        raise UsageError(f"cannot load the blocks of installed packages: {exc}") from exc
    settle()  # a plugin that imported structlog logs with the command's configuration
    return registry


# -- output ------------------------------------------------------------------------------


def say(text: str, stream: TextIO | None = None) -> None:
    """Print a line, degrading characters the stream's encoding cannot show."""
    stream = stream if stream is not None else sys.stderr
    try:
        print(text, file=stream, flush=True)
    except UnicodeEncodeError:
        encoding = stream.encoding or "ascii"
        print(text.encode(encoding, "replace").decode(encoding), file=stream, flush=True)


def out(text: str) -> None:
    say(text, sys.stdout)


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


LOG_LEVELS = ("debug", "info", "warning", "error")


def env(name: str, default: str | None = None) -> str | None:
    """An option's default from the environment (an empty variable counts as unset)."""
    return os.environ.get(name) or default


def add_logging_options(parser: argparse.ArgumentParser) -> None:
    """``--log-format`` and ``--log-level``, which every command takes."""
    parser.add_argument(
        "--log-format",
        choices=("console", "json"),
        default=env("FLOWWARDEN_LOG_FORMAT", "console"),
        help="console lines or one JSON object a line (env FLOWWARDEN_LOG_FORMAT)",
    )
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default=env("FLOWWARDEN_LOG_LEVEL"),
        help="the lowest level logged (default warning; -v info, -vv debug; env "
        "FLOWWARDEN_LOG_LEVEL)",
    )


def add_store_option(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--store",
        metavar="URL",
        default=env("FLOWWARDEN_STORE"),
        help=f"the store: sqlite:///PATH, postgresql://… or memory: (default: {default}; "
        "env FLOWWARDEN_STORE)",
    )


def workspace_store(workspace: Path, url: str | None, *, create: bool) -> str:
    """The store a command on ``workspace`` uses: ``url``, else the workspace's own file.

    Without ``create`` a workspace that has no store file yet gets an empty in-memory
    one (reading runs creates nothing); with it, a workspace folder that cannot be
    written to does too, with a warning, so a read-only checkout still runs flows.
    """
    if url is not None:
        return url
    if (workspace / STORE_FILE).exists():
        return store_url(workspace)
    if create and workspace.is_dir() and os.access(workspace, os.W_OK | os.X_OK):
        return store_url(workspace)
    if create and workspace.is_dir():
        say(f"warning: {workspace} is not writable: the run is not kept (--store names a store)")
    return "memory:"


def logging_configured(
    verbosity: int, log_format: str = "console", log_level: str | None = None
) -> AbstractContextManager[None]:
    """structlog configured for one command (stderr, the format and level asked for),
    and left as it was found afterwards. structlog is imported only once an event at
    that level is emitted: a quiet run does not load it."""
    if log_level is not None:
        level = getattr(logging, log_level.upper())
    else:
        level = (logging.WARNING, logging.INFO)[verbosity] if verbosity < 2 else logging.DEBUG
    return configured(level, lambda: _configure(level, log_format))


def _configure(level: int, log_format: str) -> None:
    import structlog
    import structlog.tracebacks

    renderer: Any
    stamp: Any
    if log_format == "json":
        from .._model.jsontext import UtcStamper, log_line

        stamp = UtcStamper()

        renderer = structlog.processors.JSONRenderer(serializer=log_line)
        middle: list[Any] = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        ]
    else:
        stamp = structlog.processors.TimeStamper(fmt="%H:%M:%S")
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
        middle = []
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _drop_reported,
            structlog.processors.add_log_level,
            stamp,
            *middle,
            renderer,
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
        import structlog

        raise structlog.DropEvent
    return event


def notes(report: WorkspaceReport, held: Callable[[str], bool]) -> list[Problem]:
    """Print one warning line per broken document and the workspace's warnings;
    return the problems of the documents ``held`` keeps back (shown in full)."""
    kept = []
    for file, problems in report.broken().items():
        if file and held(file):
            kept.extend(problems)
        else:
            say(f"warning: {summary(file, problems)}")
    for warning in report.warnings:
        say(f"warning: {warning}")
    return kept


def document_flow(file: str) -> str:
    """The flow a document names, or its file stem when it names none."""
    try:
        return str(parse_document(Path(file))["flow"])
    except InvalidFlow:
        return Path(file).stem
