"""A flow's block graph as text: Mermaid ``flowchart`` or Graphviz DOT.

Pure functions of a validated :class:`FlowDocument`: one node per block, labelled with
its id and type, and one edge per ``next``, port (read from the block's parameters,
:meth:`Params.ports`) and ``on_error``, each labelled with its port. A run's trace can
mark the blocks it executed (class ``executed``) and those whose last attempt failed
(class ``failed``). The CLI's ``graph`` command and the HTTP API both draw from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from .._model.document import FlowDocument
from .._model.types import RunResult

__all__ = ["Edge", "GraphFormat", "edges", "marks", "render", "to_dot", "to_mermaid"]

GraphFormat = Literal["mermaid", "dot"]
_PLAIN_ID = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True, slots=True)
class Edge:
    """One way from a block to another: ``label`` is ``next``, ``on_error`` or a port's
    label (``then``, a route key, ``default``, ``body``, ``branches[0]``…)."""

    source: str
    target: str
    label: str


def edges(document: FlowDocument) -> list[Edge]:
    """Every edge of the graph, block by block in document order: ports first, then
    ``next``, then ``on_error``."""
    found = []
    for block_id, spec in document.blocks.items():
        for port in spec.params.ports():
            if port.target is not None:
                found.append(Edge(block_id, port.target, port.label))
        if spec.next is not None:
            found.append(Edge(block_id, spec.next, "next"))
        if spec.on_error is not None:
            found.append(Edge(block_id, spec.on_error, "on_error"))
    return found


def marks(document: FlowDocument, result: RunResult) -> tuple[set[str], set[str]]:
    """The blocks ``result`` executed, and those of them whose last attempt failed (or
    that the run's error names). An outcome that is ``ok``, a port label or
    ``cancelled`` is not a failure."""
    last: dict[str, str] = {}
    for entry in result.trace:
        last[entry.block] = entry.outcome
    executed = {block for block in last if block in document.blocks}
    failed = set()
    for block, outcome in last.items():
        spec = document.blocks.get(block)
        if spec is None:
            continue
        fine = {"ok", "cancelled", *(port.label for port in spec.params.ports())}
        if outcome not in fine:
            failed.add(block)
    broken = result.error.block if result.error is not None else None
    if broken is not None and broken in document.blocks:
        failed.add(broken)
        executed.add(broken)
    return executed, failed


def render(
    document: FlowDocument,
    form: GraphFormat = "mermaid",
    *,
    executed: Iterable[str] = (),
    failed: Iterable[str] = (),
) -> str:
    """The graph in ``form``, with run marks when given."""
    draw = to_dot if form == "dot" else to_mermaid
    return draw(document, executed=executed, failed=failed)


def _node_ids(document: FlowDocument) -> dict[str, str]:
    """Mermaid node ids: ``b_`` and the block id where it is plain (so ``end``, which
    Mermaid reserves, is safe), else ``b`` and the block's position."""
    return {
        block_id: f"b_{block_id}" if _PLAIN_ID.fullmatch(block_id) else f"b{index}"
        for index, block_id in enumerate(document.blocks)
    }


def _mermaid_text(text: str) -> str:
    return text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;")


def to_mermaid(
    document: FlowDocument, *, executed: Iterable[str] = (), failed: Iterable[str] = ()
) -> str:
    """Mermaid ``flowchart TD`` text; ``on_error`` edges are dotted. A failed block,
    executed too, is in both classes (``failed`` is defined last, so it shows)."""
    ids = _node_ids(document)
    lines = ["flowchart TD"]
    for block_id, spec in document.blocks.items():
        lines.append(f'    {ids[block_id]}["{_mermaid_text(f"{block_id} ({spec.type})")}"]')
    for edge in edges(document):
        arrow = "-.->" if edge.label == "on_error" else "-->"
        label = _mermaid_text(edge.label)
        lines.append(f'    {ids[edge.source]} {arrow}|"{label}"| {ids[edge.target]}')
    ran = [ids[b] for b in document.blocks if b in set(executed)]
    broke = [ids[b] for b in document.blocks if b in set(failed)]
    if ran or broke:
        lines.append("    classDef executed fill:#d9f2d9,stroke:#2e7d32")
        lines.append("    classDef failed fill:#f8d7da,stroke:#c62828")
    if ran:
        lines.append(f"    class {','.join(ran)} executed")
    if broke:
        lines.append(f"    class {','.join(broke)} failed")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(
    document: FlowDocument, *, executed: Iterable[str] = (), failed: Iterable[str] = ()
) -> str:
    """Graphviz DOT text; marked nodes carry a ``class`` attribute (and a fill); a
    failed block, executed too, has both classes."""
    ran, broke = set(executed), set(failed)
    lines = [f"digraph {_dot_text(document.flow)} {{", "    node [shape=box];"]
    for block_id, spec in document.blocks.items():
        attributes = [f"label={_dot_text(f'{block_id} ({spec.type})')}"]
        if block_id in broke:
            attributes += ['class="executed failed"', "style=filled", 'fillcolor="#f8d7da"']
        elif block_id in ran:
            attributes += ['class="executed"', "style=filled", 'fillcolor="#d9f2d9"']
        lines.append(f"    {_dot_text(block_id)} [{', '.join(attributes)}];")
    for edge in edges(document):
        style = ", style=dashed" if edge.label == "on_error" else ""
        lines.append(
            f"    {_dot_text(edge.source)} -> {_dot_text(edge.target)} "
            f"[label={_dot_text(edge.label)}{style}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"
