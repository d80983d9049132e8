"""Authoring feedback: problems at their line and column, the closest known name,
every problem at once, workspace-wide validation, typed expressions and the schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from cli_support import cli, write

from blocks import BlockRegistry, Params, block
from engine import Engine, Problem, parse_document, validate_document
from engine._cli import main
from engine._http.app import create_app
from engine._http.auth import TokenFileAuthenticator, add_token
from engine._model.document import read_document
from engine._model.limits import load_yaml
from engine._model.schema import document_schema
from engine._runtime.gate import conform
from engine.testing import capture_logs

ROOT = Path(__file__).parent.parent.parent
DATA = ROOT / "tests" / "data"
EXAMPLES = ROOT / "examples"
REGISTRY = BlockRegistry()


def problems_in(text: str) -> list[Problem]:
    raw, marks = read_document(text)
    return validate_document(raw, REGISTRY, marks=marks)[1]


def at(text: str, problem: Problem) -> str:
    """The text from the problem's line and column on, to the end of that line."""
    assert problem.line is not None and problem.column is not None, problem
    return text.splitlines()[problem.line - 1][problem.column - 1 :]


# Where each problem of the two data files points: the key or value it is about.
EVERY_PROBLEM = {
    (None, "owner"): "owner",
    (None, "inputs"): "{type: objekt}",
    ("guard", "if"): '"inputs.x >"',
    ("check", "then"): "gone_then",
    ("check", "else"): "gone_else",
    ("check", "on_error"): "gone_handler",
    ("pick", "routes.a"): "missing_a",
    ("pick", "default"): "missing_default",
    ("loop", "body"): "missing_body",
    ("each", "as"): "vars",
    ("fork", "branches[1]"): "lost_branch",
    ("deep", "values"): "{outer",
    ("counter", "max_iterations"): "lots",
    ("mystery", "type"): "teleport",
    ("extra", "volume"): "volume",
    ("extra", None): "extra:",
}
POSITIONS = {
    ("a", "values"): "{total",  # the type error: inputs.price is a double
    ("b", "colour"): "colour",  # an unknown field
    ("b", "seconds"): "b:",  # a missing field: the block's key
    ("c", None): "c:",  # break outside a loop, past an invalid block
    ("d", "type"): "sett",  # an unknown type
    ("d", None): "d:",  # unreachable
}


@pytest.mark.parametrize(
    ("name", "expected"),
    [("core_every_problem.yaml", EVERY_PROBLEM), ("authoring_positions.yaml", POSITIONS)],
)
def test_every_problem_kind_has_the_line_and_column_of_its_key_or_value(
    name: str, expected: dict[tuple[str | None, str | None], str]
) -> None:
    text = (DATA / name).read_text()
    problems = problems_in(text)

    assert {(p.block, p.field) for p in problems} == set(expected)
    for problem in problems:
        assert at(text, problem).startswith(expected[(problem.block, problem.field)]), problem


@pytest.mark.parametrize("name", ["core_every_problem.yaml", "authoring_positions.yaml"])
def test_a_json_document_has_positions_too(name: str) -> None:
    raw = parse_document(DATA / name)
    text = json.dumps(raw, indent=2)
    problems = problems_in(text)

    assert len(problems) == len(problems_in((DATA / name).read_text()))
    for problem in problems:
        found = at(text, problem)
        if problem.field is None or problem.message.startswith("unknown field"):
            name_of = problem.block if problem.field is None else problem.field.split(".")[-1]
            assert found.startswith(json.dumps(name_of) + ":"), problem
        else:
            assert found[0] in '"{[0123456789-tfn', problem  # a JSON value starts here


def test_str_reads_file_line_column_then_block_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "flow.yaml",
        """\
        flow: doc
        start: a
        blocks:
          a: {type: set, values: {}, on_error: b, next: bb}
          b: {type: return}
        """,
    )
    raw, marks = read_document(path)
    [problem] = validate_document(raw, REGISTRY, marks=marks)[1]

    assert str(problem.in_file("flow.yaml")) == (
        "flow.yaml:4:49: block 'a': field 'next': unknown target block 'bb' (did you mean 'b'?)"
    )


def test_problems_of_a_dict_document_have_no_position() -> None:
    document = {"flow": "doc", "start": "a", "blocks": {"a": {"type": "sett"}}}
    [problem] = validate_document(document, REGISTRY)[1]

    assert (problem.line, problem.column) == (None, None)
    assert (
        str(problem) == "block 'a': field 'type': unknown block type 'sett' (did you mean 'set'?)"
    )


async def test_add_version_of_text_keeps_the_positions() -> None:
    async with Engine() as engine:
        version = await engine.add_version((DATA / "authoring_positions.yaml").read_text())
        info = await engine.get_version("positions", version)

    assert all(problem.line is not None for problem in info.problems)


# -- suggestions and every problem at once ---------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"type": "sett", "values": {}}, "type", "unknown block type 'sett' (did you mean 'set'?)"),
        ({"type": "set", "values": {}, "nxt": "a"}, "nxt", "unknown field (did you mean 'next'?)"),
        ({"type": "wait", "secnds": 1}, "secnds", "unknown field (did you mean 'seconds'?)"),
        (
            {"type": "set", "values": {}, "retry": {"backof": 1}},
            "retry.backof",
            "unknown field (did you mean 'backoff'?)",
        ),
        ({"type": "set", "values": {}, "next": "bb"}, "next", "unknown target block 'bb'"),
    ],
)
def test_a_mistyped_name_suggests_the_closest_known_one(
    body: dict[str, Any], field: str, message: str
) -> None:
    document = {"flow": "doc", "start": "a", "blocks": {"a": body, "b": {"type": "return"}}}
    problems = {(p.block, p.field): p.message for p in validate_document(document, REGISTRY)[1]}

    assert problems[("a", field)].startswith(message)
    if field == "next":
        assert problems[("a", field)] == "unknown target block 'bb' (did you mean 'b'?)"


def test_an_unknown_field_in_one_block_does_not_hide_a_break_in_another() -> None:
    document = {
        "flow": "doc",
        "start": "a",
        "blocks": {
            "a": {"type": "set", "values": {}, "colour": "red", "next": "b"},
            "b": {"type": "break"},
        },
    }
    problems = validate_document(document, REGISTRY)[1]

    assert [(p.block, p.field, p.message) for p in problems] == [
        ("a", "colour", "unknown field"),
        ("b", None, "'break' outside a loop"),
    ]


def test_run_suggests_the_closest_flow_name(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    write(tmp_path, "cel.yaml", "flow: cel\nstatus: LIVE\nstart: a\nblocks: {a: {type: return}}\n")
    code, _, err = cli(capsys, "run", tmp_path, "celx", "--store", "memory:")

    assert code == 4
    assert "flow 'celx' does not exist; did you mean 'cel'?" in err


async def test_admin_endpoints_suggest_a_flow_name_and_denied_callers_learn_nothing(
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens.yaml"
    admin = add_token(tokens, "root", ["Administrator"])
    user = add_token(tokens, "bob", [])
    async with Engine() as engine:
        await engine.start(
            "cel",
            await engine.add_version(
                {"flow": "cel", "start": "a", "blocks": {"a": {"type": "return"}}}
            ),
        )
        app = create_app(engine, TokenFileAuthenticator(tokens))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            managed = await client.get(
                "/api/flows/celx", headers={"Authorization": f"Bearer {admin}"}
            )
            called = await client.post(
                "/api/flows/celx/activate", headers={"Authorization": f"Bearer {user}"}
            )
            forbidden = await client.get(
                "/api/flows/celx", headers={"Authorization": f"Bearer {user}"}
            )

    assert managed.status_code == 404
    assert "did you mean 'cel'?" in managed.json()["message"]
    assert called.status_code == 404 and "did you mean" not in called.text
    assert forbidden.status_code == 403 and "cel'" not in forbidden.text


# -- the workspace as a whole ----------------------------------------------------------


@pytest.fixture
def calls(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    write(
        root,
        "checkout.yaml",
        """\
        flow: checkout
        start: pay
        blocks:
          pay: {type: call_flow, flow: paymnt, next: note}
          note: {type: call_flow, flow: notify, version: 3}
        """,
    )
    write(
        root,
        "notify.yaml",
        "flow: notify\ncallable_by: [checkot]\nstart: a\nblocks: {a: {type: return}}\n",
    )
    write(root, "payment.yaml", "flow: payment\nstart: a\nblocks: {a: {type: return}}\n")
    write(root, "payment-copy.yaml", "flow: payment\nstart: a\nblocks: {a: {type: return}}\n")
    return root


def test_validate_checks_the_documents_of_a_workspace_against_each_other(
    capsys: pytest.CaptureFixture[str], calls: Path
) -> None:
    code, out, err = cli(capsys, "validate", calls)

    checkout, notify = calls / "checkout.yaml", calls / "notify.yaml"
    first, second = calls / "payment-copy.yaml", calls / "payment.yaml"
    assert code == 2
    assert (
        f"{checkout}:4:32: block 'pay': field 'flow': flow 'paymnt' is not defined in this "
        "workspace (did you mean 'payment'?)"
    ) in out
    assert f"{checkout}:5:50: block 'note': field 'version': flow 'notify' has no version 3" in out
    assert f"{first}:1:7: field 'flow': flow 'payment' is defined by {first} and {second}" in out
    assert f"{second}:1:7: field 'flow': flow 'payment' is defined by {first} and {second}" in out
    assert (
        f"warning: {notify}:2:15: field 'callable_by[0]': unknown flow 'checkot' "
        "(did you mean 'checkout'?)"
    ) in err
    assert f"ok: {notify} (notify)" in out  # a warning does not make a document invalid


def test_a_callable_by_warning_alone_still_validates(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write(
        tmp_path, "a.yaml", "flow: a\ncallable_by: [ghost]\nstart: x\nblocks: {x: {type: return}}\n"
    )
    code, _, err = cli(capsys, "validate", tmp_path)

    assert code == 0
    assert "unknown flow 'ghost'" in err


def test_validate_json_prints_every_file_and_problem(
    capsys: pytest.CaptureFixture[str], calls: Path
) -> None:
    code, out, _ = cli(capsys, "validate", "--json", calls)

    report = json.loads(out)
    assert code == 2 and report["ok"] is False
    assert [entry["file"] for entry in report["files"]] == [
        str(calls / name)
        for name in ("checkout.yaml", "notify.yaml", "payment-copy.yaml", "payment.yaml")
    ]
    by_file = {Path(entry["file"]).name: entry for entry in report["files"]}
    assert by_file["checkout.yaml"]["flow"] == "checkout"
    for entry in report["files"]:
        for problem in entry["problems"]:
            assert set(problem) == {"message", "block", "field", "line", "column", "severity"}
    [warning] = by_file["notify.yaml"]["problems"]
    assert warning["severity"] == "warning" and (warning["line"], warning["column"]) == (2, 15)
    pay = by_file["checkout.yaml"]["problems"][0]
    assert (pay["block"], pay["field"], pay["severity"]) == ("pay", "flow", "error")


def test_validate_json_of_a_valid_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "validate", "--json", EXAMPLES / "hello" / "hello.yaml")

    assert code == 0
    assert json.loads(out) == {
        "ok": True,
        "files": [
            {"file": str(EXAMPLES / "hello" / "hello.yaml"), "flow": "hello", "problems": []}
        ],
    }


def test_a_broken_file_is_one_warning_line_and_the_other_flows_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write(
        tmp_path,
        "echo.yaml",
        'flow: echo\nstatus: LIVE\nstart: a\nblocks: {a: {type: return, value: "=inputs"}}\n',
    )
    write(
        tmp_path,
        "shaky.yaml",
        "flow: shaky\nstatus: LIVE\nowner: me\nstart: a\nblocks:\n  a: {type: sett, next: gone}\n",
    )
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for level in range(8):
        name, inner = chr(98 + level), chr(97 + level)
        bomb.append(f"{name}: &{name} [{', '.join([f'*{inner}'] * 9)}]")
    (tmp_path / "bomb.yaml").write_text("\n".join(bomb) + "\n")
    code, out, err = cli(capsys, "run", tmp_path, "echo", "-i", "x=1", "--store", "memory:")

    assert code == 0 and json.loads(out) == {"x": 1}
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, err
    [shaky] = [line for line in warnings if "shaky.yaml" in line]
    assert (
        f"{tmp_path / 'shaky.yaml'}: field 'owner': unknown field "
        "(line 3, column 1; 2 more problems"
    ) in shaky
    assert sum("bomb.yaml" in line for line in err.splitlines()) == 1


# -- typed expressions -------------------------------------------------------------------


def priced(kind: str, expression: str) -> dict[str, Any]:
    return {
        "flow": "priced",
        "inputs": {"type": "object", "properties": {"price": {"type": kind}}},
        "start": "a",
        "blocks": {"a": {"type": "return", "value": {"total": f"={expression}"}}},
    }


def test_a_number_input_times_an_int_is_a_problem_that_says_to_write_2_0() -> None:
    [problem] = validate_document(priced("number", "inputs.price * 2"), REGISTRY)[1]

    assert (problem.block, problem.field) == ("a", "value")
    assert "expression 'inputs.price * 2' does not type-check" in problem.message
    assert "write 2.0 or double(…)" in problem.message


@pytest.mark.parametrize(
    ("kind", "expression"),
    [
        ("integer", "inputs.price * 2"),
        ("number", "inputs.price * 2.0"),
        ("number", "inputs.price > 1000"),  # the runtime compares an int with a double
        ("number", "has(inputs.price) ? inputs.price : 0"),
    ],
)
def test_well_typed_expressions_are_fine(kind: str, expression: str) -> None:
    assert validate_document(priced(kind, expression), REGISTRY)[1] == []


async def test_inputs_arrive_in_the_types_of_the_schema() -> None:
    async with Engine() as engine:
        await engine.start(
            "priced", await engine.add_version(priced("number", "inputs.price * 2.0"))
        )
        result = await engine.call_flow("priced", {"price": 5})

    assert result.error is None
    assert result.output == {"total": 10.0} and isinstance(result.output["total"], float)


def test_conform_converts_nested_values_and_leaves_the_callers_inputs_alone() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "lines": {
                "type": "array",
                "items": {"type": "object", "properties": {"qty": {"type": "number"}}},
            },
            "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "number"}]},
            "free": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    }
    given = {"n": 27.0, "lines": [{"qty": 2}, {"qty": 1.5}], "pair": [3.0, 4], "free": {"a": 1.0}}
    converted = conform(given, schema)

    assert converted == given
    assert type(converted["n"]) is int and type(converted["lines"][0]["qty"]) is float
    assert type(converted["pair"][0]) is int and type(converted["pair"][1]) is float
    assert type(converted["free"]["a"]) is int
    assert type(given["n"]) is float  # a copy was converted
    assert conform({"n": 27}, schema) == {"n": 27}


def test_conform_walks_deep_values_without_recursion() -> None:
    deep: Any = 1.0
    schema: Any = {"type": "integer"}
    for _ in range(5000):
        deep, schema = [deep], {"type": "array", "items": schema}
    converted = conform({"v": deep}, {"type": "object", "properties": {"v": schema}})

    inner = converted["v"]
    while isinstance(inner, list):
        inner = inner[0]
    assert type(inner) is int


def test_run_collatz_with_27_0_runs_with_the_int_27(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(
        capsys, "run", EXAMPLES / "loops", "collatz", "-i", "n=27.0", "--store", "memory:", "-q"
    )

    assert code == 0, err
    assert json.loads(out) == {"start": 27, "steps": 111, "peak": 9232}
    assert out.split('"start": ')[1].startswith("27,")  # the int, not 27.0


# -- the schema --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> Iterator[dict[str, Any]]:
    code = main(["schema"])
    assert code == 0
    yield document_schema(REGISTRY)


def example_documents() -> list[Path]:
    return sorted(
        path
        for path in EXAMPLES.glob("*/*.yaml")
        if path.name not in ("permissions.yaml", "tokens.yaml")
    )


def test_the_schema_command_prints_a_draft_2020_12_schema(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = cli(capsys, "schema")

    printed = json.loads(out)
    assert code == 0
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(printed)
    assert set(printed["$defs"]["block"]["properties"]["type"]["enum"]) == set(REGISTRY)
    assert "max_iterations" in printed["$defs"]["block-repeat"]["properties"]


@pytest.mark.parametrize("path", example_documents(), ids=lambda path: path.stem)
def test_every_example_validates_against_the_schema(path: Path, schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(schema).validate(load_yaml(path.read_text()))


def test_the_schema_refuses_what_validation_refuses(schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    errors = list(validator.iter_errors(load_yaml((DATA / "core_every_problem.yaml").read_text())))

    assert {error.message.split(" (")[0] for error in errors} >= {
        "Additional properties are not allowed"
    }
    assert any("'teleport' is not one of" in error.message for error in errors)


def test_the_schema_has_the_parameters_of_a_custom_block() -> None:
    class Greet(Params):
        name: str
        loud: bool = False

    @block("greet", params=Greet, description="Greets someone.")
    async def greet(ctx: Any, params: Greet) -> None:
        return None

    custom = document_schema(BlockRegistry([greet]))
    validator = jsonschema.Draft202012Validator(custom)
    document = {"flow": "g", "start": "a", "blocks": {"a": {"type": "greet", "name": "Ada"}}}

    assert custom["$defs"]["block-greet"]["description"] == "Greets someone."
    assert validator.is_valid(document)
    document["blocks"]["a"]["volume"] = 3
    assert not validator.is_valid(document)


async def test_a_workspace_logs_one_warning_per_broken_document(tmp_path: Path) -> None:
    write(tmp_path, "ok.yaml", "flow: ok\nstatus: LIVE\nstart: a\nblocks: {a: {type: return}}\n")
    write(
        tmp_path, "bad.yaml", "flow: bad\nstatus: LIVE\nstart: a\nblocks: {a: {type: sett, x: 1}}\n"
    )
    with capture_logs() as events:
        async with await Engine.open_workspace(tmp_path) as engine:
            result = await engine.call_flow("ok")

    warnings = [e["message"] for e in events if e["event"] == "workspace.warning"]
    assert result.error is None
    assert len(warnings) == 1 and warnings[0].startswith(f"{tmp_path / 'bad.yaml'}: block 'a'")
