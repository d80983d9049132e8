"""``flowwarden run``: run a flow of a workspace, following its blocks on stderr."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from blocks import BlockRegistry

from .._model.errors import (
    ActivationDenied,
    FlowNotFound,
    FlowNotLive,
    InvalidInputs,
    Problem,
    suggestion,
)
from .._model.types import RunResult, RunStatus, TraceEntry, VersionStatus, json_safe
from .._runtime.engine import Engine
from .._runtime.workspace import WorkspaceReport, load_workspace, summary
from .common import (
    DENIED,
    FAILED,
    NOT_FOUND,
    OK,
    USAGE,
    UsageError,
    document_flow,
    dumps,
    identity_of,
    inputs_of,
    load_registry,
    notes,
    out,
    say,
    workspace_store,
)

if TYPE_CHECKING:
    from .views import LiveLine

__all__ = ["run"]

_POLL = 0.1  # seconds between progress reads of a running run
_SHOWN = 100  # blocks listed one by one; after that only failures, then a count


async def run(args: argparse.Namespace) -> int:
    """Run the flow; the exit code says how it ended."""
    identity = identity_of(args)
    inputs = inputs_of(args.pairs, args.inputs)
    registry = load_registry()
    store = workspace_store(Path(args.workspace), args.store, create=True)
    try:
        engine = Engine(store, registry=registry)
    except ValueError as exc:
        raise UsageError(f"--store: {exc}") from exc
    async with engine:
        report = await load_workspace(engine, Path(args.workspace))
        flow: str = args.flow
        owners: dict[str, str] = {}

        def owned(file: str) -> bool:
            if file not in owners:
                owners[file] = document_flow(file)
            return owners[file] == flow

        own = notes(report, owned)
        try:
            run_id = await engine.call_flow(
                args.flow, inputs, identity=identity, wait=False, via="cli"
            )
        except ActivationDenied as exc:
            decision = exc.decision
            if decision is not None and not decision.allowed:
                say(f"activation denied: flow {exc.flow!r} (layer {decision.layer}): {exc.reason}")
            else:
                say(f"activation denied ({exc.reason}): {exc}")
            return DENIED
        except InvalidInputs as exc:
            if exc.problems:
                say(f"invalid inputs for flow {exc.flow!r}:")
                for detail in exc.problems:
                    say(f"  - {detail}")
            else:
                say(f"invalid inputs: {exc}")
            return USAGE
        except (FlowNotFound, FlowNotLive) as exc:
            return await _not_runnable(engine, exc, own)
        if own:  # another document of this flow is invalid, but a LIVE version runs
            for file, problems in WorkspaceReport(problems=own).broken().items():
                say(f"warning: {summary(file, problems)}")
        result = await _follow(engine, run_id, quiet=args.quiet)
    if args.json:
        out(dumps(result.to_json()))
    elif result.status is RunStatus.COMPLETED:
        out(dumps(json_safe(result.output)))
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
        say(f"error: flow {exc.flow!r} has an invalid document:")
        for problem in invalid:
            say(f"  - {problem}")
        return USAGE
    hint = ""
    if isinstance(exc, FlowNotFound) and exc.version is None:  # the workspace is readable
        hint = suggestion(exc.flow, await engine.list_flows())  # by whoever runs this
    say(f"error: {exc}{hint.replace(' (', '; ', 1).rstrip(')') if hint else ''}")
    return NOT_FOUND


async def _follow(engine: Engine, run_id: str, *, quiet: bool) -> RunResult:
    """Wait for the run, listing blocks on stderr as they finish (the first hundred,
    then only failures, so a long loop does not bury the end of the run)."""
    first = await engine.get_run(run_id)
    blocks = (await engine.get_version(first.flow, first.version)).document.get("blocks", {})
    if not quiet:
        say(f"run {run_id}: {first.flow} v{first.version}")
    seen = 0
    hidden = 0

    # on a terminal, a live line under the list says which block is running now
    live: LiveLine | None = None
    if not quiet and sys.stderr.isatty():
        from .views import LiveLine  # rich: loaded only to draw on a terminal

        live = LiveLine()

    def show(entries: Iterable[TraceEntry]) -> None:
        nonlocal seen, hidden
        for entry in entries:
            seen += 1
            ok, line = _trace_line(entry, _path_ports(engine.registry, blocks.get(entry.block)))
            if quiet or (ok and seen > _SHOWN):
                hidden += 1
            elif live is not None:
                live.print(line)
            else:
                say(line)

    with live if live is not None else contextlib.nullcontext():
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                while True:
                    await anyio.sleep(_POLL)
                    now = await engine.get_run(run_id)
                    show(now.trace[seen:])
                    if live is not None:
                        live.update(_running(engine, run_id, now, blocks))

            group.start_soon(watch)
            result = await engine.wait_for(run_id)
            group.cancel_scope.cancel()
    show(result.trace[seen:])
    if hidden and not quiet:
        say(f"  … {hidden} more blocks ran (--json lists the whole trace)")
    return result


def _running(engine: Engine, run_id: str, now: RunResult, blocks: dict[str, Any]) -> str:
    """The live line: the blocks the run's paths stand at, and for how long it has run."""
    active = engine.local_run(run_id)
    at = [b for b in (active.state.positions.values() if active else ()) if b is not None]
    if not at and now.trace:
        at = [now.trace[-1].block]
    named = ", ".join(f"{b} ({blocks.get(b, {}).get('type', '?')})" for b in at[:3])
    took = time.time() - (now.started_at or now.created_at)
    return f"  … running {named or now.flow} — {took:.1f} s"


def _trace_line(entry: TraceEntry, ports: frozenset[str]) -> tuple[bool, str]:
    """Whether the block succeeded, and its line: ``  ✓ check (condition) 0.1 ms → then``,
    or ``✗`` with the error code of a failed attempt. ``ports`` are the labels of the
    block's ports its path may go on through."""
    ms = entry.duration * 1000
    took = f"{ms:.1f} ms" if ms < 1000 else f"{entry.duration:.2f} s"
    head = f"{entry.block} ({entry.type}) {took}"
    outcome = entry.outcome
    if outcome == "ok":
        return True, f"  ✓ {head}"
    if outcome in ports:
        return True, f"  ✓ {head} → {outcome}"
    if outcome == "cancelled":
        return False, f"  - {head} cancelled"
    return False, f"  ✗ {head} [{outcome}]"


def _path_ports(registry: BlockRegistry, block: Any) -> frozenset[str]:
    """The labels of the ports a raw block's path may continue through."""
    kind = block.get("type") if isinstance(block, dict) else None
    definition = registry.get(kind) if isinstance(kind, str) else None
    if definition is None:
        return frozenset()
    return frozenset(p.label for p in definition.params.raw_ports(block) if p.role == "path")


def _report_end(result: RunResult) -> int:
    where = f"{result.flow} v{result.version}, run {result.run_id}"
    if result.status is RunStatus.COMPLETED:
        handled = " with handled errors (has_errors)" if result.has_errors else ""
        say(f"completed{handled}: {where}")
        return OK
    error = result.error
    say(f"{result.status.value.lower()}: {where}")
    if error is not None:
        block = f" (block {error.block!r})" if error.block else ""
        say(f"error: [{error.code}] {error.message}{block}")
    return FAILED
