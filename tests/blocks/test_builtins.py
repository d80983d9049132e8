"""The built-in blocks (all but call_flow), each run through a real engine."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from engine import Engine, Limits, RunResult, RunStatus, TraceEntry
from engine.testing import deploy


async def run(
    engine: Engine, blocks: Mapping[str, Any], inputs: Mapping[str, Any] | None = None, **extra: Any
) -> RunResult:
    """Add a one-off flow whose start is the first block, start it and run it once."""
    await deploy(engine, blocks, flow="subject", **extra)
    return await engine.call_flow("subject", inputs)


def executed(result: RunResult) -> list[str]:
    """Block ids in the order their trace entries were recorded."""
    return [entry.block for entry in result.trace]


def max_overlap(entries: list[TraceEntry]) -> int:
    """The largest number of trace entries whose intervals overlap at one instant."""
    events = sorted(
        [(e.start, 1) for e in entries] + [(e.start + e.duration, -1) for e in entries],
        key=lambda event: (event[0], event[1]),
    )
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


# -- set -----------------------------------------------------------------------------------


async def test_set_assigns_run_variables_from_literals_and_expressions(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "a": {
                "type": "set",
                "values": {"n": "=inputs.n * 2", "name": "Ada", "nested": {"l": ["=inputs.n"]}},
                "next": "b",
            },
            "b": {"type": "set", "values": {"m": "=vars.n + 1"}, "next": "done"},
            "done": {"type": "return", "value": "=vars"},
        },
        {"n": 4},
    )

    assert result.status is RunStatus.COMPLETED
    assert result.output == {"n": 8, "name": "Ada", "nested": {"l": [4]}, "m": 9}


async def test_set_escapes_a_literal_equals_string(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "a": {"type": "set", "values": {"f": "==1+1"}, "next": "done"},
            "done": {"type": "return", "value": "=vars.f"},
        },
    )

    assert result.output == "=1+1"


async def test_path_that_ends_without_return_completes_with_null_output(engine: Engine) -> None:
    result = await run(engine, {"a": {"type": "set", "values": {"x": 1}}})

    assert result.status is RunStatus.COMPLETED
    assert result.output is None
    assert result.error is None
    assert executed(result) == ["a"]


# -- condition -----------------------------------------------------------------------------


CONDITION = {
    "check": {"type": "condition", "if": "inputs.amount > 1000", "then": "big", "else": "small"},
    "big": {"type": "return", "value": "big"},
    "small": {"type": "return", "value": "small"},
}


@pytest.mark.parametrize(("amount", "expected"), [(5000, "big"), (1000, "small"), (3, "small")])
async def test_condition_takes_then_or_else(engine: Engine, amount: int, expected: str) -> None:
    result = await run(engine, CONDITION, {"amount": amount})

    assert result.output == expected
    assert result.trace[0].outcome == ("then" if expected == "big" else "else")


async def test_condition_without_the_taken_port_ends_the_path(engine: Engine) -> None:
    blocks = {
        "check": {"type": "condition", "if": "inputs.go", "then": "yes"},
        "yes": {"type": "return", "value": "went"},
    }

    assert (await run(engine, blocks, {"go": True})).output == "went"


async def test_condition_missing_else_completes_with_null(engine: Engine) -> None:
    blocks = {
        "check": {"type": "condition", "if": "inputs.go", "then": "yes", "next": "after"},
        "yes": {"type": "return", "value": "went"},
        "after": {"type": "return", "value": "next is not the else port"},
    }

    result = await run(engine, blocks, {"go": False})

    assert result.status is RunStatus.COMPLETED
    assert result.output is None
    assert executed(result) == ["check"]


async def test_condition_that_does_not_give_a_boolean_is_an_expression_error(
    engine: Engine,
) -> None:
    result = await run(
        engine, {"check": {"type": "condition", "if": "inputs.n", "then": "check"}}, {"n": 1}
    )

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.code == "expression"
    assert result.error.block == "check"
    assert "boolean" in result.error.message


# -- router --------------------------------------------------------------------------------


ROUTER = {
    "route": {
        "type": "router",
        "value": "inputs.v",
        "routes": {"a": "to_a", "true": "to_true", "1": "to_one", "null": "to_null"},
        "default": "other",
    },
    "to_a": {"type": "return", "value": "a"},
    "to_true": {"type": "return", "value": "true"},
    "to_one": {"type": "return", "value": "one"},
    "to_null": {"type": "return", "value": "null"},
    "other": {"type": "return", "value": "default"},
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a", "a"), (True, "true"), (1, "one"), ("1", "one"), (None, "null"), ("zzz", "default")],
)
async def test_router_matches_the_string_form_of_its_value(
    engine: Engine, value: Any, expected: str
) -> None:
    result = await run(engine, ROUTER, {"v": value})

    assert result.status is RunStatus.COMPLETED
    assert result.output == expected


async def test_router_trace_outcome_is_the_route_taken(engine: Engine) -> None:
    result = await run(engine, ROUTER, {"v": "a"})

    assert result.trace[0].outcome == "a"
    assert executed(result) == ["route", "to_a"]


async def test_router_without_match_or_default_ends_the_path(engine: Engine) -> None:
    blocks = {
        "route": {"type": "router", "value": "'x'", "routes": {"y": "y"}, "next": "after"},
        "y": {"type": "return", "value": "y"},
        "after": {"type": "return", "value": "after"},
    }

    result = await run(engine, blocks)

    assert result.status is RunStatus.COMPLETED
    assert result.output is None


async def test_router_route_named_default_does_not_capture_unmatched_values(
    engine: Engine,
) -> None:
    blocks = {
        "route": {"type": "router", "value": "'zzz'", "routes": {"default": "a"}, "default": "b"},
        "a": {"type": "return", "value": "route named default"},
        "b": {"type": "return", "value": "the default"},
    }

    assert (await run(engine, blocks)).output == "the default"


# -- repeat --------------------------------------------------------------------------------


async def test_repeat_runs_its_body_while_the_condition_holds(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "init": {"type": "set", "values": {"n": 0, "seen": []}, "next": "loop"},
            "loop": {"type": "repeat", "while": "vars.n < 3", "body": "inc", "next": "done"},
            "inc": {
                "type": "set",
                "values": {"n": "=vars.n + 1", "seen": "=vars.seen + [iteration]"},
            },
            "done": {"type": "return", "value": "=vars"},
        },
    )

    assert result.status is RunStatus.COMPLETED
    assert result.output == {"n": 3, "seen": [1, 2, 3]}


async def test_repeat_checks_the_condition_before_the_first_iteration(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "loop": {"type": "repeat", "while": "false", "body": "boom", "next": "done"},
            "boom": {"type": "fail", "message": "must not run"},
            "done": {"type": "return", "value": "skipped"},
        },
    )

    assert result.output == "skipped"
    assert "boom" not in executed(result)


async def test_repeat_while_may_use_the_iteration_number(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "init": {"type": "set", "values": {"count": 0}, "next": "loop"},
            "loop": {"type": "repeat", "while": "iteration <= 4", "body": "inc", "next": "done"},
            "inc": {"type": "set", "values": {"count": "=vars.count + 1"}},
            "done": {"type": "return", "value": "=vars.count"},
        },
    )

    assert result.output == 4


async def test_repeat_over_max_iterations_fails_with_max_iterations(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "init": {"type": "set", "values": {"n": 0}, "next": "loop"},
            "loop": {"type": "repeat", "while": "true", "body": "inc", "max_iterations": 5},
            "inc": {"type": "set", "values": {"n": "=vars.n + 1"}},
        },
    )

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.code == "max_iterations"
    assert result.error.block == "loop"
    assert "5" in result.error.message
    assert executed(result).count("inc") == 5


async def test_repeat_default_maximum_comes_from_the_engine_limits() -> None:
    async with Engine(limits=Limits(max_iterations=7)) as engine:
        result = await run(
            engine,
            {
                "init": {"type": "set", "values": {"n": 0}, "next": "loop"},
                "loop": {"type": "repeat", "while": "true", "body": "inc"},
                "inc": {"type": "set", "values": {"n": "=vars.n + 1"}},
            },
        )

    assert result.error is not None
    assert result.error.code == "max_iterations"
    assert executed(result).count("inc") == 7


async def test_repeat_max_iterations_error_can_be_handled(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "loop": {
                "type": "repeat",
                "while": "true",
                "body": "noop",
                "max_iterations": 2,
                "on_error": "handled",
            },
            "noop": {"type": "set", "values": {"x": 1}},
            "handled": {"type": "return", "value": "=vars.error.code"},
        },
    )

    assert result.status is RunStatus.COMPLETED
    assert result.has_errors
    assert result.output == "max_iterations"


async def test_repeat_while_that_is_not_boolean_is_an_expression_error(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "loop": {"type": "repeat", "while": "1", "body": "noop"},
            "noop": {"type": "set", "values": {"x": 1}},
        },
    )

    assert result.error is not None
    assert (result.error.code, result.error.block) == ("expression", "loop")


# -- for_each ------------------------------------------------------------------------------


async def test_for_each_binds_item_and_index_per_iteration(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "init": {"type": "set", "values": {"seen": []}, "next": "each"},
            "each": {"type": "for_each", "items": "inputs.names", "body": "add", "next": "done"},
            "add": {"type": "set", "values": {"seen": "=vars.seen + [[index, item]]"}},
            "done": {"type": "return", "value": "=vars.seen"},
        },
        {"names": ["x", "y", "z"]},
    )

    assert result.output == [[0, "x"], [1, "y"], [2, "z"]]


async def test_for_each_as_names_the_loop_variable(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "init": {"type": "set", "values": {"total": 0}, "next": "each"},
            "each": {
                "type": "for_each",
                "items": "[1, 2, 3]",
                "as": "n",
                "body": "add",
                "next": "done",
            },
            "add": {"type": "set", "values": {"total": "=vars.total + n * 10"}},
            "done": {"type": "return", "value": "=vars.total"},
        },
    )

    assert result.output == 60


async def test_for_each_body_is_a_path_along_next(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "init": {"type": "set", "values": {"out": []}, "next": "each"},
            "each": {"type": "for_each", "items": "['a', 'b']", "body": "first", "next": "done"},
            "first": {
                "type": "set",
                "values": {"out": "=vars.out + [item + '1']"},
                "next": "second",
            },
            "second": {"type": "set", "values": {"out": "=vars.out + [item + '2']"}},
            "done": {"type": "return", "value": "=vars.out"},
        },
    )

    assert result.output == ["a1", "a2", "b1", "b2"]


async def test_for_each_over_an_empty_list_skips_the_body(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "each": {"type": "for_each", "items": "[]", "body": "boom", "next": "done"},
            "boom": {"type": "fail"},
            "done": {"type": "return", "value": "empty"},
        },
    )

    assert result.output == "empty"


async def test_for_each_items_that_are_not_a_list_is_an_expression_error(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "each": {"type": "for_each", "items": "inputs.n", "body": "noop"},
            "noop": {"type": "set", "values": {"x": 1}},
        },
        {"n": 5},
    )

    assert result.error is not None
    assert (result.error.code, result.error.block) == ("expression", "each")
    assert "list" in result.error.message


async def test_for_each_with_concurrency_runs_that_many_iterations_at_once(
    engine: Engine,
) -> None:
    result = await run(
        engine,
        {
            "each": {
                "type": "for_each",
                "items": "[1, 2, 3, 4, 5, 6]",
                "body": "pause",
                "concurrency": 3,
                "next": "done",
            },
            "pause": {"type": "wait", "seconds": 0.15},
            "done": {"type": "return", "value": "finished"},
        },
    )

    waits = [entry for entry in result.trace if entry.block == "pause"]
    assert result.output == "finished"
    assert len(waits) == 6
    assert max_overlap(waits) == 3


async def test_for_each_default_concurrency_is_one(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "each": {"type": "for_each", "items": "[1, 2, 3]", "body": "pause"},
            "pause": {"type": "wait", "seconds": 0.05},
        },
    )

    waits = [entry for entry in result.trace if entry.block == "pause"]
    assert len(waits) == 3
    assert max_overlap(waits) == 1


async def test_concurrent_for_each_binds_each_iteration_its_own_item(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "init": {"type": "set", "values": {"seen": []}, "next": "each"},
            "each": {
                "type": "for_each",
                "items": "['a', 'b', 'c', 'd']",
                "body": "pause",
                "concurrency": 4,
                "next": "done",
            },
            "pause": {"type": "wait", "seconds": "=0.05 * double(3 - index)", "next": "mark"},
            "mark": {"type": "set", "values": {"seen": "=vars.seen + [[index, item]]"}},
            "done": {"type": "return", "value": "=vars.seen"},
        },
    )

    assert result.status is RunStatus.COMPLETED, result.error
    assert sorted(result.output) == [[0, "a"], [1, "b"], [2, "c"], [3, "d"]]
    assert result.output[0] == [3, "d"]


async def test_concurrent_for_each_failure_fails_the_loop_and_stops_the_rest(
    engine: Engine,
) -> None:
    started = time.monotonic()
    result = await run(
        engine,
        {
            "each": {
                "type": "for_each",
                "items": "[0, 1, 2]",
                "body": "step",
                "concurrency": 3,
                "on_error": "handled",
            },
            "step": {"type": "condition", "if": "item == 2", "then": "boom", "else": "slow"},
            "boom": {"type": "fail", "code": "bad_item", "message": "=string(item)"},
            "slow": {"type": "wait", "seconds": 10},
            "handled": {"type": "return", "value": "=vars.error"},
        },
    )

    assert time.monotonic() - started < 5
    assert result.status is RunStatus.COMPLETED
    assert result.output == {"code": "bad_item", "message": "2", "block": "boom"}
    assert [e.outcome for e in result.trace if e.block == "slow"] == ["cancelled", "cancelled"]
    assert [e.outcome for e in result.trace if e.block == "each"] == ["bad_item"]


# -- break ---------------------------------------------------------------------------------


async def test_break_leaves_a_repeat(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "init": {"type": "set", "values": {"n": 0}, "next": "loop"},
            "loop": {"type": "repeat", "while": "true", "body": "inc", "next": "done"},
            "inc": {"type": "set", "values": {"n": "=vars.n + 1"}, "next": "check"},
            "check": {"type": "condition", "if": "vars.n == 3", "then": "stop"},
            "stop": {"type": "break"},
            "done": {"type": "return", "value": "=vars.n"},
        },
    )

    assert result.status is RunStatus.COMPLETED
    assert result.output == 3


async def test_break_leaves_a_for_each(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "init": {"type": "set", "values": {"seen": []}, "next": "each"},
            "each": {"type": "for_each", "items": "[1, 2, 3, 4]", "body": "check", "next": "done"},
            "check": {"type": "condition", "if": "item == 3", "then": "stop", "else": "add"},
            "add": {"type": "set", "values": {"seen": "=vars.seen + [item]"}},
            "stop": {"type": "break"},
            "done": {"type": "return", "value": "=vars.seen"},
        },
    )

    assert result.output == [1, 2]


async def test_break_leaves_only_the_innermost_loop(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "init": {"type": "set", "values": {"pairs": []}, "next": "outer"},
            "outer": {
                "type": "for_each",
                "items": "[1, 2]",
                "as": "i",
                "body": "inner",
                "next": "done",
            },
            "inner": {"type": "for_each", "items": "[1, 2, 3]", "as": "j", "body": "check"},
            "check": {"type": "condition", "if": "j == 2", "then": "stop", "else": "add"},
            "add": {"type": "set", "values": {"pairs": "=vars.pairs + [[i, j]]"}},
            "stop": {"type": "break"},
            "done": {"type": "return", "value": "=vars.pairs"},
        },
    )

    assert result.output == [[1, 1], [2, 1]]


async def test_break_in_a_concurrent_for_each_stops_the_loop(engine: Engine) -> None:
    started = time.monotonic()
    result = await run(
        engine,
        {
            "each": {
                "type": "for_each",
                "items": "[0, 1, 2, 3]",
                "body": "check",
                "concurrency": 2,
                "next": "done",
            },
            "check": {"type": "condition", "if": "item == 0", "then": "stop", "else": "slow"},
            "stop": {"type": "break"},
            "slow": {"type": "wait", "seconds": 10},
            "done": {"type": "return", "value": "left"},
        },
    )

    assert time.monotonic() - started < 5
    assert result.output == "left"
    assert "ok" not in [e.outcome for e in result.trace if e.block == "slow"]


async def test_break_in_a_loop_inside_a_parallel_branch_leaves_that_loop(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "par": {"type": "parallel", "branches": ["loop", "other"], "next": "done"},
            "loop": {"type": "repeat", "while": "true", "body": "stop", "next": "after_loop"},
            "stop": {"type": "break"},
            "after_loop": {"type": "set", "values": {"looped": True}},
            "other": {"type": "set", "values": {"other": True}},
            "done": {"type": "return", "value": "=vars"},
        },
    )

    assert result.output == {"looped": True, "other": True}


# -- parallel ------------------------------------------------------------------------------


async def test_parallel_runs_branches_concurrently_and_synchronizes(engine: Engine) -> None:
    started = time.monotonic()
    result = await run(
        engine,
        {
            "par": {"type": "parallel", "branches": ["a", "b", "c"], "next": "done"},
            "a": {"type": "wait", "seconds": 0.3, "next": "a2"},
            "a2": {"type": "set", "values": {"a": True}},
            "b": {"type": "wait", "seconds": 0.3, "next": "b2"},
            "b2": {"type": "set", "values": {"b": True}},
            "c": {"type": "set", "values": {"c": True}},
            "done": {"type": "return", "value": "=vars"},
        },
    )

    waits = [entry for entry in result.trace if entry.type == "wait"]
    assert result.output == {"a": True, "b": True, "c": True}
    assert max_overlap(waits) == 2
    assert time.monotonic() - started < 5
    par = next(entry for entry in result.trace if entry.block == "par")
    assert executed(result)[-2:] == ["par", "done"]
    assert par.duration >= 0.29


async def test_parallel_branch_failure_fails_the_parallel_and_cancels_the_rest(
    engine: Engine,
) -> None:
    started = time.monotonic()
    result = await run(
        engine,
        {
            "par": {"type": "parallel", "branches": ["slow", "bad"], "next": "never"},
            "slow": {"type": "wait", "seconds": 10},
            "bad": {"type": "fail", "code": "broken", "message": "branch broke"},
            "never": {"type": "set", "values": {"reached": True}},
        },
    )

    assert time.monotonic() - started < 5
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert (result.error.code, result.error.message) == ("broken", "branch broke")
    assert "never" not in executed(result)
    assert [e.outcome for e in result.trace if e.block == "slow"] == ["cancelled"]


async def test_parallel_timeout_fails_with_timeout_and_cancels_branches(engine: Engine) -> None:
    started = time.monotonic()
    result = await run(
        engine,
        {
            "par": {
                "type": "parallel",
                "branches": ["slow", "fast"],
                "timeout": 0.2,
                "on_error": "handled",
            },
            "slow": {"type": "wait", "seconds": 10},
            "fast": {"type": "set", "values": {"fast": True}},
            "handled": {"type": "return", "value": "=[vars.error, vars.fast]"},
        },
    )

    elapsed = time.monotonic() - started
    assert 0.15 < elapsed < 5
    assert result.status is RunStatus.COMPLETED
    error, fast = result.output
    assert error["code"] == "timeout"
    assert error["block"] == "par"
    assert fast is True
    assert [e.outcome for e in result.trace if e.block == "slow"] == ["cancelled"]
    assert [e.outcome for e in result.trace if e.block == "par"] == ["timeout"]


async def test_return_in_a_branch_ends_the_run_and_cancels_other_branches(
    engine: Engine,
) -> None:
    started = time.monotonic()
    result = await run(
        engine,
        {
            "par": {"type": "parallel", "branches": ["slow", "quick"], "next": "never"},
            "slow": {"type": "wait", "seconds": 10, "next": "late"},
            "late": {"type": "set", "values": {"late": True}},
            "quick": {"type": "return", "value": "from a branch"},
            "never": {"type": "return", "value": "after the parallel"},
        },
    )

    assert time.monotonic() - started < 5
    assert result.status is RunStatus.COMPLETED
    assert result.output == "from a branch"
    assert "late" not in executed(result)
    assert "never" not in executed(result)


# -- wait ----------------------------------------------------------------------------------


async def test_wait_sleeps_for_the_given_seconds(engine: Engine) -> None:
    started = time.monotonic()
    result = await run(engine, {"pause": {"type": "wait", "seconds": "=inputs.s"}}, {"s": 0.2})

    assert 0.18 <= time.monotonic() - started < 5
    assert result.status is RunStatus.COMPLETED
    assert result.trace[0].duration >= 0.18


@pytest.mark.parametrize("seconds", ["=-1.0", "='soon'", "=true"])
async def test_wait_refuses_seconds_that_are_not_a_non_negative_number(
    engine: Engine, seconds: str
) -> None:
    result = await run(engine, {"pause": {"type": "wait", "seconds": seconds}})

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert (result.error.code, result.error.block) == ("wait", "pause")
    assert "seconds" in result.error.message


# -- log -----------------------------------------------------------------------------------


async def test_log_writes_a_structlog_event_and_the_run_log(engine: Engine) -> None:
    with capture_logs() as events:
        result = await run(
            engine,
            {
                "say": {"type": "log", "message": "='hello ' + inputs.who", "next": "warn"},
                "warn": {"type": "log", "message": {"n": 1}, "level": "warning"},
            },
            {"who": "Ada"},
        )

    flow_logs = [event for event in events if event["event"] == "flow.log"]
    assert [(e["block"], e["message"], e["log_level"]) for e in flow_logs] == [
        ("say", "hello Ada", "info"),
        ("warn", '{"n": 1}', "warning"),
    ]
    assert all(e["run_id"] == result.run_id and e["flow"] == "subject" for e in flow_logs)
    assert [(e["block"], e["level"], e["message"]) for e in result.log] == [
        ("say", "info", "hello Ada"),
        ("warn", "warning", '{"n": 1}'),
    ]


async def test_log_level_must_be_known(engine: Engine) -> None:
    version = await engine.add_version(
        {
            "flow": "bad-log",
            "start": "say",
            "blocks": {"say": {"type": "log", "message": "x", "level": "loud"}},
        }
    )

    problems = (await engine.get_version("bad-log", version)).problems
    assert [(p.block, p.field) for p in problems] == [("say", "level")]


# -- return --------------------------------------------------------------------------------


async def test_return_ends_the_run_with_its_value(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "done": {
                "type": "return",
                "value": {"sum": "=inputs.a + inputs.b", "k": "lit"},
                "next": "never",
            },
            "never": {"type": "set", "values": {"x": 1}},
        },
        {"a": 1, "b": 2},
    )

    assert result.status is RunStatus.COMPLETED
    assert result.output == {"sum": 3, "k": "lit"}
    assert executed(result) == ["done"]


async def test_return_without_value_outputs_null(engine: Engine) -> None:
    result = await run(engine, {"done": {"type": "return"}})

    assert result.status is RunStatus.COMPLETED
    assert result.output is None


async def test_return_inside_a_loop_ends_the_whole_run(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "each": {"type": "for_each", "items": "[1, 2, 3]", "body": "check", "next": "after"},
            "check": {"type": "condition", "if": "item == 2", "then": "out"},
            "out": {"type": "return", "value": "=item"},
            "after": {"type": "return", "value": "loop ended"},
        },
    )

    assert result.output == 2


# -- fail ----------------------------------------------------------------------------------


async def test_fail_raises_its_own_code_and_message(engine: Engine) -> None:
    result = await run(
        engine,
        {"stop": {"type": "fail", "code": "too_big", "message": "='amount ' + string(inputs.n)"}},
        {"n": 7},
    )

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.code == "too_big"
    assert result.error.message == "amount 7"
    assert result.error.block == "stop"
    assert result.has_errors is False
    assert result.trace[0].outcome == "too_big"


async def test_fail_defaults(engine: Engine) -> None:
    result = await run(engine, {"stop": {"type": "fail"}})

    assert result.error is not None
    assert (result.error.code, result.error.message) == ("fail", "failed")


async def test_fail_handled_by_on_error_completes_with_errors(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "stop": {"type": "fail", "code": "nope", "message": "no", "on_error": "recover"},
            "recover": {"type": "return", "value": "=vars.error"},
        },
    )

    assert result.status is RunStatus.COMPLETED
    assert result.has_errors is True
    assert result.error is None
    assert result.output == {"code": "nope", "message": "no", "block": "stop"}


async def test_wait_is_cancellable(engine: Engine) -> None:
    version = await engine.add_version(
        {"flow": "sleepy", "start": "pause", "blocks": {"pause": {"type": "wait", "seconds": 30}}}
    )
    await engine.start("sleepy", version)
    run_id = await engine.call_flow("sleepy", wait=False)
    await anyio.sleep(0.05)

    started = time.monotonic()
    await engine.cancel(run_id)
    with anyio.fail_after(5):
        result = await engine.wait_for(run_id)

    assert time.monotonic() - started < 5
    assert result.status is RunStatus.CANCELLED
    assert [entry.outcome for entry in result.trace] == ["cancelled"]
