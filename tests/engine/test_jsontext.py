"""JSON text going out: log lines and HTTP answers read back as the standard library
writes them, including the values the fast writer refuses."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from typing import Any

import pytest

from engine._http.request import JSONResponse
from engine._model.jsontext import dumps_bytes, log_line


@dataclasses.dataclass
class _Point:
    x: int


EVENTS: list[dict[str, Any]] = [
    {"event": "http.request", "status": 200, "duration_ms": 0.25, "user": None, "ok": True},
    {"event": "run.failed", "error": {"code": "x", "message": "é ü 漢字"}, "roles": ["a", "b"]},
    {"event": "nested", "values": [1, 2.5, [3, {"k": "v"}]], "empty": {}},
    {"event": "keys", 1: "int key", 2.5: "float key", None: "none key", False: "bool key"},
    {"event": "big", "n": 2**70},  # over 64 bits: the fast writer refuses it
    {"event": "surrogate", "text": "\ud800"},  # a lone surrogate: refused too
    {"event": "objects", "when": datetime.datetime(2026, 1, 2, 3, 4, 5), "point": _Point(1)},
]


@pytest.mark.parametrize("event", EVENTS, ids=[str(e["event"]) for e in EVENTS])
def test_a_log_line_reads_back_as_the_standard_library_writes_it(event: dict[str, Any]) -> None:
    line = log_line(event, default=repr)
    assert "\n" not in line
    assert json.loads(line) == json.loads(json.dumps(event, default=repr))


def test_a_dataclass_or_datetime_in_a_log_line_goes_to_default_as_before() -> None:
    line = log_line({"point": _Point(1)}, default=lambda value: f"<{type(value).__name__}>")
    assert json.loads(line) == {"point": "<_Point>"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            {"a": math.nan, "b": [math.inf, -math.inf], "c": 1.5},
            {"a": None, "b": [None, None], "c": 1.5},
        ),
        ({"n": 2**70}, {"n": 2**70}),
        ({"text": "\ud800 and é"}, {"text": "\ud800 and é"}),
        ({"keys": {1: "one"}}, {"keys": {"1": "one"}}),
    ],
    ids=["non-finite", "big-int", "lone-surrogate", "int-key"],
)
def test_an_answer_never_fails_on_a_value(content: Any, expected: Any) -> None:
    body = JSONResponse(content).body
    assert json.loads(body) == expected


def test_the_fast_writer_says_when_it_cannot_write_a_value() -> None:
    assert dumps_bytes({"n": 2**70}) is None
    assert dumps_bytes({"a": math.nan}) == b'{"a":null}'
    with pytest.raises(TypeError):  # a value JSON has no form for is refused, as before
        JSONResponse({"a": {1, 2}})
