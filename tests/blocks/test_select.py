"""Selection paths (``vars.x``) read without CEL give exactly CEL's answers."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from blocks import Expression, ExpressionError
from blocks._select import MISS, select, selection

KEYS = st.sampled_from(["a", "b", "x", "total"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 64), max_value=1 << 64),  # past int64 both ways
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)
ODD = st.one_of(  # not plain JSON: CEL must decide what these give
    st.tuples(st.integers()),
    st.binary(max_size=3),
    st.frozensets(st.integers(), max_size=2),
    st.builds(object),
    st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2),
)
VALUES = st.recursive(
    st.one_of(SCALARS, ODD),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12,
)
PATHS = st.tuples(st.sampled_from(["vars", "inputs"]), st.lists(KEYS, min_size=1, max_size=3))


def outcome(expression: Expression, scope: dict[str, Any]) -> tuple[str, Any]:
    try:
        value = expression.evaluate(scope)
    except ExpressionError as exc:
        return "error", exc.detail
    if isinstance(value, float) and math.isnan(value):
        return "value", ("nan", type(value))
    return "value", (value, type(value))


@settings(max_examples=600, deadline=None)
@given(path=PATHS, vars_=st.dictionaries(KEYS, VALUES, max_size=4), inputs=VALUES)
def test_a_selection_gives_what_cel_gives(
    path: tuple[str, list[str]], vars_: dict[str, Any], inputs: Any
) -> None:
    name, keys = path
    source = ".".join([name, *keys])
    fast = Expression(source)
    # the same selection in parentheses is not a bare path: CEL evaluates it
    reference = Expression(f"({source})")
    scope = {"vars": vars_, "inputs": inputs, "run": {"id": "r"}}

    assert outcome(fast, scope) == outcome(reference, scope)


def test_plain_values_are_read_without_cel() -> None:
    scope = {"vars": {"x": 1, "f": 2.0, "n": None, "o": {"a": {"b": "deep"}}}, "inputs": {}}

    assert select(scope, ("vars", "x")) == 1
    assert type(select(scope, ("vars", "f"))) is float
    assert select(scope, ("vars", "n")) is None
    assert select(scope, ("vars", "o", "a", "b")) == "deep"
    assert Expression("vars.o.a.b").evaluate(scope) == "deep"


def test_what_only_cel_can_answer_is_left_to_it() -> None:
    scope = {"vars": {"big": 1 << 63, "t": (1,), "l": [1], "o": {"a": object()}}}

    for path in [("vars", "missing"), ("vars", "big"), ("vars", "t"), ("vars", "l")]:
        assert select(scope, path) is MISS
    assert select(scope, ("vars", "o", "b")) is MISS  # CEL would convert all of vars.o
    assert select({"vars": [1]}, ("vars", "x")) is MISS


def test_missing_keys_and_wrong_types_fail_as_in_cel() -> None:
    scope = {"vars": {"x": 1, "s": "text"}, "inputs": {}}

    for source in ["vars.missing", "vars.x.y", "vars.s.y", "inputs.a"]:
        fast, reference = Expression(source), Expression(f"({source})")
        try:
            reference.evaluate(scope)
        except ExpressionError as expected:
            try:
                fast.evaluate(scope)
            except ExpressionError as got:
                assert got.detail == expected.detail
                assert got.source == source
            else:
                raise AssertionError(f"{source} did not fail")
        else:
            raise AssertionError(f"({source}) did not fail")


def test_only_bare_paths_on_vars_and_inputs_are_selections() -> None:
    assert selection("vars.x", ("vars",)) == ("vars", "x")
    assert selection(" inputs.a.b ", ("inputs",)) == ("inputs", "a", "b")
    for source in ["vars", "vars.x + 1", "run.id", "vars['x']", "(vars.x)", "item.x"]:
        assert selection(source, ("vars",)) is None
