"""A flow's block graph as text: Mermaid ``flowchart`` or Graphviz DOT.

One node per block, labelled with its id and type; one edge per ``next``, port and
``on_error``, labelled with its port (``on_error`` edges are dashed). The blocks of a
run can be marked: ``executed`` ones and ``failed`` ones get that class (Mermaid
``class`` lines, DOT ``class`` attributes). The topology is read from the blocks'
parameters (:meth:`Params.ports`), as validation and the interpreter read it.

Block ids are never spelled into the graph's syntax: nodes are ``b0``, ``b1``, … in
document order, and ids and types appear only inside quoted, escaped labels.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._model.document import BlockSpec, FlowDocument

__all__ = ["dot", "mermaid"]

_MERMAID_CLASSES = {
    "executed": "fill:#e6f5ec,stroke:#1f8a4c,stroke-width:2px",
    "failed": "fill:#fbeaea,stroke:#c2322f,stroke-width:2px",
}


def mermaid(
    document: FlowDocument, executed: Iterable[str] = (), failed: Iterable[str] = ()
) -> str:
    """The document's graph as Mermaid ``flowchart`` text (top to bottom)."""
    names = _names(document)
    lines = ["flowchart TD"]
    for block_id, spec in document.blocks.items():
        label = f"{_mermaid_text(block_id)}<br/>{_mermaid_text(spec.type)}"
        shape = '(["{}"])' if block_id == document.start else '["{}"]'
        lines.append(f"  {names[block_id]}{shape.format(label)}")
    for source, port, target, error in _edges(document):
        arrow = "-.->" if error else "-->"
        lines.append(f'  {names[source]} {arrow}|"{_mermaid_text(port)}"| {names[target]}')
    for kind, marked in _marks(document, executed, failed):
        lines.append(f"  classDef {kind} {_MERMAID_CLASSES[kind]}")
        lines.append(f"  class {','.join(names[block] for block in marked)} {kind}")
    return "\n".join(lines) + "\n"


def dot(document: FlowDocument, executed: Iterable[str] = (), failed: Iterable[str] = ()) -> str:
    """The document's graph as Graphviz DOT text."""
    names = _names(document)
    classes = {
        block: kind for kind, marked in _marks(document, executed, failed) for block in marked
    }
    lines = [f"digraph {_dot_text(document.flow)} {{", "  node [shape=box];"]
    for block_id, spec in document.blocks.items():
        label = _dot_text(block_id + "\n" + spec.type)
        attributes = [f"label={label}"]
        if block_id == document.start:
            attributes.append('style="rounded"')
        if block_id in classes:
            attributes.append(f'class="{classes[block_id]}"')
        lines.append(f"  {names[block_id]} [{', '.join(attributes)}];")
    for source, port, target, error in _edges(document):
        style = ", style=dashed" if error else ""
        lines.append(f"  {names[source]} -> {names[target]} [label={_dot_text(port)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _names(document: FlowDocument) -> dict[str, str]:
    return {block_id: f"b{index}" for index, block_id in enumerate(document.blocks)}


def _edges(document: FlowDocument) -> list[tuple[str, str, str, bool]]:
    """``(source, port label, target, is on_error)`` for every way out of every block."""
    edges: list[tuple[str, str, str, bool]] = []
    for block_id, spec in document.blocks.items():
        for port, target, error in _ways_out(spec):
            if target is not None and target in document.blocks:
                edges.append((block_id, port, target, error))
    return edges


def _ways_out(spec: BlockSpec) -> list[tuple[str, str | None, bool]]:
    ports = [(port.label, port.target, False) for port in spec.params.ports()]
    return [("next", spec.next, False), *ports, ("on_error", spec.on_error, True)]


def _marks(
    document: FlowDocument, executed: Iterable[str], failed: Iterable[str]
) -> list[tuple[str, list[str]]]:
    """The classes to draw: a failed block is not also drawn as executed."""
    failed_ids = [block for block in document.blocks if block in set(failed)]
    ran = set(executed) - set(failed_ids)
    executed_ids = [block for block in document.blocks if block in ran]
    return [
        (kind, ids) for kind, ids in (("executed", executed_ids), ("failed", failed_ids)) if ids
    ]


def _mermaid_text(text: str) -> str:
    """Text safe inside a quoted Mermaid label: its entity codes for the special marks."""
    codes = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "|": "#124;"}
    return "".join(codes.get(char, char) for char in text)


def _dot_text(text: str) -> str:
    """A quoted DOT string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
