"""CEL expressions and value templates: compiled once, evaluated per use."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from blocks import Expression, ExpressionError, Params, Template
from blocks._values import CelTypes


class _Fields(Params):
    condition: Expression
    value: Template


def test_expression_evaluates_in_the_scope_it_is_given() -> None:
    expression = Expression("inputs.amount * 2 + vars.bonus")

    assert expression.evaluate({"inputs": {"amount": 20}, "vars": {"bonus": 1}}) == 41


def test_expression_reports_only_the_top_level_names_it_references() -> None:
    expression = Expression("inputs.a > vars.b")

    assert set(expression.names) == {"inputs", "vars"}


def test_expression_ignores_names_in_scope_it_does_not_reference() -> None:
    class Exploding:
        def __getattr__(self, name: str) -> None:
            raise AssertionError("unrelated scope entries must not be touched")

    assert Expression("inputs.x").evaluate({"inputs": {"x": 3}, "other": Exploding()}) == 3


@pytest.mark.parametrize("source", ["1 +", "a.b(", "inputs.x >", "'unterminated"])
def test_expression_that_does_not_compile_is_a_value_error_naming_it(source: str) -> None:
    with pytest.raises(ValueError, match="does not compile") as caught:
        Expression(source)

    assert repr(source) in str(caught.value)


@pytest.mark.parametrize("source", ["", "   "])
def test_empty_expression_is_refused(source: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        Expression(source)


def test_expression_must_be_text() -> None:
    with pytest.raises(TypeError, match="must be a string"):
        Expression(42)  # type: ignore[arg-type]


def test_evaluation_failure_is_an_expression_error_naming_the_expression() -> None:
    expression = Expression("inputs.missing + 1")

    with pytest.raises(ExpressionError) as caught:
        expression.evaluate({"inputs": {}})

    assert caught.value.source == "inputs.missing + 1"
    assert "'inputs.missing + 1'" in str(caught.value)
    assert "missing" in caught.value.detail


def test_int_and_double_do_not_mix_in_arithmetic() -> None:
    with pytest.raises(ExpressionError, match="overload"):
        Expression("inputs.n + 2.5").evaluate({"inputs": {"n": 1}})

    assert Expression("double(inputs.n) + 2.5").evaluate({"inputs": {"n": 1}}) == 3.5


def test_division_by_zero_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="division by zero"):
        Expression("1 / inputs.d").evaluate({"inputs": {"d": 0}})


def test_undefined_name_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="nowhere"):
        Expression("nowhere + 1").evaluate({})


def test_expressions_compare_and_hash_by_source() -> None:
    assert Expression("a + 1") == Expression("a + 1")
    assert Expression("a + 1") != Expression("a + 2")
    assert len({Expression("x"), Expression("x")}) == 1


def test_template_without_expressions_is_constant_and_renders_its_literal() -> None:
    template = Template({"a": [1, "two", {"three": None}], "b": True})

    assert template.is_constant
    assert template.expressions == ()
    assert template.render({}) == {"a": [1, "two", {"three": None}], "b": True}


def test_template_renders_a_fresh_copy_each_time() -> None:
    template = Template({"items": [{"n": 1}]})

    first = template.render({})
    first["items"][0]["n"] = 99
    first["extra"] = 1

    assert template.render({}) == {"items": [{"n": 1}]}


def test_template_evaluates_strings_starting_with_equals_at_any_depth() -> None:
    template = Template(
        {"top": "=inputs.a", "nested": {"list": [1, "=inputs.a * 10", {"deep": "=vars.b"}]}}
    )

    rendered = template.render({"inputs": {"a": 2}, "vars": {"b": "bee"}})

    assert rendered == {"top": 2, "nested": {"list": [1, 20, {"deep": "bee"}]}}
    assert [e.source for e in template.expressions] == ["inputs.a", "inputs.a * 10", "vars.b"]
    assert not template.is_constant


def test_template_scalar_expression_renders_to_a_value_of_any_type() -> None:
    assert Template("=[1, 2, 3]").render({}) == [1, 2, 3]
    assert Template("={'k': inputs.v}").render({"inputs": {"v": 1.5}}) == {"k": 1.5}


def test_double_equals_escapes_a_literal_string_starting_with_equals() -> None:
    template = Template({"formula": "==inputs.a", "list": ["==x", "===y"]})

    assert template.is_constant
    assert template.render({"inputs": {"a": 1}}) == {"formula": "=inputs.a", "list": ["=x", "==y"]}


def test_equals_in_the_middle_of_a_string_is_literal() -> None:
    assert Template("a = b").render({}) == "a = b"


def test_template_with_an_expression_that_does_not_compile_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'inputs.a \+' does not compile"):
        Template({"deep": [{"deeper": "=inputs.a +"}]})


def test_template_refuses_values_that_are_not_json() -> None:
    with pytest.raises(ValueError, match="not a JSON value"):
        Template({"when": object()})
    with pytest.raises(ValueError, match="keys must be strings"):
        Template({1: "one"})


def test_template_evaluation_failure_is_an_expression_error() -> None:
    template = Template({"a": "=inputs.x / 0"})

    with pytest.raises(ExpressionError, match=r"'inputs\.x / 0'"):
        template.render({"inputs": {"x": 1}})


def test_expression_field_accepts_a_leading_equals_and_yaml_scalars() -> None:
    assert _Fields(condition="=inputs.a > 1", value=1).condition == Expression("inputs.a > 1")
    assert _Fields(condition=True, value=1).condition.evaluate({}) is True
    assert _Fields(condition=3, value=1).condition.evaluate({}) == 3


def test_expression_field_refuses_non_text() -> None:
    with pytest.raises(ValidationError, match="expected CEL text"):
        _Fields(condition=["a"], value=1)


def test_fields_serialize_back_to_their_source() -> None:
    fields = _Fields(condition="=inputs.a", value={"x": "=vars.y", "z": "==lit"})

    assert fields.model_dump() == {"condition": "inputs.a", "value": {"x": "=vars.y", "z": "==lit"}}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("vars.x + vars.y", 3),
        ("has(vars.z) ? vars.z : vars.x", 1),
        ("vars['x'] + 1", 2),
        ("size(vars)", 3),
        ("vars.x == 1 && inputs.a.b == 'deep'", True),
        ("[vars.x, vars . y]", [1, 2]),
    ],
)
def test_an_expression_sees_every_variable_it_reads_however_it_reads_them(
    source: str, expected: object
) -> None:
    scope = {"vars": {"x": 1, "y": 2, "big": list(range(50))}, "inputs": {"a": {"b": "deep"}}}
    assert Expression(source).evaluate(scope) == expected


def test_a_missing_variable_is_still_missing_when_only_named_fields_are_handed_over() -> None:
    with pytest.raises(ExpressionError, match="nope"):
        Expression("vars.nope + 1").evaluate({"vars": {"x": 1}})


def test_a_constant_object_of_scalars_is_offered_for_direct_update() -> None:
    assert Template({"a": 1, "b": "x"}).scalar_object == {"a": 1, "b": "x"}
    assert Template({"a": [1]}).scalar_object is None
    assert Template({"a": "=1"}).scalar_object is None


# -- declared types and bounded cost -------------------------------------------------------

_PRICED = {"type": "object", "properties": {"price": {"type": "number"}, "n": {"type": "integer"}}}


def test_an_inputs_schema_declares_the_types_of_its_properties_at_any_depth() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "price": {"type": "number"},
            "name": {"type": "string"},
            "ok": {"type": "boolean"},
            "lines": {"type": "array", "items": {"type": "object"}},
            "order": {"type": "object", "properties": {"total": {"type": "number"}}},
            "either": {"type": ["integer", "null"]},
            "first-name": {"type": "string"},
            "in": {"type": "string"},
        },
    }

    assert CelTypes.from_inputs_schema(schema) == CelTypes(
        {
            "inputs": "map",
            "inputs.n": "int",
            "inputs.price": "double",
            "inputs.name": "string",
            "inputs.ok": "bool",
            "inputs.lines": "list",
            "inputs.order": "map",
            "inputs.order.total": "double",
        }
    )
    assert CelTypes.from_inputs_schema(None) == CelTypes()


def test_type_check_refuses_an_int_times_a_declared_double_naming_the_fix() -> None:
    problem = Expression("inputs.price * 2").check(CelTypes.from_inputs_schema(_PRICED))

    assert problem is not None
    assert "'inputs.price * 2'" in problem
    assert "2.0" in problem and "double(" in problem


@pytest.mark.parametrize(
    "source",
    [
        "inputs.n * 2",
        "inputs.price * 2.0",
        "double(inputs.n) * inputs.price",
        "has(inputs.price) && inputs.price > 1.0",
        "vars.total + item * index",
        "inputs.undeclared * 2",
    ],
)
def test_type_check_accepts_what_the_declared_types_allow(source: str) -> None:
    assert Expression(source).check(CelTypes.from_inputs_schema(_PRICED)) is None


def test_without_declared_types_every_name_is_dynamic() -> None:
    assert Expression("inputs.price * 2").check(CelTypes()) is None
    assert Expression("inputs.price * 2").evaluate({"inputs": {"price": 3}}) == 6


def test_type_check_of_a_template_reports_each_expression_that_fails() -> None:
    template = Template({"a": "=inputs.price * 2", "b": ["=inputs.n * 2", "=inputs.price + 1"]})

    problems = template.check(CelTypes.from_inputs_schema(_PRICED))

    assert [problem.split(" does not")[0] for problem in problems] == [
        "expression 'inputs.price * 2'",
        "expression 'inputs.price + 1'",
    ]


@pytest.mark.parametrize(
    "source",
    [
        "inputs.lines.filter(l, l.qty >= 10)",
        "inputs.lines.map(l, l.qty * 2)",
        "inputs.lines.all(l, l.qty >= 0)",
        "inputs.lines.exists(l, l.qty < 0)",
    ],
)
def test_a_comprehension_over_10000_items_completes_or_hits_the_cost_limit_quickly(
    source: str,
) -> None:
    expression = Expression(source)
    scope = {"inputs": {"lines": [{"qty": i % 20} for i in range(10_000)]}}

    start = time.perf_counter()
    try:
        expression.evaluate(scope)
    except ExpressionError as exc:
        assert "cost limit reached" in exc.detail
    assert time.perf_counter() - start < 0.5


def test_a_comprehension_within_the_cost_limit_completes() -> None:
    lines = [{"qty": i % 20} for i in range(500)]

    result = Expression("inputs.lines.filter(l, l.qty >= 10)").evaluate(
        {"inputs": {"lines": lines}}
    )

    assert len(result) == 250
