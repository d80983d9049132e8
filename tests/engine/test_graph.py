"""The block graph as text, straight from a validated document and a run's trace."""

from __future__ import annotations

from blocks import BlockRegistry
from engine import validate_document
from engine._model.types import RunError, RunResult, RunStatus, Trace
from engine._runtime.graph import Edge, edges, marks, render

DOCUMENT = {
    "flow": "retrying",
    "start": "try",
    "blocks": {
        "try": {
            "type": "fail",
            "code": "flaky",
            "message": "x",
            "retry": {"max_attempts": 2},
            "on_error": "mend",
            "next": "pick",
        },
        "mend": {"type": "set", "values": {"x": 1}, "next": "pick"},
        "pick": {"type": "router", "value": "'a'", "routes": {"a": "done"}, "default": "done"},
        "done": {"type": "return", "value": 'say "hi"'},
    },
}


def document():
    compiled, problems = validate_document(DOCUMENT, BlockRegistry())
    assert compiled is not None and not problems, problems
    return compiled


def result(trace, error=None):
    return RunResult("r", "retrying", 1, RunStatus.COMPLETED, error=error, trace=Trace(trace))


def test_edges_come_from_ports_then_next_then_on_error():
    assert edges(document()) == [
        Edge("try", "pick", "next"),
        Edge("try", "mend", "on_error"),
        Edge("mend", "pick", "next"),
        Edge("pick", "done", "a"),
        Edge("pick", "done", "default"),
    ]


def test_a_block_is_failed_when_its_last_attempt_failed():
    flow = document()
    retried = [
        ("try", "fail", 1.0, 0.1, "flaky"),
        ("try", "fail", 2.0, 0.1, "ok"),
        ("pick", "router", 3.0, 0.1, "a"),
    ]
    assert marks(flow, result(retried)) == ({"try", "pick"}, set())
    failed = [("try", "fail", 1.0, 0.1, "flaky"), ("mend", "set", 2.0, 0.1, "ok")]
    assert marks(flow, result(failed)) == ({"try", "mend"}, {"try"})
    error = RunError("step_limit", "too many", "done")
    assert marks(flow, result([], error)) == ({"done"}, {"done"})


def test_labels_are_escaped_in_both_formats():
    flow = document()
    mermaid = render(flow, executed={"try"}, failed={"try"})
    assert mermaid.splitlines()[0] == "flowchart TD"
    assert '    b_try -.->|"on_error"| b_mend' in mermaid
    assert mermaid.rstrip().splitlines()[-2:] == [
        "    class b_try executed",
        "    class b_try failed",
    ]
    dot = render(flow, "dot")
    assert dot.startswith('digraph "retrying" {') and dot.rstrip().endswith("}")
    assert '"pick" -> "done" [label="default"];' in dot
