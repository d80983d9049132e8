"""The plain check of ``inputs`` schemas against jsonschema, the authority it stands in for:
whatever the plain check calls valid, jsonschema must call valid too."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine._model.inputs import InputsValidator, _conforms, plain, schema_problems

TYPES = ["array", "boolean", "integer", "null", "number", "object", "string"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(-5, 5),
    st.sampled_from([float("nan"), float("inf")]),
    st.sampled_from([0.0, 1.0, 2.0, -1.0]),
    st.text(max_size=4),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), inner, max_size=3),
    ),
    max_leaves=8,
)
# keyword values of the right kind, and now and then of a wrong one
counts = st.one_of(st.integers(0, 4), st.sampled_from([-1, 1.0, True, "2"]))
bounds = st.one_of(st.integers(-3, 3), st.floats(-3, 3), st.sampled_from([True, "1", None]))
kinds = st.one_of(
    st.sampled_from([*TYPES, "float", 1]),
    st.lists(st.sampled_from(TYPES), max_size=3),
)


def keywords(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    options = {
        "type": kinds,
        "properties": st.one_of(
            st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
            st.just([]),
        ),
        "required": st.one_of(
            st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=3), st.just("a")
        ),
        "additionalProperties": inner,
        "items": inner,
        "enum": st.one_of(st.lists(values, max_size=4), st.just("x")),
        "const": values,
        "title": st.one_of(st.text(max_size=3), st.just(1)),
        "default": values,
        "minLength": counts,
        "maxLength": counts,
        "minItems": counts,
        "maxItems": counts,
        "minimum": bounds,
        "maximum": bounds,
        "exclusiveMinimum": bounds,
        "exclusiveMaximum": bounds,
        "pattern": st.just("^a"),  # not a plain keyword
    }
    return st.fixed_dictionaries({}, optional=options)


right_bounds = st.integers(-3, 3) | st.floats(-3, 3)
flat = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(TYPES) | st.lists(st.sampled_from(TYPES), min_size=1, unique=True),
        "enum": st.lists(scalars, max_size=4),
        "const": scalars,
        **{key: st.integers(0, 4) for key in ("minLength", "maxLength", "minItems", "maxItems")},
        **{key: right_bounds for key in ("minimum", "maximum")},
        **{key: right_bounds for key in ("exclusiveMinimum", "exclusiveMaximum")},
    },
)


def schemas() -> st.SearchStrategy[Any]:
    """Nested schemas with keyword values of any kind, and flat plain ones (which meet
    scalars far more often)."""
    nested = st.recursive(st.booleans() | st.just({}), keywords, max_leaves=6)
    return st.one_of(flat, nested)


def valid(schema: Any, value: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)


@settings(max_examples=400, deadline=None)
@given(schemas())
def test_a_plain_schema_is_a_valid_schema(schema: Any) -> None:
    if plain(schema):
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema_problems(schema) == []


@settings(max_examples=1500, deadline=None)
@given(schemas(), scalars | values)
def test_what_the_plain_check_calls_valid_jsonschema_calls_valid(schema: Any, value: Any) -> None:
    if plain(schema) and _conforms(value, schema):
        assert valid(schema, value)


@settings(max_examples=400, deadline=None)
@given(schemas(), scalars | values)
def test_the_validator_reports_what_jsonschema_reports(schema: Any, value: Any) -> None:
    if not isinstance(schema, dict):
        return
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError:
        return
    expected = sorted(e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(value))
    assert sorted(e.message for e in InputsValidator(schema).iter_errors(value)) == expected


HELLO = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "lang": {"type": "string", "enum": ["en", "fr", "de", "es"]},
    },
}


@pytest.mark.parametrize("inputs", [{}, {"name": "Ada"}, {"name": "Ada", "lang": "fr"}])
def test_the_plain_check_vouches_for_valid_inputs_of_a_plain_schema(inputs: Any) -> None:
    assert plain(HELLO)
    assert _conforms(inputs, HELLO)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [({"name": ""}, "should be non-empty"), ({"lang": "it"}, "is not one of"), ([], "not of type")],
)
def test_invalid_inputs_get_jsonschemas_own_message(inputs: Any, message: str) -> None:
    errors = list(InputsValidator(HELLO).iter_errors(inputs))
    assert len(errors) == 1
    assert message in errors[0].message


def test_a_schema_with_other_keywords_goes_to_jsonschema() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "string", "pattern": "^a"}}}
    assert not plain(schema)
    assert [e.message for e in InputsValidator(schema).iter_errors({"n": "b"})] == [
        "'b' does not match '^a'"
    ]
    assert schema_problems({"type": "strin"})[0].message.startswith("not a valid JSON Schema")


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ({"type": "object", "required": ["a"]}, {"b": 1}),
        ({"properties": {"a": {"type": "integer"}}, "additionalProperties": False}, {"b": 1}),
        ({"items": {"type": "string"}, "maxItems": 2}, ["a", 1]),
        ({"items": {"type": "string"}, "maxItems": 2}, ["a", "b", "c"]),
        ({"type": "integer"}, 1.5),
        ({"enum": [1, "a"]}, True),
        ({"const": 0}, False),
        ({"exclusiveMaximum": 3}, 3),
        ({"minimum": 0}, -0.5),
        ({"maxLength": 1}, "ab"),
    ],
)
def test_the_plain_check_never_vouches_for_invalid_inputs(schema: Any, value: Any) -> None:
    assert plain(schema)
    assert not _conforms(value, schema)
    assert not valid(schema, value)
    assert [e.message for e in InputsValidator(schema).iter_errors(value)] == [
        e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(value)
    ]
