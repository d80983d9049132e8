"""The block graph of a document: unknown targets, unreachable blocks, ``break``
outside a loop. Blocks that did not validate take part as far as their fields read, so
a problem in one block never hides the problems of another.

Reachability is a plain walk over the targets: every ``flowwarden run`` validates its
documents, and a graph library costs more to import than the walk costs to run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from blocks import BlockRegistry, Port

from .errors import Problem, suggestion

__all__ = ["graph_problems"]

_CONTEXTS = {"body": "loop", "branch": "branch"}


class _Links:
    """What one block leads to: its type, ``(field, target)`` pairs and the entries of
    the loop bodies and parallel branches it starts, with their context."""

    __slots__ = ("bodies", "targets", "type")

    def __init__(self, kind: Any, ports: list[Port], common: Mapping[str, Any]) -> None:
        self.type = kind  # None for a block that did not validate: already reported
        found = {name: common.get(name) for name in ("next", "on_error")}
        found.update((port.field, port.target) for port in ports)
        self.targets = [(name, target) for name, target in found.items() if isinstance(target, str)]
        self.bodies = [
            (_CONTEXTS[port.role], port.target)
            for port in ports
            if port.role in _CONTEXTS and isinstance(port.target, str)
        ]


def _links(block: Any, spec: Any, registry: BlockRegistry) -> _Links:
    if spec is not None:
        common = {"next": spec.next, "on_error": spec.on_error}
        return _Links(spec.type, list(spec.params.ports()), common)
    if not isinstance(block, Mapping):
        return _Links(None, [], {})
    kind = block.get("type")  # the block's own problems are reported; it still leads on
    definition = registry.get(kind) if isinstance(kind, str) else None
    if definition is not None:
        return _Links(None, list(definition.params.raw_ports(block)), block)
    ports: dict[str, Port] = {}  # an unknown type: whatever port any known type declares
    for name in registry:
        other = registry.get(name)
        if other is not None:
            ports.update((port.field, port) for port in other.params.raw_ports(block))
    return _Links(None, list(ports.values()), block)


def graph_problems(
    start: str | None,
    blocks_raw: Mapping[str, Any],
    specs: Mapping[str, Any],
    registry: BlockRegistry,
) -> list[Problem]:
    """Unknown targets (with the closest block id), blocks unreachable from ``start``,
    ``break`` outside a loop or across a parallel branch."""
    problems: list[Problem] = []
    ids = [str(block_id) for block_id in blocks_raw]
    links = {
        str(block_id): _links(body, specs.get(str(block_id)), registry)
        for block_id, body in blocks_raw.items()
    }
    for block_id, link in links.items():
        for field, target in link.targets:
            if target not in links:
                message = f"unknown target block {target!r}{suggestion(target, ids)}"
                problems.append(Problem(message, block_id, field))
    if start is None:
        return problems
    if start not in links:
        message = f"start block {start!r} does not exist{suggestion(start, ids)}"
        problems.append(Problem(message, field="start"))
        return problems
    reachable = _reachable(start, links)
    for block_id in links:
        if block_id not in reachable:
            problems.append(Problem("unreachable from the start block", block_id))
    problems.extend(_break_problems(start, links))
    return problems


def _reachable(start: str, links: Mapping[str, _Links]) -> set[str]:
    """The blocks some path of targets leads to from ``start``, ``start`` included."""
    reached = {start}
    pending = [start]
    while pending:
        for _, target in links[pending.pop()].targets:
            if target in links and target not in reached:
                reached.add(target)
                pending.append(target)
    return reached


def _break_problems(start: str, links: Mapping[str, _Links]) -> list[Problem]:
    """``break`` must sit on a loop body's path, not past a parallel branch's entry."""
    seen: set[tuple[str, str]] = set()
    pending = [(start, "main")]
    problems: dict[str, Problem] = {}
    while pending:
        block_id, context = pending.pop()
        link = links.get(block_id)
        if link is None or (block_id, context) in seen:
            continue
        seen.add((block_id, context))
        if link.type == "break" and context != "loop":
            message = (
                "'break' may not cross a parallel branch"
                if context == "branch"
                else "'break' outside a loop"
            )
            problems.setdefault(block_id, Problem(message, block_id))
        body_targets = {target for _, target in link.bodies}
        for _, target in link.targets:
            if target not in body_targets:
                pending.append((target, context))
        pending.extend((target, body_context) for body_context, target in link.bodies)
    return list(problems.values())
