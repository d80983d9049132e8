"""The block graph as Mermaid and DOT text, read from the blocks' ports."""

from __future__ import annotations

from blocks import BlockRegistry
from engine._model.document import FlowDocument, validate_document
from engine._runtime.graph import dot, mermaid

RAW = {
    "flow": "shipping",
    "start": "check",
    "blocks": {
        "check": {
            "type": "condition",
            "if": "true",
            "then": "ship",
            "else": "done",
            "on_error": "oops",
        },
        "ship": {"type": "set", "values": {"label": 'say "hi" | <b>#1</b>'}, "next": "done"},
        "oops": {"type": "set", "values": {}, "next": "done"},
        "done": {"type": "return", "value": 1},
    },
}


def document() -> FlowDocument:
    compiled, problems = validate_document(RAW, BlockRegistry())
    assert compiled is not None and problems == []
    return compiled


def test_mermaid_has_one_node_per_block_and_one_labelled_edge_per_way_out() -> None:
    text = mermaid(document())
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    assert '  b0(["check<br/>condition"])' in lines  # the start block is rounded
    assert '  b1["ship<br/>set"]' in lines
    assert '  b0 -->|"then"| b1' in text and '  b0 -->|"else"| b3' in text
    assert '  b0 -.->|"on_error"| b2' in text
    assert sum("-->" in line or "-.->" in line for line in lines) == 5
    assert "class" not in text


def test_mermaid_marks_executed_and_failed_blocks_with_class_lines() -> None:
    text = mermaid(document(), executed=["check", "ship", "nope"], failed=["ship"])
    assert "  class b0 executed" in text
    assert "  class b1 failed" in text  # a failed block is not also drawn as executed


def test_labels_are_escaped_so_no_id_can_break_the_syntax() -> None:
    raw = {**RAW, "blocks": {**RAW["blocks"], 'we"ird|<id>#': {"type": "return", "value": 2}}}
    compiled, _ = validate_document(raw, BlockRegistry())  # unreachable, but drawable
    assert compiled is not None
    text = mermaid(compiled)
    assert "we#quot;ird#124;#lt;id#gt;#35;" in text


def test_dot_has_the_same_nodes_and_edges() -> None:
    text = dot(document(), executed=["check"], failed=["done"])
    assert text.startswith('digraph "shipping" {')
    assert 'b0 [label="check\\ncondition", style="rounded", class="executed"];' in text
    assert 'b3 [label="done\\nreturn", class="failed"];' in text
    assert 'b0 -> b2 [label="on_error", style=dashed];' in text
    assert text.count(" -> ") == 5
