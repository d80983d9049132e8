"""The Call Flow block: a child run through the gate, under the caller's identity.

Waiting and not waiting, failures and cancellation crossing the parent/child edge,
timeouts, the run tree (parent, root, depth), explicit versions, narrowing to anonymous,
and refusals that leave nothing of the child behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from blocks import BlockRegistry
from engine import (
    ANONYMOUS,
    Engine,
    Identity,
    MemoryStore,
    Role,
    RunResult,
    RunStatus,
    User,
    VersionStatus,
)
from engine.testing import FakeBlock, HoldBlock, capture_logs, deploy

ALICE = Identity(user_id="alice", roles={"Clerk"})


@pytest.fixture
def fake() -> FakeBlock:
    return FakeBlock("effect")


@pytest.fixture
def hold() -> HoldBlock:
    return HoldBlock()


@pytest.fixture
def registry(fake: FakeBlock, hold: HoldBlock) -> BlockRegistry:
    return BlockRegistry([fake.definition, hold.definition])


async def live(engine: Engine, flow: str, blocks: Mapping[str, Any], **extra: Any) -> int:
    """Add a flow starting at its first block and make it LIVE."""
    return await deploy(engine, blocks, flow=flow, **extra)


def stored(engine: Engine) -> dict[str, RunResult]:
    store = engine.store
    assert isinstance(store, MemoryStore)
    return dict(store._runs)


WHOAMI = {
    "effect": {"type": "effect", "value": "=run.id", "next": "done"},
    "done": {
        "type": "return",
        "value": {"user": "=run.user_id", "roles": "=run.roles", "got": "=inputs"},
    },
}


# -- waiting ---------------------------------------------------------------------------------


async def test_a_waiting_call_puts_the_childs_output_in_result(engine: Engine) -> None:
    await live(engine, "child", WHOAMI)
    await live(
        engine,
        "parent",
        {
            "call": {
                "type": "call_flow",
                "flow": "child",
                "inputs": {"n": "=inputs.n * 2", "fixed": [1, "two"]},
                "result": "answer",
                "next": "done",
            },
            "done": {"type": "return", "value": {"answer": "=vars.answer"}},
        },
    )

    result = await engine.call_flow("parent", {"n": 21}, identity=ALICE)

    assert result.status is RunStatus.COMPLETED
    assert result.output == {
        "answer": {"user": "alice", "roles": ["Clerk"], "got": {"n": 42, "fixed": [1, "two"]}}
    }
    assert not result.has_errors


async def test_a_failed_child_fails_the_block_with_child_failed_and_its_run_id(
    engine: Engine,
) -> None:
    await live(engine, "child", {"boom": {"type": "fail", "code": "declined", "message": "no"}})
    await live(
        engine,
        "parent",
        {
            "call": {"type": "call_flow", "flow": "child", "next": "ok", "on_error": "handle"},
            "ok": {"type": "return", "value": "not reached"},
            "handle": {"type": "return", "value": "=vars.error"},
        },
    )
    await live(engine, "bare", {"call": {"type": "call_flow", "flow": "child"}})

    handled = await engine.call_flow("parent", {}, identity=ALICE)
    unhandled = await engine.call_flow("bare", {}, identity=ALICE)

    assert handled.status is RunStatus.COMPLETED and handled.has_errors
    error = handled.output
    assert (error["code"], error["block"]) == ("child_failed", "call")
    assert "[declined] no" in error["message"]
    child = await engine.get_run(error["child_run_id"])
    assert child.status is RunStatus.FAILED
    assert child.error is not None and child.error.code == "declined"
    assert child.parent_run_id == handled.run_id

    assert unhandled.status is RunStatus.FAILED
    assert unhandled.error is not None
    assert (unhandled.error.code, unhandled.error.block) == ("child_failed", "call")
    assert unhandled.error.child_run_id is not None
    assert (await engine.get_run(unhandled.error.child_run_id)).status is RunStatus.FAILED


async def test_a_child_that_completed_with_handled_errors_is_a_success(engine: Engine) -> None:
    await live(
        engine,
        "child",
        {
            "boom": {"type": "fail", "on_error": "done"},
            "done": {"type": "return", "value": "recovered"},
        },
    )
    await live(
        engine,
        "parent",
        {
            "call": {"type": "call_flow", "flow": "child", "result": "r", "next": "done"},
            "done": {"type": "return", "value": "=vars.r"},
        },
    )

    result = await engine.call_flow("parent", {}, identity=ALICE)

    assert (result.status, result.output, result.has_errors) == (
        RunStatus.COMPLETED,
        "recovered",
        False,
    )


# -- not waiting -----------------------------------------------------------------------------


async def test_a_call_that_does_not_wait_returns_the_run_id_at_once(
    engine: Engine, hold: HoldBlock, fake: FakeBlock
) -> None:
    await live(engine, "child", {"park": {"type": "hold", "next": "effect"}, **WHOAMI})
    await live(
        engine,
        "parent",
        {
            "call": {
                "type": "call_flow",
                "flow": "child",
                "wait": False,
                "result": "started",
                "next": "done",
            },
            "done": {"type": "return", "value": "=vars.started"},
        },
    )

    parent = await engine.call_flow("parent", {}, identity=ALICE)

    assert parent.status is RunStatus.COMPLETED
    assert list(parent.output) == ["run_id"]
    child_id = parent.output["run_id"]
    assert child_id in engine.active_runs()  # the parent is done, the child is not
    with anyio.fail_after(5):
        await hold.reached.wait()
    assert hold.run_ids == [child_id]
    hold.release.set()
    with anyio.fail_after(5):
        child = await engine.wait_for(child_id)
    assert child.status is RunStatus.COMPLETED
    assert child.output == {"user": "alice", "roles": ["Clerk"], "got": {}}
    assert (child.parent_run_id, child.root_run_id, child.depth) == (
        parent.run_id,
        parent.run_id,
        1,
    )
    assert [call.value for call in fake.calls] == [child_id]


# -- cancellation ----------------------------------------------------------------------------


async def test_cancelling_a_parent_cancels_the_child_it_waits_for(
    engine: Engine, hold: HoldBlock, fake: FakeBlock
) -> None:
    await live(engine, "child", {"park": {"type": "hold", "next": "effect"}, **WHOAMI})
    await live(engine, "parent", {"call": {"type": "call_flow", "flow": "child"}})

    parent_id = await engine.call_flow("parent", {}, identity=ALICE, wait=False)
    with anyio.fail_after(5):
        await hold.reached.wait()
    [child_id] = hold.run_ids
    await engine.cancel(parent_id)
    with anyio.fail_after(5):
        parent = await engine.wait_for(parent_id)
        child = await engine.wait_for(child_id)

    assert parent.status is RunStatus.CANCELLED
    assert child.status is RunStatus.CANCELLED
    assert child.parent_run_id == parent_id
    assert list(engine.active_runs()) == []
    assert fake.calls == []


async def test_cancelling_a_waited_for_child_fails_the_block_with_child_cancelled(
    engine: Engine, hold: HoldBlock
) -> None:
    await live(engine, "child", {"park": {"type": "hold"}})
    await live(
        engine,
        "parent",
        {
            "call": {"type": "call_flow", "flow": "child", "on_error": "handle"},
            "handle": {"type": "return", "value": "=vars.error"},
        },
    )

    parent_id = await engine.call_flow("parent", {}, identity=ALICE, wait=False)
    with anyio.fail_after(5):
        await hold.reached.wait()
    [child_id] = hold.run_ids
    await engine.cancel(child_id)
    with anyio.fail_after(5):
        parent = await engine.wait_for(parent_id)

    assert parent.status is RunStatus.COMPLETED
    assert parent.output["code"] == "child_cancelled"
    assert parent.output["child_run_id"] == child_id
    assert (await engine.get_run(child_id)).status is RunStatus.CANCELLED


@pytest.mark.parametrize("cancel_with_parent", [False, True])
async def test_children_not_waited_for_survive_the_parent_unless_cancelled_with_it(
    engine: Engine, hold: HoldBlock, cancel_with_parent: bool
) -> None:
    await live(engine, "child", {"park": {"type": "hold", "next": "effect"}, **WHOAMI})
    await live(
        engine,
        "parent",
        {
            "call": {
                "type": "call_flow",
                "flow": "child",
                "wait": False,
                "cancel_with_parent": cancel_with_parent,
                "result": "started",
                "next": "linger",
            },
            "linger": {"type": "wait", "seconds": 3600},
        },
    )

    parent_id = await engine.call_flow("parent", {}, identity=ALICE, wait=False)
    with anyio.fail_after(5):
        await hold.reached.wait()
    [child_id] = hold.run_ids
    await engine.cancel(parent_id)
    with anyio.fail_after(5):
        parent = await engine.wait_for(parent_id)
    assert parent.status is RunStatus.CANCELLED

    if cancel_with_parent:
        with anyio.fail_after(5):
            child = await engine.wait_for(child_id)
        assert child.status is RunStatus.CANCELLED
    else:
        assert list(engine.active_runs()) == [child_id]
        hold.release.set()
        with anyio.fail_after(5):
            child = await engine.wait_for(child_id)
        assert child.status is RunStatus.COMPLETED
        assert child.output["user"] == "alice"


async def test_a_timeout_on_a_call_flow_block_cancels_the_child(
    engine: Engine, hold: HoldBlock, fake: FakeBlock
) -> None:
    await live(engine, "child", {"park": {"type": "hold", "next": "effect"}, **WHOAMI})
    await live(
        engine,
        "parent",
        {
            "call": {"type": "call_flow", "flow": "child", "timeout": 0.2, "on_error": "late"},
            "late": {"type": "return", "value": "=vars.error"},
        },
    )
    await live(engine, "bare", {"call": {"type": "call_flow", "flow": "child", "timeout": 0.1}})

    with anyio.fail_after(10):
        handled = await engine.call_flow("parent", {}, identity=ALICE)
        unhandled = await engine.call_flow("bare", {}, identity=ALICE)

    assert handled.status is RunStatus.COMPLETED and handled.has_errors
    assert (handled.output["code"], handled.output["block"]) == ("timeout", "call")
    assert unhandled.status is RunStatus.FAILED
    assert unhandled.error is not None and unhandled.error.code == "timeout"
    assert len(hold.run_ids) == 2
    for child_id in hold.run_ids:
        assert (await engine.get_run(child_id)).status is RunStatus.CANCELLED
    assert list(engine.active_runs()) == []
    assert fake.calls == []


# -- the run tree ----------------------------------------------------------------------------


async def test_runs_record_parent_root_and_depth(engine: Engine) -> None:
    for flow, callee in (("top", "middle"), ("middle", "leaf")):
        await live(
            engine,
            flow,
            {
                "call": {"type": "call_flow", "flow": callee, "result": "sub", "next": "done"},
                "done": {"type": "return", "value": {"id": "=run.id", "sub": "=vars.sub"}},
            },
        )
    await live(engine, "leaf", {"done": {"type": "return", "value": {"id": "=run.id"}}})

    root = await engine.call_flow("top", {}, identity=ALICE)

    middle = await engine.get_run(root.output["sub"]["id"])
    leaf = await engine.get_run(root.output["sub"]["sub"]["id"])
    assert root.output["id"] == root.run_id
    assert [(r.flow, r.depth, r.parent_run_id, r.root_run_id) for r in (root, middle, leaf)] == [
        ("top", 0, None, root.run_id),
        ("middle", 1, root.run_id, root.run_id),
        ("leaf", 2, middle.run_id, root.run_id),
    ]
    assert all(r.user_id == "alice" for r in (root, middle, leaf))


async def test_a_chain_denied_only_at_its_end_fails_there_and_reports_upwards(
    engine: Engine, fake: FakeBlock
) -> None:
    for flow, callee in (("a", "b"), ("b", "c")):
        await live(
            engine,
            flow,
            {
                "work": {"type": "set", "values": {"worked": "=run.flow"}, "next": "call"},
                "call": {"type": "call_flow", "flow": callee},
            },
        )
    await live(engine, "c", WHOAMI)
    await engine.permissions.deny(Role("Clerk"), flow="c")

    a = await engine.call_flow("a", {}, identity=ALICE)

    assert a.status is RunStatus.FAILED
    assert a.error is not None
    assert (a.error.code, a.error.block) == ("child_failed", "call")
    assert "[activation_denied]" in a.error.message
    b = await engine.get_run(a.error.child_run_id or "")
    assert b.flow == "b" and b.status is RunStatus.FAILED
    assert b.error is not None
    assert (b.error.code, b.error.block, b.error.child_run_id) == (
        "activation_denied",
        "call",
        None,
    )
    assert "denied by flow-level role Clerk" in b.error.message
    for run in (a, b):
        assert [(entry.block, entry.outcome) for entry in run.trace] == [
            ("work", "ok"),
            ("call", "child_failed" if run is a else "activation_denied"),
        ]
    assert sorted(run.flow for run in stored(engine).values()) == ["a", "b"]
    assert fake.calls == []


async def test_a_denied_child_is_a_block_error_that_on_error_can_handle(
    engine: Engine, fake: FakeBlock
) -> None:
    await live(engine, "child", WHOAMI)
    await live(
        engine,
        "parent",
        {
            "call": {"type": "call_flow", "flow": "child", "next": "ok", "on_error": "refused"},
            "ok": {"type": "return", "value": "called"},
            "refused": {"type": "return", "value": "=vars.error"},
        },
    )
    await engine.permissions.deny(User("alice"), flow="child")

    result = await engine.call_flow("parent", {}, identity=ALICE)

    assert result.status is RunStatus.COMPLETED and result.has_errors
    assert result.output["code"] == "activation_denied"
    assert result.output["block"] == "call"
    assert "child_run_id" not in result.output
    assert list(stored(engine)) == [result.run_id]
    assert fake.calls == []


# -- versions --------------------------------------------------------------------------------


async def test_an_explicit_version_runs_that_version_and_must_be_live(engine: Engine) -> None:
    first = await live(engine, "child", {"done": {"type": "return", "value": "v1"}})
    second = await live(engine, "child", {"done": {"type": "return", "value": "v2"}})
    assert (await engine.get_version("child", first)).status is VersionStatus.READY
    for name, version in (("pinned-old", first), ("pinned-new", second), ("pinned-none", 9)):
        await live(
            engine,
            name,
            {
                "call": {
                    "type": "call_flow",
                    "flow": "child",
                    "version": version,
                    "result": "r",
                    "next": "done",
                    "on_error": "failed",
                },
                "done": {"type": "return", "value": "=vars.r"},
                "failed": {"type": "return", "value": "=vars.error.code"},
            },
        )

    assert (await engine.call_flow("pinned-new", {}, identity=ALICE)).output == "v2"
    assert (await engine.call_flow("pinned-old", {}, identity=ALICE)).output == "flow_not_live"
    assert (await engine.call_flow("pinned-none", {}, identity=ALICE)).output == "flow_not_found"

    await engine.start("child", first)  # a switchover back: now only v1 is LIVE
    assert (await engine.call_flow("pinned-old", {}, identity=ALICE)).output == "v1"
    assert (await engine.call_flow("pinned-new", {}, identity=ALICE)).output == "flow_not_live"


async def test_a_child_that_is_paused_or_missing_fails_the_block_with_its_code(
    engine: Engine,
) -> None:
    await live(engine, "child", {"done": {"type": "return", "value": "ran"}})
    await live(
        engine,
        "parent",
        {
            "call": {"type": "call_flow", "flow": "child", "on_error": "failed"},
            "failed": {"type": "return", "value": "=vars.error.code"},
        },
    )
    await live(
        engine,
        "orphan",
        {
            "call": {"type": "call_flow", "flow": "missing", "on_error": "failed"},
            "failed": {"type": "return", "value": "=vars.error.code"},
        },
    )
    await engine.pause("child")

    assert (await engine.call_flow("parent", {}, identity=ALICE)).output == "flow_not_live"
    assert (await engine.call_flow("orphan", {}, identity=ALICE)).output == "flow_not_found"


async def test_invalid_child_inputs_fail_the_block_with_invalid_inputs(engine: Engine) -> None:
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    await live(engine, "child", {"done": {"type": "return", "value": "=inputs.n"}}, inputs=schema)
    await live(
        engine,
        "parent",
        {
            "call": {
                "type": "call_flow",
                "flow": "child",
                "inputs": {"n": "=inputs.n"},
                "result": "r",
                "next": "done",
                "on_error": "failed",
            },
            "done": {"type": "return", "value": "=vars.r"},
            "failed": {"type": "return", "value": "=vars.error.code"},
        },
    )

    assert (await engine.call_flow("parent", {"n": 3}, identity=ALICE)).output == 3
    assert (await engine.call_flow("parent", {"n": "x"}, identity=ALICE)).output == (
        "invalid_inputs"
    )
    assert len(stored(engine)) == 3


# -- identity: the caller's, or narrowed to anonymous ----------------------------------------


async def test_the_child_runs_under_the_callers_identity(engine: Engine) -> None:
    await live(engine, "child", WHOAMI)
    await live(
        engine,
        "parent",
        {
            "call": {"type": "call_flow", "flow": "child", "result": "r", "next": "done"},
            "done": {"type": "return", "value": "=vars.r"},
        },
    )

    for identity in (ALICE, Identity(user_id="bob"), ANONYMOUS):
        result = await engine.call_flow("parent", {}, identity=identity)
        assert result.output["user"] == identity.user_id
        assert result.output["roles"] == sorted(identity.roles)


async def test_identity_anonymous_narrows_the_child_to_no_user(
    engine: Engine, fake: FakeBlock
) -> None:
    await live(engine, "child", WHOAMI)
    await live(
        engine,
        "parent",
        {
            "call": {
                "type": "call_flow",
                "flow": "child",
                "identity": "anonymous",
                "result": "r",
                "next": "done",
                "on_error": "refused",
            },
            "done": {"type": "return", "value": "=vars.r"},
            "refused": {"type": "return", "value": "=vars.error.code"},
        },
    )
    await engine.permissions.grant(User("alice"), flow="child")
    await engine.permissions.grant(Role("Clerk"), flow="child")

    with capture_logs() as logs:
        narrowed = await engine.call_flow("parent", {}, identity=ALICE)
    assert narrowed.output == {"user": None, "roles": [], "got": {}}
    child = stored(engine)[fake.calls[0].value]
    assert (child.user_id, child.roles) == (None, ())
    child_event = next(
        e for e in logs if e["event"] == "activation.allowed" and e["flow"] == "child"
    )
    assert (child_event["user"], child_event["roles"]) == (None, [])

    # the gate decides on NonAuthenticatedUser settings, not on alice's grants
    await engine.permissions.deny(Role("NonAuthenticatedUser"), flow="child")
    assert (await engine.call_flow("parent", {}, identity=ALICE)).output == "activation_denied"
    assert len(fake.calls) == 1


@pytest.mark.parametrize(
    ("extra", "field_name"),
    [
        ({"user": "root"}, "user"),
        ({"roles": ["Administrator"]}, "roles"),
        ({"identity": "root"}, "identity"),
        ({"identity": {"user_id": "root"}}, "identity"),
        ({"identity": "=inputs.who"}, "identity"),
    ],
)
async def test_nothing_in_a_call_flow_block_can_name_an_identity(
    engine: Engine, extra: dict[str, Any], field_name: str
) -> None:
    document = {
        "flow": "widen",
        "start": "call",
        "blocks": {"call": {"type": "call_flow", "flow": "child", **extra}},
    }

    version = await engine.add_version(document)

    info = await engine.get_version("widen", version)
    assert info.status is VersionStatus.INVALID
    assert [(p.block, p.field) for p in info.problems] == [("call", field_name)]


async def test_a_child_narrowed_to_anonymous_cannot_widen_again_further_down(
    engine: Engine,
) -> None:
    await live(engine, "leaf", WHOAMI)
    await live(
        engine,
        "middle",
        {
            "call": {"type": "call_flow", "flow": "leaf", "result": "r", "next": "done"},
            "done": {"type": "return", "value": "=vars.r"},
        },
    )
    await live(
        engine,
        "top",
        {
            "call": {
                "type": "call_flow",
                "flow": "middle",
                "identity": "anonymous",
                "result": "r",
                "next": "done",
            },
            "done": {"type": "return", "value": "=vars.r"},
        },
    )

    result = await engine.call_flow("top", {}, identity=ALICE)

    assert result.output == {"user": None, "roles": [], "got": {}}
    assert {(run.flow, run.user_id) for run in stored(engine).values()} == {
        ("top", "alice"),
        ("middle", None),
        ("leaf", None),
    }


async def test_a_child_not_waited_for_is_still_refused_at_the_block(
    engine: Engine, fake: FakeBlock
) -> None:
    await live(engine, "child", WHOAMI)
    await live(
        engine,
        "parent",
        {
            "call": {
                "type": "call_flow",
                "flow": "child",
                "wait": False,
                "next": "ok",
                "on_error": "refused",
            },
            "ok": {"type": "return", "value": "started"},
            "refused": {"type": "return", "value": "=vars.error.code"},
        },
    )
    await engine.permissions.deny(Role("Clerk"), flow="child")

    result = await engine.call_flow("parent", {}, identity=ALICE)

    assert result.output == "activation_denied"
    assert list(engine.active_runs()) == []
    assert list(stored(engine)) == [result.run_id]
    assert fake.calls == []
