"""Versions and their lifecycle: INVALID, READY, LIVE, PAUSED; switchover and stop."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import anyio
import pytest

from engine import (
    Engine,
    FlowError,
    FlowNotFound,
    FlowNotLive,
    InvalidFlow,
    InvalidTransition,
    RunStatus,
    VersionStatus,
)


def slow(tag: str, seconds: float = 0.3, name: str = "svc") -> dict[str, Any]:
    """A flow that waits, then returns ``tag`` (so a run's version shows in its output)."""
    return {
        "flow": name,
        "start": "pause",
        "blocks": {
            "pause": {"type": "wait", "seconds": seconds, "next": "done"},
            "done": {"type": "return", "value": tag},
        },
    }


def quick(tag: str, name: str = "svc") -> dict[str, Any]:
    return {"flow": name, "start": "done", "blocks": {"done": {"type": "return", "value": tag}}}


BROKEN = {"flow": "svc", "start": "a", "blocks": {"a": {"type": "teleport", "next": "b"}}}


async def status(engine: Engine, version: int, flow: str = "svc") -> VersionStatus:
    return (await engine.get_version(flow, version)).status


async def wait_until_running(engine: Engine, run_id: str) -> None:
    for _ in range(500):
        if (await engine.get_run(run_id)).status is RunStatus.RUNNING:
            break
        await anyio.sleep(0.01)
    else:
        raise AssertionError(f"run {run_id} did not start")


# -- versions ------------------------------------------------------------------------------


async def test_add_version_stores_a_ready_version(engine: Engine) -> None:
    version = await engine.add_version(quick("one"))

    info = await engine.get_version("svc", version)
    assert version == 1
    assert (info.flow, info.version, info.status, info.problems) == (
        "svc",
        1,
        VersionStatus.READY,
        (),
    )
    assert info.document["blocks"]["done"] == {"type": "return", "value": "one"}
    assert info.created_at > 0


async def test_versions_are_numbered_per_flow(engine: Engine) -> None:
    assert [await engine.add_version(quick(str(n))) for n in range(3)] == [1, 2, 3]
    assert await engine.add_version(quick("other", name="other")) == 1

    assert [v.version for v in await engine.list_versions("svc")] == [1, 2, 3]
    assert await engine.list_flows() == ["other", "svc"]


async def test_status_field_in_a_document_does_not_start_it(engine: Engine) -> None:
    version = await engine.add_version({**quick("x"), "status": "LIVE"})

    assert await status(engine, version) is VersionStatus.READY


async def test_invalid_document_is_stored_invalid_with_its_problems(engine: Engine) -> None:
    version = await engine.add_version(BROKEN)

    info = await engine.get_version("svc", version)
    assert info.status is VersionStatus.INVALID
    assert ("a", "type") in {(p.block, p.field) for p in info.problems}
    assert any("unknown block type 'teleport'" in p.message for p in info.problems)


async def test_starting_an_invalid_version_raises_invalid_flow_listing_problems(
    engine: Engine,
) -> None:
    version = await engine.add_version(BROKEN)

    with pytest.raises(InvalidFlow) as caught:
        await engine.start("svc", version)

    assert caught.value.problems == list((await engine.get_version("svc", version)).problems)
    assert caught.value.flow == "svc"
    assert "teleport" in str(caught.value)
    assert await status(engine, version) is VersionStatus.INVALID


async def test_an_invalid_version_refuses_runs(engine: Engine) -> None:
    await engine.add_version(BROKEN)

    with pytest.raises(FlowNotLive):
        await engine.call_flow("svc")


async def test_versions_are_immutable_values(engine: Engine) -> None:
    version = await engine.add_version(quick("first"))
    await engine.add_version(quick("second"))
    info = await engine.get_version("svc", version)

    with pytest.raises(dataclasses.FrozenInstanceError):
        info.status = VersionStatus.LIVE  # type: ignore[misc]
    assert (await engine.get_version("svc", version)).document["blocks"]["done"]["value"] == "first"


async def test_changing_the_added_document_does_not_change_the_version(engine: Engine) -> None:
    document = quick("first")
    version = await engine.add_version(document)

    document["blocks"]["done"]["value"] = "changed"

    assert (await engine.get_version("svc", version)).document["blocks"]["done"]["value"] == "first"


# -- start, pause, resume, stop ------------------------------------------------------------


async def test_full_lifecycle(engine: Engine) -> None:
    version = await engine.add_version(quick("ok"))
    assert await status(engine, version) is VersionStatus.READY

    await engine.start("svc", version)
    assert await status(engine, version) is VersionStatus.LIVE
    assert (await engine.call_flow("svc")).output == "ok"

    await engine.pause("svc")
    assert await status(engine, version) is VersionStatus.PAUSED
    with pytest.raises(FlowNotLive):
        await engine.call_flow("svc")

    await engine.resume("svc")
    assert await status(engine, version) is VersionStatus.LIVE
    assert (await engine.call_flow("svc")).output == "ok"

    await engine.stop("svc")
    assert await status(engine, version) is VersionStatus.READY
    with pytest.raises(FlowNotLive):
        await engine.call_flow("svc")

    await engine.start("svc", version)
    assert await status(engine, version) is VersionStatus.LIVE


async def test_starting_the_live_version_again_changes_nothing(engine: Engine) -> None:
    version = await engine.add_version(quick("ok"))
    await engine.start("svc", version)

    await engine.start("svc", version)

    assert await status(engine, version) is VersionStatus.LIVE


async def test_ready_version_refuses_runs_with_flow_not_live(engine: Engine) -> None:
    version = await engine.add_version(quick("ok"))

    with pytest.raises(FlowNotLive) as caught:
        await engine.call_flow("svc")

    assert caught.value.flow == "svc"
    assert caught.value.version == version
    assert "READY" in str(caught.value)


async def test_at_most_one_version_is_live(engine: Engine) -> None:
    versions = [await engine.add_version(quick(str(n))) for n in range(3)]
    for version in versions:
        await engine.start("svc", version)

    statuses = [info.status for info in await engine.list_versions("svc")]
    assert statuses == [VersionStatus.READY, VersionStatus.READY, VersionStatus.LIVE]


async def test_switchover_from_a_paused_version(engine: Engine) -> None:
    old = await engine.add_version(quick("old"))
    new = await engine.add_version(quick("new"))
    await engine.start("svc", old)
    await engine.pause("svc")

    await engine.start("svc", new)

    assert await status(engine, old) is VersionStatus.READY
    assert await status(engine, new) is VersionStatus.LIVE
    assert (await engine.call_flow("svc")).output == "new"


async def test_switchover_lets_old_runs_finish_while_new_activations_run_the_new_version(
    engine: Engine,
) -> None:
    old = await engine.add_version(slow("old", 0.3))
    new = await engine.add_version(quick("new"))
    await engine.start("svc", old)
    in_flight = await engine.call_flow("svc", wait=False)
    await wait_until_running(engine, in_flight)

    await engine.start("svc", new)
    fresh = await engine.call_flow("svc")
    with anyio.fail_after(5):
        finished = await engine.wait_for(in_flight)

    assert await status(engine, old) is VersionStatus.READY
    assert await status(engine, new) is VersionStatus.LIVE
    assert (fresh.version, fresh.output) == (new, "new")
    assert (finished.status, finished.version, finished.output) == (
        RunStatus.COMPLETED,
        old,
        "old",
    )


async def test_stop_cancels_the_versions_runs_in_flight(engine: Engine) -> None:
    version = await engine.add_version(slow("never", 30))
    await engine.add_version(slow("other", 0.3, name="other"))
    await engine.start("svc", version)
    await engine.start("other", 1)
    runs = [await engine.call_flow("svc", wait=False) for _ in range(2)]
    bystander = await engine.call_flow("other", wait=False)
    for run_id in runs:
        await wait_until_running(engine, run_id)

    await engine.stop("svc")
    with anyio.fail_after(5):
        results = [await engine.wait_for(run_id) for run_id in runs]
        other = await engine.wait_for(bystander)

    assert [r.status for r in results] == [RunStatus.CANCELLED, RunStatus.CANCELLED]
    assert all(r.output is None for r in results)
    assert other.status is RunStatus.COMPLETED
    assert await status(engine, version) is VersionStatus.READY


async def test_stop_after_switchover_leaves_the_old_versions_runs_alone(engine: Engine) -> None:
    old = await engine.add_version(slow("old", 0.3))
    new = await engine.add_version(slow("new", 30))
    await engine.start("svc", old)
    old_run = await engine.call_flow("svc", wait=False)
    await engine.start("svc", new)
    new_run = await engine.call_flow("svc", wait=False)
    await wait_until_running(engine, new_run)

    await engine.stop("svc")
    with anyio.fail_after(5):
        new_result = await engine.wait_for(new_run)
        old_result = await engine.wait_for(old_run)

    assert new_result.status is RunStatus.CANCELLED
    assert (old_result.status, old_result.output) == (RunStatus.COMPLETED, "old")


async def test_stop_a_paused_version_cancels_its_runs(engine: Engine) -> None:
    version = await engine.add_version(slow("never", 30))
    await engine.start("svc", version)
    run_id = await engine.call_flow("svc", wait=False)
    await wait_until_running(engine, run_id)
    await engine.pause("svc")

    await engine.stop("svc")
    with anyio.fail_after(5):
        result = await engine.wait_for(run_id)

    assert result.status is RunStatus.CANCELLED
    assert await status(engine, version) is VersionStatus.READY


async def test_pause_refuses_new_runs_but_runs_in_flight_continue(engine: Engine) -> None:
    version = await engine.add_version(slow("done", 0.3))
    await engine.start("svc", version)
    run_id = await engine.call_flow("svc", wait=False)
    await wait_until_running(engine, run_id)

    await engine.pause("svc")
    with pytest.raises(FlowNotLive) as caught:
        await engine.call_flow("svc")
    with anyio.fail_after(5):
        result = await engine.wait_for(run_id)

    assert "PAUSED" in str(caught.value)
    assert (result.status, result.output) == (RunStatus.COMPLETED, "done")


async def test_starting_a_paused_version_makes_it_live_again(engine: Engine) -> None:
    version = await engine.add_version(quick("ok"))
    await engine.start("svc", version)
    await engine.pause("svc")

    await engine.start("svc", version)

    assert await status(engine, version) is VersionStatus.LIVE


async def test_call_flow_can_select_a_version_only_if_it_is_live(engine: Engine) -> None:
    old = await engine.add_version(quick("old"))
    new = await engine.add_version(quick("new"))
    await engine.start("svc", new)

    assert (await engine.call_flow("svc", version=new)).output == "new"
    with pytest.raises(FlowNotLive):
        await engine.call_flow("svc", version=old)


# -- refusals ------------------------------------------------------------------------------


async def test_flow_not_found(engine: Engine) -> None:
    await engine.add_version(quick("ok"))

    with pytest.raises(FlowNotFound):
        await engine.get_version("nope", 1)
    with pytest.raises(FlowNotFound):
        await engine.get_version("svc", 2)
    with pytest.raises(FlowNotFound):
        await engine.start("nope", 1)
    with pytest.raises(FlowNotFound):
        await engine.start("svc", 7)
    for verb in (engine.pause, engine.resume, engine.stop):
        with pytest.raises(FlowNotFound):
            await verb("nope")
    with pytest.raises(FlowNotFound):
        await engine.call_flow("nope")
    with pytest.raises(FlowNotFound):
        await engine.call_flow("svc", version=9)
    assert await engine.list_versions("nope") == []


async def test_invalid_transitions(engine: Engine) -> None:
    version = await engine.add_version(quick("ok"))

    for verb in (engine.pause, engine.resume, engine.stop):
        with pytest.raises(InvalidTransition, match="no version is LIVE or PAUSED"):
            await verb("svc")

    await engine.start("svc", version)
    with pytest.raises(InvalidTransition, match="cannot resume flow 'svc': version 1 is LIVE"):
        await engine.resume("svc")

    await engine.pause("svc")
    with pytest.raises(InvalidTransition, match="cannot pause flow 'svc': version 1 is PAUSED"):
        await engine.pause("svc")

    assert await status(engine, version) is VersionStatus.PAUSED


async def test_engine_must_be_entered_to_run_flows() -> None:
    engine = Engine()
    version = await engine.add_version(quick("ok"))
    await engine.start("svc", version)

    with pytest.raises(FlowError, match="not running"):
        await engine.call_flow("svc")

    async with engine:
        assert (await engine.call_flow("svc")).output == "ok"


async def test_engine_cannot_be_entered_twice(engine: Engine) -> None:
    with pytest.raises(FlowError, match="already running"):
        await engine.__aenter__()


async def test_leaving_the_engine_cancels_runs_in_flight() -> None:
    async with Engine() as engine:
        version = await engine.add_version(slow("never", 30))
        await engine.start("svc", version)
        run_id = await engine.call_flow("svc", wait=False)
        await wait_until_running(engine, run_id)
        leaving = time.monotonic()

    assert time.monotonic() - leaving < 5
    result = await engine.get_run(run_id)
    assert result.status is RunStatus.CANCELLED
