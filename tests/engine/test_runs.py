"""Runs: activation, results and traces, cancellation, errors, timeouts, retries, limits."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from engine import (
    Engine,
    Identity,
    InvalidInputs,
    Limits,
    RunNotFound,
    RunResult,
    RunStatus,
    TraceEntry,
    testing,
)


async def deploy(engine: Engine, blocks: Mapping[str, Any], name: str = "job", **extra: Any) -> int:
    return await testing.deploy(engine, blocks, flow=name, **extra)


async def run(
    engine: Engine,
    blocks: Mapping[str, Any],
    inputs: Mapping[str, Any] | None = None,
    **options: Any,
) -> RunResult:
    await deploy(engine, blocks)
    return await engine.call_flow("job", inputs, **options)


async def started(engine: Engine, blocks: Mapping[str, Any], settle: float = 0.05) -> str:
    """Deploy, activate without waiting, and return once the run is well under way."""
    await deploy(engine, blocks)
    run_id = await engine.call_flow("job", wait=False)
    for _ in range(500):
        if (await engine.get_run(run_id)).status is RunStatus.RUNNING:
            break
        await anyio.sleep(0.01)
    else:
        raise AssertionError(f"run {run_id} did not start")
    await anyio.sleep(settle)
    return run_id


async def cancelled(engine: Engine, run_id: str) -> RunResult:
    began = time.monotonic()
    await engine.cancel(run_id)
    with anyio.fail_after(5):
        result = await engine.wait_for(run_id)
    assert time.monotonic() - began < 5
    return result


def outcomes(result: RunResult, block: str) -> list[str]:
    return [entry.outcome for entry in result.trace if entry.block == block]


# -- activation and results ----------------------------------------------------------------


async def test_call_flow_waits_and_returns_the_result(engine: Engine) -> None:
    before = time.time()
    result = await run(
        engine,
        {
            "a": {"type": "set", "values": {"double": "=inputs.n * 2"}, "next": "b"},
            "b": {"type": "return", "value": "=vars.double"},
        },
        {"n": 21},
        identity=Identity(user_id="alice", roles={"Manager"}),
    )
    after = time.time()

    assert isinstance(result, RunResult)
    assert len(result.run_id) == 24 and int(result.run_id, 16) >= 0
    assert (result.flow, result.version, result.status) == ("job", 1, RunStatus.COMPLETED)
    assert result.output == 42
    assert result.error is None
    assert result.has_errors is False
    assert (result.parent_run_id, result.root_run_id, result.depth) == (None, result.run_id, 0)
    assert (result.user_id, result.roles) == ("alice", ("Manager",))
    assert result.inputs == {"n": 21}
    assert before <= result.created_at <= after
    assert result.finished_at is not None and result.created_at <= result.finished_at <= after


async def test_trace_entries_record_block_type_start_duration_outcome(engine: Engine) -> None:
    before = time.time()
    result = await run(
        engine,
        {
            "first": {"type": "set", "values": {"x": 1}, "next": "pause"},
            "pause": {"type": "wait", "seconds": 0.1, "next": "check"},
            "check": {"type": "condition", "if": "vars.x == 1", "then": "done"},
            "done": {"type": "return", "value": "=vars.x"},
        },
    )
    after = time.time()

    assert all(isinstance(entry, TraceEntry) for entry in result.trace)
    assert [(e.block, e.type, e.outcome) for e in result.trace] == [
        ("first", "set", "ok"),
        ("pause", "wait", "ok"),
        ("check", "condition", "then"),
        ("done", "return", "ok"),
    ]
    starts = [entry.start for entry in result.trace]
    assert starts == sorted(starts)
    assert all(before - 0.01 <= s <= after + 0.01 for s in starts)
    assert all(entry.duration >= 0 for entry in result.trace)
    assert 0.09 <= result.trace[1].duration < 5
    assert result.trace[2].start >= result.trace[1].start + result.trace[1].duration - 0.001


async def test_result_is_one_json_object(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "fail": {"type": "fail", "code": "bad", "message": "m", "on_error": "out"},
            "out": {"type": "return", "value": {"b": "=b'bytes'", "e": "=vars.error"}},
        },
        {"k": [1]},
    )

    encoded = json.loads(json.dumps(result.to_json()))
    assert encoded["run_id"] == result.run_id
    assert encoded["status"] == "COMPLETED"
    assert encoded["has_errors"] is True
    assert encoded["output"]["e"] == {"code": "bad", "message": "m", "block": "fail"}
    assert encoded["inputs"] == {"k": [1]}
    assert [e["block"] for e in encoded["trace"]] == ["fail", "out"]
    assert set(encoded["trace"][0]) == {"block", "type", "start", "duration", "outcome"}


async def test_call_flow_without_waiting_returns_the_run_id(engine: Engine) -> None:
    await deploy(
        engine,
        {
            "pause": {"type": "wait", "seconds": 0.1, "next": "done"},
            "done": {"type": "return", "value": "later"},
        },
    )

    run_id = await engine.call_flow("job", wait=False)
    assert isinstance(run_id, str)
    assert (await engine.get_run(run_id)).status in (RunStatus.QUEUED, RunStatus.RUNNING)
    assert run_id in engine.active_runs()
    with anyio.fail_after(5):
        result = await engine.wait_for(run_id)

    assert (result.run_id, result.status, result.output) == (run_id, RunStatus.COMPLETED, "later")
    assert (await engine.get_run(run_id)).output == "later"
    assert (await engine.wait_for(run_id)).output == "later"
    assert run_id not in engine.active_runs()


async def test_get_run_shows_a_run_in_flight(engine: Engine) -> None:
    run_id = await started(
        engine,
        {
            "a": {"type": "set", "values": {"x": 1}, "next": "pause"},
            "pause": {"type": "wait", "seconds": 30},
        },
    )

    now = await engine.get_run(run_id)

    assert now.status is RunStatus.RUNNING
    assert now.finished_at is None
    assert [(e.block, e.outcome) for e in now.trace] == [("a", "ok")]
    await cancelled(engine, run_id)


async def test_unknown_run_ids(engine: Engine) -> None:
    with pytest.raises(RunNotFound):
        await engine.get_run("0" * 24)
    with pytest.raises(RunNotFound):
        await engine.wait_for("0" * 24)
    with pytest.raises(RunNotFound):
        await engine.cancel("0" * 24)


async def test_cancelling_a_finished_run_changes_nothing(engine: Engine) -> None:
    result = await run(engine, {"done": {"type": "return", "value": 1}})

    await engine.cancel(result.run_id)

    assert (await engine.get_run(result.run_id)).status is RunStatus.COMPLETED


# -- cancellation --------------------------------------------------------------------------


async def test_cancel_at_a_wait_block(engine: Engine) -> None:
    run_id = await started(
        engine,
        {
            "pause": {"type": "wait", "seconds": 30, "next": "after"},
            "after": {"type": "set", "values": {"x": 1}},
        },
    )

    result = await cancelled(engine, run_id)

    assert result.status is RunStatus.CANCELLED
    assert result.output is None
    assert result.error is not None and result.error.code == "cancelled"
    assert [(e.block, e.outcome) for e in result.trace] == [("pause", "cancelled")]
    assert result.finished_at is not None


async def test_cancel_at_a_parallel(engine: Engine) -> None:
    run_id = await started(
        engine,
        {
            "par": {"type": "parallel", "branches": ["one", "two"], "next": "after"},
            "one": {"type": "wait", "seconds": 30},
            "two": {"type": "wait", "seconds": 30},
            "after": {"type": "set", "values": {"x": 1}},
        },
    )

    result = await cancelled(engine, run_id)

    assert result.status is RunStatus.CANCELLED
    assert sorted((e.block, e.outcome) for e in result.trace) == [
        ("one", "cancelled"),
        ("par", "cancelled"),
        ("two", "cancelled"),
    ]


async def test_cancel_at_a_for_each(engine: Engine) -> None:
    run_id = await started(
        engine,
        {
            "each": {"type": "for_each", "items": "[1, 2, 3]", "body": "pause", "concurrency": 2},
            "pause": {"type": "wait", "seconds": 30},
        },
    )

    result = await cancelled(engine, run_id)

    assert result.status is RunStatus.CANCELLED
    assert outcomes(result, "pause") == ["cancelled", "cancelled"]
    assert outcomes(result, "each") == ["cancelled"]


async def test_cancel_a_tight_loop_of_set_blocks() -> None:
    async with Engine(limits=Limits(max_steps=10**9)) as engine:
        run_id = await started(
            engine,
            {
                "a": {"type": "set", "values": {"n": 0}, "next": "b"},
                "b": {"type": "set", "values": {"n": "=vars.n + 1"}, "next": "c"},
                "c": {"type": "set", "values": {"m": "=vars.n"}, "next": "b"},
            },
            settle=0.1,
        )

        result = await cancelled(engine, run_id)

    assert result.status is RunStatus.CANCELLED
    assert len(result.trace) > 100


async def test_on_error_does_not_catch_cancellation(engine: Engine) -> None:
    run_id = await started(
        engine,
        {
            "pause": {"type": "wait", "seconds": 30, "timeout": 20, "on_error": "handled"},
            "handled": {"type": "return", "value": "handled"},
        },
    )

    result = await cancelled(engine, run_id)

    assert result.status is RunStatus.CANCELLED
    assert result.has_errors is False
    assert result.output is None
    assert outcomes(result, "handled") == []


async def test_cancel_before_the_run_starts(engine: Engine) -> None:
    await deploy(
        engine,
        {
            "mark": {"type": "set", "values": {"ran": True}, "next": "done"},
            "done": {"type": "return", "value": "ran"},
        },
    )

    run_id = await engine.call_flow("job", wait=False)
    await engine.cancel(run_id)
    with anyio.fail_after(5):
        result = await engine.wait_for(run_id)

    assert result.status is RunStatus.CANCELLED
    assert result.output is None
    assert list(result.trace) == []


# -- handled and unhandled errors ----------------------------------------------------------


async def test_on_error_puts_the_error_in_vars_and_the_run_completes_with_errors(
    engine: Engine,
) -> None:
    result = await run(
        engine,
        {
            "calc": {"type": "set", "values": {"x": "=1 / inputs.d"}, "on_error": "recover"},
            "recover": {"type": "set", "values": {"seen": "=vars.error"}, "next": "done"},
            "done": {"type": "return", "value": "=vars.seen"},
        },
        {"d": 0},
    )

    assert result.status is RunStatus.COMPLETED
    assert result.has_errors is True
    assert result.error is None
    assert set(result.output) == {"code", "message", "block"}
    assert result.output["code"] == "expression"
    assert result.output["block"] == "calc"
    assert "1 / inputs.d" in result.output["message"]
    assert outcomes(result, "calc") == ["expression"]


async def test_unhandled_error_fails_the_run(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "a": {"type": "set", "values": {"x": 1}, "next": "b"},
            "b": {"type": "fail", "code": "nope", "message": "stopped here", "next": "c"},
            "c": {"type": "set", "values": {"y": 1}},
        },
    )

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert (result.error.code, result.error.message, result.error.block) == (
        "nope",
        "stopped here",
        "b",
    )
    assert result.has_errors is False
    assert [e.block for e in result.trace] == ["a", "b"]


async def test_error_in_an_error_handler_fails_the_run(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "a": {"type": "fail", "code": "first", "on_error": "b"},
            "b": {"type": "fail", "code": "second"},
        },
    )

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert (result.error.code, result.error.block) == ("second", "b")
    assert result.has_errors is True


async def test_unhandled_error_in_a_loop_body_is_handled_by_the_loops_on_error(
    engine: Engine,
) -> None:
    result = await run(
        engine,
        {
            "each": {
                "type": "for_each",
                "items": "[1, 2, 3]",
                "body": "check",
                "on_error": "recover",
            },
            "check": {"type": "condition", "if": "item == 2", "then": "boom", "else": "ok"},
            "boom": {"type": "fail", "code": "bad_item", "message": "item 2"},
            "ok": {"type": "set", "values": {"last": "=item"}},
            "recover": {"type": "return", "value": {"error": "=vars.error", "last": "=vars.last"}},
        },
    )

    assert result.status is RunStatus.COMPLETED
    assert result.has_errors is True
    assert result.output["error"]["code"] == "bad_item"
    assert result.output["error"]["message"] == "item 2"
    assert result.output["last"] == 1
    assert outcomes(result, "each") == ["bad_item"]


async def test_unhandled_error_in_a_loop_body_fails_the_run_without_loop_on_error(
    engine: Engine,
) -> None:
    result = await run(
        engine,
        {
            "loop": {"type": "repeat", "while": "true", "body": "boom", "next": "never"},
            "boom": {"type": "fail", "code": "inner"},
            "never": {"type": "set", "values": {"x": 1}},
        },
    )

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.code == "inner"
    assert outcomes(result, "never") == []


async def test_on_error_inside_a_loop_body_keeps_the_loop_going(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "init": {"type": "set", "values": {"handled": 0}, "next": "each"},
            "each": {"type": "for_each", "items": "[0, 1, 2]", "body": "div", "next": "done"},
            "div": {"type": "set", "values": {"x": "=10 / item"}, "on_error": "count"},
            "count": {"type": "set", "values": {"handled": "=vars.handled + 1"}},
            "done": {"type": "return", "value": "=vars.handled"},
        },
    )

    assert result.status is RunStatus.COMPLETED
    assert result.has_errors
    assert result.output == 1


async def test_unhandled_error_in_a_branch_is_handled_by_the_parallels_on_error(
    engine: Engine,
) -> None:
    result = await run(
        engine,
        {
            "par": {"type": "parallel", "branches": ["slow", "bad"], "on_error": "recover"},
            "slow": {"type": "wait", "seconds": 30},
            "bad": {"type": "fail", "code": "branch_failed", "message": "bad branch"},
            "recover": {"type": "return", "value": "=vars.error"},
        },
    )

    assert result.status is RunStatus.COMPLETED
    assert result.has_errors
    assert result.output["code"] == "branch_failed"
    assert outcomes(result, "par") == ["branch_failed"]
    assert outcomes(result, "slow") == ["cancelled"]


async def test_return_inside_a_branch_ends_the_run_and_cancels_the_others(
    engine: Engine,
) -> None:
    began = time.monotonic()
    result = await run(
        engine,
        {
            "par": {"type": "parallel", "branches": ["slow", "loop", "quick"], "next": "never"},
            "slow": {"type": "wait", "seconds": 30},
            "loop": {"type": "for_each", "items": "[1, 2]", "body": "nap", "concurrency": 2},
            "nap": {"type": "wait", "seconds": 30},
            "quick": {"type": "wait", "seconds": 0.05, "next": "out"},
            "out": {"type": "return", "value": "early"},
            "never": {"type": "return", "value": "late"},
        },
    )

    assert time.monotonic() - began < 5
    assert (result.status, result.output) == (RunStatus.COMPLETED, "early")
    assert outcomes(result, "slow") == ["cancelled"]
    assert outcomes(result, "nap") == ["cancelled", "cancelled"]
    assert outcomes(result, "never") == []


# -- timeouts and retries ------------------------------------------------------------------


async def test_block_timeout_is_error_code_timeout(engine: Engine) -> None:
    began = time.monotonic()
    result = await run(engine, {"pause": {"type": "wait", "seconds": 30, "timeout": 0.1}})

    assert 0.09 <= time.monotonic() - began < 5
    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert (result.error.code, result.error.block) == ("timeout", "pause")
    assert "'pause'" in result.error.message and "0.1" in result.error.message
    assert outcomes(result, "pause") == ["timeout"]


async def test_block_finishing_within_its_timeout_is_fine(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "pause": {"type": "wait", "seconds": 0.05, "timeout": 5, "next": "done"},
            "done": {"type": "return", "value": "in time"},
        },
    )

    assert result.output == "in time"


async def test_timeout_is_handled_by_on_error(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "loop": {
                "type": "repeat",
                "while": "true",
                "body": "pause",
                "timeout": 0.1,
                "on_error": "done",
            },
            "pause": {"type": "wait", "seconds": 0.02},
            "done": {"type": "return", "value": "=vars.error.code"},
        },
    )

    assert (result.status, result.output, result.has_errors) == (
        RunStatus.COMPLETED,
        "timeout",
        True,
    )


async def test_retry_makes_one_trace_entry_per_attempt_and_backs_off(engine: Engine) -> None:
    began = time.monotonic()
    result = await run(
        engine,
        {
            "flaky": {
                "type": "fail",
                "code": "down",
                "retry": {"max_attempts": 3, "backoff": 0.1, "multiplier": 2},
            }
        },
    )

    attempts = [entry for entry in result.trace if entry.block == "flaky"]
    assert result.status is RunStatus.FAILED
    assert result.error is not None and result.error.code == "down"
    assert [entry.outcome for entry in attempts] == ["down", "down", "down"]
    first_pause = attempts[1].start - (attempts[0].start + attempts[0].duration)
    second_pause = attempts[2].start - (attempts[1].start + attempts[1].duration)
    assert 0.09 <= first_pause < 3
    assert 0.19 <= second_pause < 3
    assert 0.28 <= time.monotonic() - began < 6


async def test_retry_without_backoff_retries_at_once(engine: Engine) -> None:
    result = await run(engine, {"flaky": {"type": "fail", "retry": {"max_attempts": 4}}})

    assert outcomes(result, "flaky") == ["fail"] * 4


async def test_retry_recovers_when_a_later_attempt_succeeds(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "init": {"type": "set", "values": {"n": 0}, "next": "attempt"},
            "attempt": {
                "type": "repeat",
                "while": "iteration == 1",
                "body": "count",
                "retry": {"max_attempts": 5, "backoff": 0.05},
                "next": "done",
            },
            "count": {"type": "set", "values": {"n": "=vars.n + 1"}, "next": "check"},
            "check": {"type": "condition", "if": "vars.n < 3", "then": "boom"},
            "boom": {"type": "fail", "code": "not_yet"},
            "done": {"type": "return", "value": "=vars.n"},
        },
    )

    assert (result.status, result.output, result.has_errors) == (RunStatus.COMPLETED, 3, False)
    assert outcomes(result, "attempt") == ["not_yet", "not_yet", "ok"]


async def test_each_attempt_gets_its_own_timeout(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "pause": {
                "type": "wait",
                "seconds": 30,
                "timeout": 0.05,
                "retry": {"max_attempts": 2},
                "on_error": "done",
            },
            "done": {"type": "return", "value": "=vars.error.code"},
        },
    )

    assert outcomes(result, "pause") == ["timeout", "timeout"]
    assert result.output == "timeout"
    assert result.has_errors


# -- limits --------------------------------------------------------------------------------


async def test_step_limit_stops_a_cycle_and_cannot_be_handled() -> None:
    async with Engine(limits=Limits(max_steps=50)) as engine:
        result = await run(
            engine,
            {
                "a": {"type": "set", "values": {"x": 1}, "next": "b", "on_error": "handler"},
                "b": {"type": "set", "values": {"y": 1}, "next": "a", "on_error": "handler"},
                "handler": {"type": "return", "value": "handled"},
            },
        )

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.code == "step_limit"
    assert "50" in result.error.message
    assert result.error.block in ("a", "b")
    assert result.has_errors is False
    assert len(result.trace) == 50
    assert outcomes(result, "handler") == []


async def test_step_limit_inside_a_loop_is_not_handled_by_the_loop() -> None:
    async with Engine(limits=Limits(max_steps=30)) as engine:
        result = await run(
            engine,
            {
                "loop": {"type": "repeat", "while": "true", "body": "a", "on_error": "handler"},
                "a": {"type": "set", "values": {"x": 1}, "on_error": "handler"},
                "handler": {"type": "return", "value": "handled"},
            },
        )

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.code == "step_limit"
    assert outcomes(result, "handler") == []


async def test_default_step_limit_is_one_hundred_thousand() -> None:
    assert Limits().max_steps == 100_000
    assert Limits().max_iterations == 1_000
    assert Limits().max_depth == 16
    assert Limits().max_input_bytes == 1_048_576
    assert Limits().max_blocking_wait == 300.0


async def test_input_size_limit() -> None:
    async with Engine(limits=Limits(max_input_bytes=200)) as engine:
        await deploy(engine, {"done": {"type": "return", "value": "=size(inputs.text)"}})

        small = await engine.call_flow("job", {"text": "x" * 100})
        with pytest.raises(InvalidInputs, match="over the limit of 200") as caught:
            await engine.call_flow("job", {"text": "x" * 300})

        assert small.output == 100
        assert caught.value.flow == "job"
        assert engine.active_runs() == []


async def test_inputs_must_fit_the_flows_schema_and_no_run_is_created(engine: Engine) -> None:
    await deploy(
        engine,
        {"done": {"type": "return", "value": "=inputs.amount"}},
        inputs={
            "type": "object",
            "required": ["amount"],
            "properties": {"amount": {"type": "number", "minimum": 0}},
        },
    )

    with capture_logs() as events:
        with pytest.raises(InvalidInputs) as missing:
            await engine.call_flow("job", {})
        with pytest.raises(InvalidInputs) as negative:
            await engine.call_flow("job", {"amount": -1})

    assert missing.value.problems == ["(root): 'amount' is a required property"]
    assert negative.value.problems == ["amount: -1 is less than the minimum of 0"]
    assert [e["event"] for e in events] == ["activation.denied", "activation.denied"]
    assert all(e["error"] == "invalid_inputs" for e in events)
    assert engine.active_runs() == []
    assert (await engine.call_flow("job", {"amount": 3})).output == 3


@pytest.mark.parametrize("inputs", [[1, 2], "text", 5])
async def test_inputs_must_be_an_object(engine: Engine, inputs: Any) -> None:
    await deploy(engine, {"done": {"type": "return"}})

    with pytest.raises(InvalidInputs, match="JSON object"):
        await engine.call_flow("job", inputs)


# -- expressions ---------------------------------------------------------------------------


async def test_expression_errors_name_the_expression_and_the_block(engine: Engine) -> None:
    result = await run(
        engine, {"calc": {"type": "set", "values": {"x": "=inputs.missing.deeper"}}}, {}
    )

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.code == "expression"
    assert result.error.block == "calc"
    assert "'inputs.missing.deeper'" in result.error.message
    assert "'calc'" in result.error.message


async def test_int_and_double_do_not_mix(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "calc": {"type": "set", "values": {"x": "=inputs.n * 1.5"}, "on_error": "fixed"},
            "fixed": {"type": "return", "value": "=[vars.error.code, double(inputs.n) * 1.5]"},
        },
        {"n": 2},
    )

    assert result.output == ["expression", 3.0]
    assert result.has_errors


async def test_run_scope_names(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "done": {
                "type": "return",
                "value": {
                    "id": "=run.id",
                    "flow": "=run.flow",
                    "version": "=run.version",
                    "depth": "=run.depth",
                    "user_id": "=run.user_id",
                    "roles": "=run.roles",
                },
            }
        },
        identity=Identity(user_id="bob", roles={"Zeta", "Alpha"}),
    )

    assert result.output == {
        "id": result.run_id,
        "flow": "job",
        "version": 1,
        "depth": 0,
        "user_id": "bob",
        "roles": ["Alpha", "Zeta"],
    }


async def test_anonymous_run_scope(engine: Engine) -> None:
    result = await run(
        engine, {"done": {"type": "return", "value": ["=run.user_id", "=run.roles"]}}
    )

    assert result.output == [None, []]


async def test_identity_keys_smuggled_in_inputs_do_not_change_the_run_identity(
    engine: Engine,
) -> None:
    result = await run(
        engine,
        {
            "done": {
                "type": "return",
                "value": ["=run.user_id", "=run.roles", "=inputs.user_id"],
            }
        },
        {"user_id": "mallory", "roles": ["Administrator"], "identity": {"user_id": "root"}},
        identity=Identity(user_id="alice"),
    )

    assert result.output == ["alice", [], "mallory"]
    assert (result.user_id, result.roles) == ("alice", ())


async def test_vars_are_shared_by_all_branches(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "par": {"type": "parallel", "branches": ["left", "right"], "next": "done"},
            "left": {"type": "set", "values": {"left": 1}},
            "right": {"type": "wait", "seconds": 0.05, "next": "read"},
            "read": {"type": "set", "values": {"seen_left": "=vars.left"}},
            "done": {"type": "return", "value": "=vars"},
        },
    )

    assert result.output == {"left": 1, "seen_left": 1}


# -- child runs (result fields) ------------------------------------------------------------


async def test_child_run_result_records_parent_root_and_depth(engine: Engine) -> None:
    await deploy(
        engine,
        {"done": {"type": "return", "value": {"depth": "=run.depth", "n": "=inputs.n"}}},
        name="child",
    )
    await deploy(
        engine,
        {
            "call": {
                "type": "call_flow",
                "flow": "child",
                "inputs": {"n": 5},
                "result": "r",
                "next": "spawn",
            },
            "spawn": {
                "type": "call_flow",
                "flow": "child",
                "wait": False,
                "inputs": {"n": 6},
                "result": "s",
                "next": "done",
            },
            "done": {"type": "return", "value": {"r": "=vars.r", "s": "=vars.s.run_id"}},
        },
    )

    parent = await engine.call_flow("job")
    assert parent.status is RunStatus.COMPLETED, parent.error
    with anyio.fail_after(5):
        child = await engine.wait_for(parent.output["s"])

    assert parent.output["r"] == {"depth": 1, "n": 5}
    assert (child.parent_run_id, child.root_run_id, child.depth) == (
        parent.run_id,
        parent.run_id,
        1,
    )
    assert (child.status, child.output) == (RunStatus.COMPLETED, {"depth": 1, "n": 6})
