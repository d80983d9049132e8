"""Flow documents: parsing and validation, every problem reported at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from blocks import BlockRegistry
from engine import (
    Engine,
    FlowDocument,
    InvalidFlow,
    Problem,
    RunStatus,
    VersionStatus,
    parse_document,
    validate_document,
)

DATA = Path(__file__).parent.parent / "data"
REGISTRY = BlockRegistry()


def flow(blocks: dict[str, Any], start: str | None = None, **extra: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"flow": "doc", "blocks": blocks, **extra}
    document["start"] = start if start is not None else next(iter(blocks))
    return document


def problems_of(document: dict[str, Any]) -> list[Problem]:
    _, problems = validate_document(parse_document(document), REGISTRY)
    return problems


def where(problems: list[Problem]) -> set[tuple[str | None, str | None]]:
    return {(problem.block, problem.field) for problem in problems}


# -- every problem at once -----------------------------------------------------------------


def test_every_problem_is_reported_at_once_naming_block_and_field() -> None:
    raw = parse_document(DATA / "core_every_problem.yaml")
    document, problems = validate_document(raw, REGISTRY)

    assert document is None
    found = {(p.block, p.field): p.message for p in problems}
    assert set(found) == {
        (None, "owner"),
        (None, "inputs"),
        ("guard", "if"),
        ("check", "then"),
        ("check", "else"),
        ("check", "on_error"),
        ("pick", "routes.a"),
        ("pick", "default"),
        ("loop", "body"),
        ("each", "as"),
        ("fork", "branches[1]"),
        ("deep", "values"),
        ("counter", "max_iterations"),
        ("mystery", "type"),
        ("extra", "volume"),
        ("extra", None),
    }
    assert len(problems) == len(found)
    assert found[(None, "owner")] == "unknown field"
    assert found[(None, "inputs")].startswith("not a valid JSON Schema")
    assert "'inputs.x >' does not compile" in found[("guard", "if")]
    assert found[("check", "then")] == "unknown target block 'gone_then'"
    assert found[("check", "else")] == "unknown target block 'gone_else'"
    assert found[("check", "on_error")] == "unknown target block 'gone_handler'"
    assert found[("pick", "routes.a")] == "unknown target block 'missing_a'"
    assert found[("pick", "default")] == "unknown target block 'missing_default'"
    assert found[("loop", "body")] == "unknown target block 'missing_body'"
    assert found[("fork", "branches[1]")] == "unknown target block 'lost_branch'"
    assert found[("each", "as")] == "a loop variable may not be named 'vars'"
    assert "'1 +' does not compile" in found[("deep", "values")]
    assert "integer" in found[("counter", "max_iterations")]
    assert found[("mystery", "type")].startswith("unknown block type 'teleport'")
    assert found[("extra", "volume")] == "unknown field"
    assert found[("extra", None)] == "unreachable from the start block"


async def test_add_version_stores_every_problem_and_start_lists_them(engine: Engine) -> None:
    version = await engine.add_version(DATA / "core_every_problem.yaml")

    info = await engine.get_version("every-problem", version)
    assert info.status is VersionStatus.INVALID
    assert len(info.problems) == 16
    with pytest.raises(InvalidFlow) as caught:
        await engine.start("every-problem", version)
    assert caught.value.problems == list(info.problems)
    assert "block 'mystery': field 'type': unknown block type 'teleport'" in str(caught.value)


def test_unknown_targets_of_a_block_with_other_problems_are_reported_too() -> None:
    problems = problems_of(
        flow(
            {
                "a": {"type": "wait", "seconds": 1, "volume": 11, "next": "nowhere"},
                "b": {"type": "repeat", "while": "true", "body": "ghost", "max_iterations": "x"},
            }
        )
    )

    assert where(problems) >= {
        ("a", "volume"),
        ("a", "next"),
        ("b", "max_iterations"),
        ("b", "body"),
    }


# -- start and the header ------------------------------------------------------------------


def test_missing_start() -> None:
    document, problems = validate_document(
        {"flow": "doc", "blocks": {"a": {"type": "set", "values": {}}}}, REGISTRY
    )

    assert document is None
    assert [(p.block, p.field, p.message) for p in problems] == [
        (None, "start", "required field is missing")
    ]


def test_unknown_start() -> None:
    problems = problems_of(flow({"a": {"type": "set", "values": {}}}, start="b"))

    assert [(p.block, p.field, p.message) for p in problems] == [
        (None, "start", "start block 'b' does not exist")
    ]


async def test_missing_start_is_stored_as_invalid(engine: Engine) -> None:
    version = await engine.add_version({"flow": "doc", "blocks": {"a": {"type": "return"}}})

    info = await engine.get_version("doc", version)
    assert info.status is VersionStatus.INVALID
    assert where(list(info.problems)) == {(None, "start")}


def test_missing_or_empty_blocks() -> None:
    assert where(problems_of({"flow": "doc", "start": "a"})) == {(None, "blocks")}
    assert where(problems_of({"flow": "doc", "start": "a", "blocks": {}})) == {
        (None, "blocks"),
        (None, "start"),
    }


def test_unknown_top_level_field() -> None:
    problems = problems_of(flow({"a": {"type": "return"}}, version=3, owner="x"))

    assert [(p.block, p.field, p.message) for p in problems] == [
        (None, "version", "unknown field"),
        (None, "owner", "unknown field"),
    ]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"status": "RUNNING"}, "status"),
        ({"callable_by": ["Not A Flow"]}, "callable_by"),
        ({"callable_by": "checkout"}, "callable_by"),
        ({"description": ["not", "text"]}, "description"),
        ({"inputs": "object"}, "inputs"),
        ({"inputs": {"type": "object", "required": "amount"}}, "inputs"),
    ],
)
def test_bad_header_fields(extra: dict[str, Any], field: str) -> None:
    problems = problems_of(flow({"a": {"type": "return"}}, **extra))

    assert where(problems) == {(None, field)}


def test_inputs_must_be_a_valid_json_schema() -> None:
    [problem] = problems_of(
        flow(
            {"a": {"type": "return"}},
            inputs={"type": "object", "properties": {"n": {"minimum": "0"}}},
        )
    )

    assert problem.field == "inputs"
    assert "properties/n/minimum" in problem.message


def test_valid_inputs_schema_is_kept() -> None:
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    document, problems = validate_document(flow({"a": {"type": "return"}}, inputs=schema), REGISTRY)

    assert problems == []
    assert document is not None
    assert document.inputs == schema


# -- blocks --------------------------------------------------------------------------------


def test_unknown_block_type_names_the_type_and_lists_known_ones() -> None:
    [problem] = problems_of(flow({"a": {"type": "teleport"}}))

    assert (problem.block, problem.field) == ("a", "type")
    assert "unknown block type 'teleport'" in problem.message
    assert "set" in problem.message and "for_each" in problem.message


@pytest.mark.parametrize("body", [{"values": {}}, {"type": 3}, "set", None, ["type", "set"]])
def test_block_must_be_a_mapping_with_a_type(body: Any) -> None:
    [problem] = problems_of(flow({"a": body}))

    assert problem.block == "a"


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ({"type": "set", "values": [1, 2]}, "values"),
        ({"type": "set", "values": {"1x": 1}}, "values"),
        ({"type": "wait"}, "seconds"),
        ({"type": "repeat", "while": "true", "body": "a", "max_iterations": 0}, "max_iterations"),
        ({"type": "for_each", "items": "[]", "body": "a", "concurrency": "x"}, "concurrency"),
        ({"type": "for_each", "items": "[]", "body": "a", "as": "index"}, "as"),
        ({"type": "for_each", "items": "[]", "body": "a", "as": "run"}, "as"),
        ({"type": "for_each", "items": "[]", "body": "a", "as": "two words"}, "as"),
        ({"type": "parallel", "branches": []}, "branches"),
        ({"type": "parallel", "branches": "a"}, "branches"),
        ({"type": "http", "url": "http://x", "method": "BREW"}, "method"),
        ({"type": "http", "url": "http://x", "result": "not valid"}, "result"),
        ({"type": "fail", "code": "has spaces"}, "code"),
        ({"type": "log", "message": "m", "level": 3}, "level"),
        ({"type": "router", "value": "1", "routes": ["a"]}, "routes"),
        ({"type": "call_flow", "flow": "Bad Name"}, "flow"),
        ({"type": "call_flow", "flow": "x", "identity": "admin"}, "identity"),
        ({"type": "set", "values": {}, "timeout": 0}, "timeout"),
        ({"type": "set", "values": {}, "timeout": "soon"}, "timeout"),
        ({"type": "set", "values": {}, "retry": {"max_attempts": 0}}, "retry.max_attempts"),
        ({"type": "set", "values": {}, "retry": {"multiplier": 0.5}}, "retry.multiplier"),
        ({"type": "set", "values": {}, "retry": {"jitter": 1}}, "retry.jitter"),
        ({"type": "set", "values": {}, "next": 5}, "next"),
    ],
)
def test_bad_parameter_types_name_block_and_field(block: dict[str, Any], field: str) -> None:
    problems = problems_of(flow({"a": block}))

    assert ("a", field) in where(problems), problems


@pytest.mark.parametrize(
    "block",
    [
        {"type": "set", "values": {}, "colour": "red"},
        {"type": "return", "colour": "red"},
        {"type": "break", "colour": "red"},
        {"type": "condition", "if": "true", "colour": "red"},
    ],
)
def test_unknown_parameters(block: dict[str, Any]) -> None:
    [problem] = problems_of(flow({"a": block}))

    assert (problem.block, problem.field, problem.message) == ("a", "colour", "unknown field")


def test_a_problem_in_params_and_in_common_fields_are_both_reported() -> None:
    problems = problems_of(flow({"a": {"type": "wait", "colour": 1, "timeout": -1}}))

    assert where(problems) == {("a", "colour"), ("a", "seconds"), ("a", "timeout")}


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ({"type": "condition", "if": "1 +"}, "if"),
        ({"type": "router", "value": "a.b(", "routes": {}}, "value"),
        ({"type": "repeat", "while": "x >", "body": "a"}, "while"),
        ({"type": "for_each", "items": "[1,", "body": "a"}, "items"),
        ({"type": "set", "values": {"x": "=1 +"}}, "values"),
        ({"type": "set", "values": {"x": {"y": [{"z": "=)"}]}}}, "values"),
        ({"type": "return", "value": ["=a +"]}, "value"),
        ({"type": "fail", "message": "=(("}, "message"),
        ({"type": "log", "message": "=1 +"}, "message"),
        ({"type": "wait", "seconds": "=1 +"}, "seconds"),
        ({"type": "http", "url": "=1 +"}, "url"),
        ({"type": "http", "url": "http://x", "headers": {"h": "=1 +"}}, "headers"),
        ({"type": "http", "url": "http://x", "body": {"deep": ["=1 +"]}}, "body"),
        ({"type": "call_flow", "flow": "other", "inputs": {"n": "=1 +"}}, "inputs"),
    ],
)
def test_expressions_that_do_not_compile(block: dict[str, Any], field: str) -> None:
    [problem] = problems_of(flow({"a": block}))

    assert (problem.block, problem.field) == ("a", field)
    assert "does not compile" in problem.message


def test_empty_expression_field_is_a_problem() -> None:
    [problem] = problems_of(flow({"a": {"type": "condition", "if": ""}}))

    assert (problem.block, problem.field) == ("a", "if")
    assert "empty" in problem.message


def test_leading_equals_is_accepted_in_expression_fields() -> None:
    document, problems = validate_document(
        flow(
            {
                "a": {"type": "condition", "if": "=inputs.n > 1", "then": "b"},
                "b": {"type": "return"},
            }
        ),
        REGISTRY,
    )

    assert problems == []
    assert document is not None
    assert document.blocks["a"].params.if_.source == "inputs.n > 1"  # type: ignore[attr-defined]


def test_double_equals_in_value_fields_is_a_literal_not_an_expression() -> None:
    problems = problems_of(flow({"a": {"type": "set", "values": {"f": "==1 +", "g": ["==("]}}}))

    assert problems == []


async def test_expression_fields_run_with_a_leading_equals(engine: Engine) -> None:
    await engine.start(
        "doc",
        await engine.add_version(
            flow(
                {
                    "a": {
                        "type": "condition",
                        "if": "=inputs.n > 1",
                        "then": "big",
                        "else": "small",
                    },
                    "big": {"type": "return", "value": "big"},
                    "small": {"type": "return", "value": "==small"},
                }
            )
        ),
    )

    assert (await engine.call_flow("doc", {"n": 5})).output == "big"
    assert (await engine.call_flow("doc", {"n": 0})).output == "=small"


# -- targets and reachability --------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ({"type": "set", "values": {}, "next": "zz"}, "next"),
        ({"type": "set", "values": {}, "on_error": "zz"}, "on_error"),
        ({"type": "condition", "if": "true", "then": "zz"}, "then"),
        ({"type": "condition", "if": "true", "else": "zz"}, "else"),
        ({"type": "router", "value": "1", "routes": {"1": "zz"}}, "routes.1"),
        ({"type": "router", "value": "1", "routes": {}, "default": "zz"}, "default"),
        ({"type": "repeat", "while": "false", "body": "zz"}, "body"),
        ({"type": "for_each", "items": "[]", "body": "zz"}, "body"),
        ({"type": "parallel", "branches": ["a", "zz"]}, "branches[1]"),
    ],
)
def test_unknown_target_ids(block: dict[str, Any], field: str) -> None:
    [problem] = problems_of(flow({"a": block}))

    assert (problem.block, problem.field) == ("a", field)
    assert problem.message == "unknown target block 'zz'"


def test_unreachable_blocks_are_each_reported() -> None:
    problems = problems_of(
        flow(
            {
                "a": {"type": "set", "values": {}, "next": "b"},
                "b": {"type": "return"},
                "island": {"type": "set", "values": {}, "next": "island2"},
                "island2": {"type": "return"},
            }
        )
    )

    assert [(p.block, p.message) for p in problems] == [
        ("island", "unreachable from the start block"),
        ("island2", "unreachable from the start block"),
    ]


def test_blocks_reached_through_any_port_are_reachable() -> None:
    problems = problems_of(
        flow(
            {
                "a": {"type": "set", "values": {}, "on_error": "handler", "next": "c"},
                "handler": {"type": "return"},
                "c": {"type": "condition", "if": "true", "then": "d", "else": "e"},
                "d": {"type": "router", "value": "1", "routes": {"1": "f"}, "default": "g"},
                "e": {"type": "repeat", "while": "false", "body": "h"},
                "f": {"type": "for_each", "items": "[]", "body": "i"},
                "g": {"type": "parallel", "branches": ["j", "k"]},
                "h": {"type": "return"},
                "i": {"type": "return"},
                "j": {"type": "return"},
                "k": {"type": "return"},
            }
        )
    )

    assert problems == []


# -- break ---------------------------------------------------------------------------------


def test_break_outside_a_loop() -> None:
    problems = problems_of(
        flow({"a": {"type": "set", "values": {}, "next": "b"}, "b": {"type": "break"}})
    )

    assert [(p.block, p.message) for p in problems] == [("b", "'break' outside a loop")]


def test_break_after_a_loop_on_its_next_path_is_outside_the_loop() -> None:
    problems = problems_of(
        flow(
            {
                "loop": {"type": "repeat", "while": "true", "body": "body", "next": "after"},
                "body": {"type": "set", "values": {}},
                "after": {"type": "break"},
            }
        )
    )

    assert [(p.block, p.message) for p in problems] == [("after", "'break' outside a loop")]


def test_break_inside_a_loop_body_path_is_allowed() -> None:
    problems = problems_of(
        flow(
            {
                "loop": {"type": "for_each", "items": "[1]", "body": "body"},
                "body": {"type": "condition", "if": "true", "then": "stop", "else": "noop"},
                "noop": {"type": "set", "values": {}},
                "stop": {"type": "break"},
            }
        )
    )

    assert problems == []


def test_break_inside_a_parallel_branch_is_not_allowed() -> None:
    problems = problems_of(
        flow(
            {
                "loop": {"type": "repeat", "while": "true", "body": "par"},
                "par": {"type": "parallel", "branches": ["noop", "stop"]},
                "noop": {"type": "set", "values": {}},
                "stop": {"type": "break"},
            }
        )
    )

    assert [(p.block, p.message) for p in problems] == [
        ("stop", "'break' may not cross a parallel branch")
    ]


def test_break_inside_a_loop_inside_a_parallel_branch_is_allowed() -> None:
    problems = problems_of(
        flow(
            {
                "par": {"type": "parallel", "branches": ["loop", "noop"]},
                "loop": {"type": "repeat", "while": "true", "body": "stop"},
                "stop": {"type": "break"},
                "noop": {"type": "set", "values": {}},
            }
        )
    )

    assert problems == []


# -- parsing -------------------------------------------------------------------------------


async def test_truncated_yaml_raises_invalid_flow_from_add_version(engine: Engine) -> None:
    text = (DATA / "core_truncated.yaml").read_text()

    with pytest.raises(InvalidFlow) as caught:
        await engine.add_version(text)

    [problem] = caught.value.problems
    assert "does not parse at line" in problem.message
    assert await engine.list_flows() == []


async def test_unparsable_file_names_the_file(engine: Engine) -> None:
    path = DATA / "core_truncated.yaml"

    with pytest.raises(InvalidFlow) as caught:
        await engine.add_version(path)

    assert caught.value.problems[0].file == str(path)
    assert str(path) in str(caught.value)


async def test_missing_file_is_invalid_flow(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(InvalidFlow, match="cannot read"):
        await engine.add_version(tmp_path / "absent.yaml")


@pytest.mark.parametrize("text", ["- a\n- b\n", "42", "just words", "", "null"])
async def test_document_that_is_not_a_mapping_is_invalid_flow(engine: Engine, text: str) -> None:
    with pytest.raises(InvalidFlow, match="a flow document is a mapping"):
        await engine.add_version(text)


@pytest.mark.parametrize("name", ["Bad Name", "UPPER", "-lead", "", "x" * 65, 7, None])
async def test_bad_flow_name_raises_invalid_flow(engine: Engine, name: Any) -> None:
    document = flow({"a": {"type": "return"}})
    document["flow"] = name

    with pytest.raises(InvalidFlow) as caught:
        await engine.add_version(document)

    assert [p.field for p in caught.value.problems] == ["flow"]
    assert await engine.list_flows() == []


async def test_missing_flow_name_raises_invalid_flow(engine: Engine) -> None:
    with pytest.raises(InvalidFlow):
        await engine.add_version({"start": "a", "blocks": {"a": {"type": "return"}}})


@pytest.mark.parametrize("name", ["a", "order-approval", "x_1", "9lives", "a" * 64])
def test_good_flow_names(name: str) -> None:
    assert parse_document({"flow": name})["flow"] == name


async def test_json_text_document(engine: Engine) -> None:
    text = json.dumps(flow({"a": {"type": "return", "value": {"from": "json"}}}))

    version = await engine.add_version(text)
    await engine.start("doc", version)

    assert (await engine.get_version("doc", version)).status is VersionStatus.LIVE
    assert (await engine.call_flow("doc")).output == {"from": "json"}


async def test_bytes_document(engine: Engine) -> None:
    version = await engine.add_version(
        b"flow: doc\nstart: a\nblocks:\n  a: {type: return, value: bytes}\n"
    )

    assert (await engine.get_version("doc", version)).status is VersionStatus.READY


async def test_yaml_path_document(engine: Engine) -> None:
    version = await engine.add_version(DATA / "core_order_approval.yaml")
    await engine.start("core-order-approval", version)

    big = await engine.call_flow("core-order-approval", {"amount": 5000})
    small = await engine.call_flow("core-order-approval", {"amount": 5})

    assert (big.status, big.output) == (RunStatus.COMPLETED, {"approved": False, "by": "manager"})
    assert small.output == {"approved": True, "by": "auto"}


def test_valid_document_is_frozen() -> None:
    document, problems = validate_document(
        parse_document(DATA / "core_order_approval.yaml"), REGISTRY
    )

    assert problems == []
    assert isinstance(document, FlowDocument)
    assert document.flow == "core-order-approval"
    assert set(document.blocks) == {"check", "escalate", "approve", "done"}
    with pytest.raises(ValidationError):
        document.start = "approve"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        document.blocks["check"].next = "done"  # type: ignore[misc]


def test_problem_reads_as_where_then_what() -> None:
    problem = Problem("unknown field", block="a", field="colour", file="f.yaml")

    assert str(problem) == "f.yaml: block 'a': field 'colour': unknown field"
    assert str(Problem("unknown field", field="owner")) == "field 'owner': unknown field"
