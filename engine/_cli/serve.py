"""``flowwarden serve`` and ``flowwarden token add``: the HTTP server and its tokens.

The server's modules are imported only when one of these commands runs, so the other
commands start without loading the web stack.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio

from .common import add_logging_options, add_store_option, env

__all__ = ["add_http_commands"]


def add_http_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve the HTTP API and the web UI of a workspace",
        description="Load WORKSPACE once and serve the Call Flow API, the management API "
        "and the web UI. Tokens come from the workspace's tokens.yaml; each request is "
        "logged as one JSON line on stderr. SIGINT or SIGTERM stops it cleanly.",
        epilog="Exit codes: 0 stopped cleanly; 2 the workspace, the store or the address "
        "cannot be used.",
    )
    serve.add_argument("workspace", metavar="WORKSPACE", type=_workspace)
    serve.add_argument(
        "--host",
        default=env("FLOWWARDEN_HOST", "127.0.0.1"),
        help="address to listen on (127.0.0.1; env FLOWWARDEN_HOST)",
    )
    serve.add_argument(
        "--port",
        type=_port,
        default=env("FLOWWARDEN_PORT", "8080"),
        help="port to listen on (8080; env FLOWWARDEN_PORT)",
    )
    add_store_option(serve, "sqlite in WORKSPACE/.flowwarden.db")
    serve.add_argument(
        "--queue-only",
        action="store_true",
        help="leave activations that do not wait QUEUED in a durable store for "
        "'flowwarden worker' processes instead of running them here",
    )
    add_logging_options(serve)
    serve.set_defaults(command=_serve, verbose=0)

    token = commands.add_parser(
        "token", help="manage the bearer tokens of a workspace", description="Bearer tokens."
    )
    actions = token.add_subparsers(title="actions", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="make a new token for a user",
        description="Make a random token for a user, store only its SHA-256 digest in the "
        "workspace's tokens.yaml and print the token once on stdout.",
        epilog="Exit codes: 0 stored; 2 a bad user or role, or an unusable tokens.yaml.",
    )
    add.add_argument("workspace", metavar="WORKSPACE", type=_workspace)
    add.add_argument("--user", metavar="ID", required=True, help="the token's user id")
    add.add_argument(
        "--role", metavar="R", action="append", default=[], help="a custom role (repeatable)"
    )
    add_logging_options(add)
    add.set_defaults(command=_token_add, verbose=0)


def _workspace(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a workspace directory")
    return path


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number")
    return port


def _serve(args: argparse.Namespace) -> int:
    from .._http.app import serve

    return anyio.run(serve, args.workspace, args.host, args.port, args.store, not args.queue_only)


def _token_add(args: argparse.Namespace) -> int:
    from .._http.auth import add_token
    from .._model.errors import InvalidWorkspace
    from .._runtime.workspace import TOKEN_FILES, config_file

    path = config_file(args.workspace, TOKEN_FILES)
    try:
        token = add_token(path, args.user, args.role)
    except (ValueError, TypeError, InvalidWorkspace) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    print(
        f"stored the token's digest in {path}; the token is shown only this once",
        file=sys.stderr,
    )
    return 0
