"""Flow names match their pattern in full: a trailing newline is not a match."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from blocks import FLOW_NAME_PATTERN, BlockRegistry
from blocks._builtins import CallFlowParams
from engine import InvalidFlow, parse_document, validate_document

ODD_NAMES = ["who\n", "who\r\n", "\nwho", "who ", "Who", "-who", "w" * 65, ""]


def test_the_pattern_with_re_match_would_take_a_trailing_newline() -> None:
    # why every check uses fullmatch: '$' also matches before a final newline
    assert re.match(FLOW_NAME_PATTERN, "who\n") is not None
    assert re.fullmatch(FLOW_NAME_PATTERN, "who\n") is None


@pytest.mark.parametrize("name", ODD_NAMES)
def test_a_document_named_oddly_is_invalid_flow(name: str) -> None:
    with pytest.raises(InvalidFlow, match="'flow' must be a name"):
        parse_document({"flow": name, "start": "a", "blocks": {"a": {"type": "return"}}})


@pytest.mark.parametrize("name", ODD_NAMES)
def test_call_flow_and_callable_by_refuse_odd_names(name: str) -> None:
    with pytest.raises(ValidationError):
        CallFlowParams.model_validate({"flow": name})
    raw = parse_document(
        {"flow": "ok", "callable_by": [name], "start": "a", "blocks": {"a": {"type": "return"}}}
    )
    _, problems = validate_document(raw, BlockRegistry())
    assert any(problem.field == "callable_by" for problem in problems)


def test_a_call_flow_version_is_bounded() -> None:
    assert CallFlowParams.model_validate({"flow": "ok", "version": 2**31 - 1}).version
    with pytest.raises(ValidationError):
        CallFlowParams.model_validate({"flow": "ok", "version": 10**23})
