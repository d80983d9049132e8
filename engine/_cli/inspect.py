"""``flowwarden check``: who may run a flow and every flow it reaches through Call Flow
blocks (``flowwarden validate`` is in its own module)."""

from __future__ import annotations

import argparse

from .._runtime.engine import Engine
from .._runtime.workspace import load_workspace
from .common import (
    DENIED,
    OK,
    dumps,
    identity_of,
    load_registry,
    notes,
    out,
)

__all__ = ["check"]


# -- check -------------------------------------------------------------------------------


async def check(args: argparse.Namespace) -> int:
    from .._runtime.chain import analyse_chain  # a graph library: only this command needs it

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
