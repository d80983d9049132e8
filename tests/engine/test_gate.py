"""The gate: one check order for every activation, nothing of a refused run, every
decision logged, and permission resolution that holds up against hostile settings and
hostile callers.

Every test runs a real :class:`Engine`; the child flows start with a :class:`FakeBlock`
so a refusal can be shown to have had no side effect at all.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import anyio
import pytest
import structlog
import structlog.testing

from blocks import BlockContext, BlockDefinition, BlockRegistry, Params
from engine import (
    ANONYMOUS,
    ActivationDenied,
    ActivationError,
    Engine,
    FlowNotFound,
    FlowNotLive,
    Identity,
    InvalidInputs,
    Limits,
    MemoryStore,
    Role,
    RunResult,
    RunStatus,
    StoreError,
    User,
)
from engine.testing import FakeBlock, HoldBlock, capture_logs, deploy

ALICE = Identity(user_id="alice")
MANAGER = Identity(user_id="mia", roles={"Manager"})
SCHEMA = {
    "type": "object",
    "required": ["amount"],
    "properties": {"amount": {"type": "number", "minimum": 0}},
}


@pytest.fixture
def fake() -> FakeBlock:
    return FakeBlock("effect")


@pytest.fixture
def registry(fake: FakeBlock) -> BlockRegistry:
    return BlockRegistry([fake.definition])


def child_document(flow: str = "target", **extra: Any) -> dict[str, Any]:
    """A flow whose first block is the fake side effect, returning who ran it."""
    return {
        "flow": flow,
        "start": "effect",
        "blocks": {
            "effect": {"type": "effect", "value": "=run.id", "next": "done"},
            "done": {
                "type": "return",
                "value": {"user": "=run.user_id", "roles": "=run.roles", "depth": "=run.depth"},
            },
        },
        **extra,
    }


def caller_document(
    flow: str, target: str = "target", inputs: Any = None, **call: Any
) -> dict[str, Any]:
    """A flow that calls ``target`` from a block and returns the child's output."""
    block: dict[str, Any] = {"type": "call_flow", "flow": target, "result": "child"}
    if inputs is not None:
        block["inputs"] = inputs
    block.update(call)
    return {
        "flow": flow,
        "start": "before",
        "blocks": {
            "before": {"type": "set", "values": {"reached": True}, "next": "call"},
            "call": {**block, "next": "done"},
            "done": {"type": "return", "value": "=vars.child"},
        },
    }


live = deploy


def stored_runs(engine: Engine) -> dict[str, RunResult]:
    """Finished runs the in-memory store keeps."""
    store = engine.store
    assert isinstance(store, MemoryStore)
    return dict(store._runs)


def assert_nothing_ran(engine: Engine, fake: FakeBlock, *, runs: int = 0) -> None:
    assert list(engine.active_runs()) == []
    assert len(stored_runs(engine)) == runs
    assert fake.calls == []


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


# -- 1. permission comes first ---------------------------------------------------------------


async def test_a_denied_caller_gets_activation_denied_for_an_unknown_flow(
    engine: Engine, fake: FakeBlock
) -> None:
    await live(engine, child_document())
    await engine.permissions.deny(Role("NonAuthenticatedUser"))

    with pytest.raises(ActivationDenied) as unknown:
        await engine.call_flow("no-such-flow", {}, identity=ANONYMOUS)
    with pytest.raises(ActivationDenied) as known:
        await engine.call_flow("target", {}, identity=ANONYMOUS)

    assert not isinstance(unknown.value, FlowNotFound)
    assert unknown.value.decision is not None
    assert unknown.value.decision.layer == "app.system_role"
    assert unknown.value.reason == "denied by app-wide system role NonAuthenticatedUser"
    # the refusal of an unknown flow says exactly what the refusal of a real one says
    assert unknown.value.decision == known.value.decision
    assert unknown.value.version is None and known.value.version is None
    assert str(unknown.value).replace("no-such-flow", "target") == str(known.value)
    assert_nothing_ran(engine, fake)


async def test_an_allowed_caller_learns_that_an_unknown_flow_does_not_exist(
    engine: Engine,
) -> None:
    with pytest.raises(FlowNotFound):
        await engine.call_flow("no-such-flow", {}, identity=ALICE)


async def test_a_flow_denied_to_a_user_is_refused_before_its_existence_is_checked(
    engine: Engine, fake: FakeBlock
) -> None:
    await engine.permissions.deny(User("alice"), flow="ghost")

    with pytest.raises(ActivationDenied) as refused:
        await engine.call_flow("ghost", {}, identity=ALICE)

    assert refused.value.decision is not None
    assert refused.value.decision.layer == "flow.user"
    assert_nothing_ran(engine, fake)


@pytest.mark.parametrize("status", ["PAUSED", "READY", "INVALID"])
async def test_a_target_that_is_not_live_refuses_only_after_the_permission_step(
    engine: Engine, fake: FakeBlock, status: str
) -> None:
    if status == "INVALID":
        document = child_document()
        document["blocks"]["done"]["next"] = "nowhere"
        version = await engine.add_version(document)
    else:
        version = await engine.add_version(child_document())
        if status == "PAUSED":
            await engine.start("target", version)
            await engine.pause("target")
    assert (await engine.get_version("target", version)).status == status
    await engine.permissions.deny(User("mallory"), flow="target")

    with pytest.raises(ActivationDenied) as denied:
        await engine.call_flow("target", {}, identity=Identity(user_id="mallory"))
    with pytest.raises(FlowNotLive) as not_live:
        await engine.call_flow("target", {}, identity=ALICE)

    assert denied.value.decision is not None and denied.value.decision.layer == "flow.user"
    assert not_live.value.version == version
    assert status in str(not_live.value)
    assert_nothing_ran(engine, fake)


async def test_an_explicit_version_that_is_not_live_is_refused(
    engine: Engine, fake: FakeBlock
) -> None:
    old = await live(engine, child_document())
    await live(engine, child_document())  # switchover: the old version is READY now

    with pytest.raises(FlowNotLive):
        await engine.call_flow("target", {}, identity=ALICE, version=old)
    with pytest.raises(FlowNotFound):
        await engine.call_flow("target", {}, identity=ALICE, version=old + 5)
    assert_nothing_ran(engine, fake)


# -- 4. the callable_by policy ---------------------------------------------------------------


async def test_callable_by_refuses_a_call_from_a_flow_it_does_not_list(
    engine: Engine, fake: FakeBlock
) -> None:
    await live(engine, child_document(callable_by=["checkout"]))
    await live(engine, caller_document("checkout"))
    await live(engine, caller_document("intruder"))

    with capture_logs() as logs:
        refused = await engine.call_flow("intruder", {}, identity=ALICE)

    assert refused.status is RunStatus.FAILED
    assert refused.error is not None
    assert (refused.error.code, refused.error.block) == ("activation_denied", "call")
    assert refused.error.child_run_id is None
    assert "callable_by" in refused.error.message
    [denial] = events(logs, "activation.denied")
    assert denial["reason"] == "callable_by"
    assert denial["parent_run_id"] == refused.run_id
    assert fake.calls == []

    allowed = await engine.call_flow("checkout", {}, identity=ALICE)
    assert allowed.status is RunStatus.COMPLETED
    assert allowed.output == {"user": "alice", "roles": [], "depth": 1}
    direct = await engine.call_flow("target", {}, identity=ALICE)  # the API is not a flow
    assert direct.status is RunStatus.COMPLETED
    assert len(fake.calls) == 2


async def test_an_empty_callable_by_allows_only_external_activation(
    engine: Engine, fake: FakeBlock
) -> None:
    await live(engine, child_document(callable_by=[]))
    await live(engine, caller_document("checkout"))
    await live(engine, caller_document("target-self", target="target"))

    for caller in ("checkout", "target-self"):
        result = await engine.call_flow(caller, {}, identity=ALICE)
        assert result.error is not None and result.error.code == "activation_denied"
    assert fake.calls == []

    direct = await engine.call_flow("target", {}, identity=ALICE)
    assert direct.status is RunStatus.COMPLETED
    assert len(fake.calls) == 1


async def test_callable_by_is_read_from_the_live_version(engine: Engine, fake: FakeBlock) -> None:
    await live(engine, child_document(callable_by=[]))
    await live(engine, caller_document("checkout"))
    first = await engine.call_flow("checkout", {}, identity=ALICE)
    assert first.error is not None and first.error.code == "activation_denied"

    await live(engine, child_document())  # a new LIVE version without the restriction

    second = await engine.call_flow("checkout", {}, identity=ALICE)
    assert second.status is RunStatus.COMPLETED
    assert len(fake.calls) == 1


async def test_callable_by_is_checked_after_the_permission_step(
    engine: Engine, fake: FakeBlock
) -> None:
    await live(engine, child_document(callable_by=["checkout"]))
    await live(engine, caller_document("intruder"))
    await engine.permissions.deny(User("alice"), flow="target")

    with capture_logs() as logs:
        result = await engine.call_flow("intruder", {}, identity=ALICE)

    assert result.error is not None and result.error.code == "activation_denied"
    [denial] = events(logs, "activation.denied")
    assert denial["layer"] == "flow.user"
    assert denial["reason"] == "denied by flow-level user alice"
    assert fake.calls == []


# -- 5. depth --------------------------------------------------------------------------------

RECURSE = {
    "flow": "recurse",
    "start": "call",
    "blocks": {
        "call": {
            "type": "call_flow",
            "flow": "recurse",
            "result": "inner",
            "next": "done",
            "on_error": "stopped",
        },
        "done": {"type": "return", "value": {"depth": "=run.depth", "inner": "=vars.inner"}},
        "stopped": {
            "type": "return",
            "value": {"depth": "=run.depth", "stopped": "=vars.error.code"},
        },
    },
}


async def test_a_flow_calling_itself_stops_at_the_depth_limit() -> None:
    async with Engine(limits=Limits(max_depth=3)) as engine:
        await live(engine, RECURSE)
        with capture_logs() as logs:
            result = await engine.call_flow("recurse", {}, identity=ALICE)

        assert result.status is RunStatus.COMPLETED
        assert result.output == {
            "depth": 0,
            "inner": {
                "depth": 1,
                "inner": {"depth": 2, "inner": {"depth": 3, "stopped": "activation_denied"}},
            },
        }
        runs = stored_runs(engine)
        assert sorted(run.depth for run in runs.values()) == [0, 1, 2, 3]
        deepest = next(run for run in runs.values() if run.depth == 3)
        assert deepest.has_errors
        [denial] = events(logs, "activation.denied")
        assert denial["reason"] == "depth_limit"
        assert denial["parent_run_id"] == deepest.run_id
        assert len(events(logs, "activation.allowed")) == 4


async def test_an_unhandled_depth_refusal_fails_the_deepest_block_with_activation_denied() -> None:
    document = {
        "flow": "recurse",
        "start": "call",
        "blocks": {"call": {"type": "call_flow", "flow": "recurse"}},
    }
    async with Engine(limits=Limits(max_depth=1)) as engine:
        await live(engine, document)
        result = await engine.call_flow("recurse", {}, identity=ALICE)

        assert result.status is RunStatus.FAILED
        assert result.error is not None and result.error.code == "child_failed"
        child = await engine.get_run(result.error.child_run_id or "")
        assert child.depth == 1
        assert child.error is not None
        assert (child.error.code, child.error.block) == ("activation_denied", "call")
        assert "depth 2" in child.error.message
        assert child.error.child_run_id is None
        assert len(stored_runs(engine)) == 2


async def test_a_depth_limit_of_zero_allows_only_root_runs(fake: FakeBlock) -> None:
    async with Engine(registry=BlockRegistry([fake.definition]), limits=Limits(max_depth=0)) as e:
        await live(e, child_document())
        await live(e, caller_document("parent"))

        assert (await e.call_flow("target", {}, identity=ALICE)).status is RunStatus.COMPLETED
        result = await e.call_flow("parent", {}, identity=ALICE)
        assert result.error is not None and result.error.code == "activation_denied"
        assert len(fake.calls) == 1


# -- 6. inputs come last ---------------------------------------------------------------------


async def test_invalid_inputs_are_reported_only_when_everything_else_passes(
    engine: Engine, fake: FakeBlock
) -> None:
    bad = {"amount": "lots"}
    await live(engine, child_document(inputs=SCHEMA))
    await engine.permissions.deny(User("mallory"))

    with pytest.raises(ActivationDenied):
        await engine.call_flow("target", bad, identity=Identity(user_id="mallory"))
    with pytest.raises(ActivationDenied):
        await engine.call_flow("ghost", bad, identity=Identity(user_id="mallory"))
    with pytest.raises(FlowNotFound):
        await engine.call_flow("ghost", bad, identity=ALICE)
    with pytest.raises(InvalidInputs) as invalid:
        await engine.call_flow("target", bad, identity=ALICE)
    assert invalid.value.problems and invalid.value.problems[0].startswith("amount:")

    await engine.pause("target")
    with pytest.raises(FlowNotLive):
        await engine.call_flow("target", bad, identity=ALICE)
    assert_nothing_ran(engine, fake)


async def test_invalid_inputs_from_a_block_come_after_callable_by_and_depth(
    fake: FakeBlock,
) -> None:
    async with Engine(registry=BlockRegistry([fake.definition]), limits=Limits(max_depth=1)) as e:
        await live(e, child_document(inputs=SCHEMA, callable_by=["parent"]))
        await live(e, caller_document("parent", inputs={"amount": "lots"}))
        await live(e, caller_document("intruder", inputs={"amount": "lots"}))
        await live(e, caller_document("deep", target="parent"))

        with capture_logs() as logs:
            await e.call_flow("intruder", {}, identity=ALICE)
            await e.call_flow("deep", {}, identity=ALICE)
            await e.call_flow("parent", {}, identity=ALICE)

        reasons = [entry["reason"] for entry in events(logs, "activation.denied")]
        assert reasons == ["callable_by", "depth_limit", "invalid_inputs"]
        assert fake.calls == []


# -- nothing of a refused run ----------------------------------------------------------------


async def test_a_refused_child_leaves_no_run_no_child_id_and_no_trace(fake: FakeBlock) -> None:
    hold = HoldBlock()
    registry = BlockRegistry([fake.definition, hold.definition])
    store = MemoryStore(durable=True)
    async with Engine(store, registry=registry) as engine:
        await live(engine, child_document())
        await live(
            engine,
            {
                "flow": "parent",
                "start": "call",
                "blocks": {
                    "call": {"type": "call_flow", "flow": "target", "on_error": "park"},
                    "park": {"type": "hold", "next": "done"},
                    "done": {"type": "return", "value": "=vars.error"},
                },
            },
        )
        await engine.permissions.deny(User("alice"), flow="target")

        parent_id = await engine.call_flow("parent", {}, identity=ALICE, wait=False)
        with anyio.fail_after(5):
            await hold.reached.wait()

        # mid-run: the parent's checkpoint names no child, and the store holds no other run
        record = await store.get_run_record(parent_id)
        assert record is not None and record.checkpoint is not None
        assert record.checkpoint["children"] == []
        assert record.checkpoint["waiting"] == {}
        assert [entry[0] for entry in record.trace] == ["call"]
        assert list(store._records) == [parent_id]
        assert list(engine.active_runs()) == [parent_id]

        hold.release.set()
        with anyio.fail_after(5):
            result = await engine.wait_for(parent_id)

    assert result.status is RunStatus.COMPLETED and result.has_errors
    assert result.output["code"] == "activation_denied"
    assert "child_run_id" not in result.output
    assert list(store._records) == [parent_id]
    assert fake.calls == []


async def test_refused_api_activations_create_no_run_at_all(
    engine: Engine, fake: FakeBlock
) -> None:
    await live(engine, child_document(inputs=SCHEMA))
    await engine.permissions.deny(User("mallory"))
    refusals: list[tuple[str, dict[str, Any], Identity]] = [
        ("target", {"amount": 1}, Identity(user_id="mallory")),
        ("ghost", {"amount": 1}, ALICE),
        ("target", {"amount": -1}, ALICE),
    ]
    with capture_logs() as logs:
        for flow, inputs, identity in refusals:
            with pytest.raises(ActivationError):
                await engine.call_flow(flow, inputs, identity=identity)
            with pytest.raises(ActivationError):
                await engine.call_flow(flow, inputs, identity=identity, wait=False)

    assert len(events(logs, "activation.denied")) == 6
    assert not [entry for entry in logs if entry["event"].startswith("run.")]
    assert_nothing_ran(engine, fake)


# -- every decision is logged ----------------------------------------------------------------


async def test_an_allowed_api_activation_is_logged_with_its_decision(engine: Engine) -> None:
    version = await live(engine, child_document())
    await engine.permissions.grant(Role("Manager"), flow="target")

    with capture_logs() as logs:
        await engine.call_flow("target", {}, identity=MANAGER)

    [allowed] = events(logs, "activation.allowed")
    assert allowed == {
        "event": "activation.allowed",
        "log_level": "info",
        "flow": "target",
        "version": version,
        "via": "api",
        "user": "mia",
        "roles": ["Manager"],
        "layer": "flow.role",
        "reason": "granted by flow-level role Manager",
        "parent_run_id": None,
    }


async def test_decisions_are_logged_when_structlog_keeps_its_loggers(engine: Engine) -> None:
    """Production configures ``cache_logger_on_first_use``; the gate then keeps the bound
    logger, and every decision, allowed or denied, must still reach the processors."""
    await live(engine, child_document())
    await engine.permissions.deny(Role("Contractor"))
    captured = structlog.testing.LogCapture()
    structlog.configure(processors=[captured], cache_logger_on_first_use=True)
    try:
        for identity in (MANAGER, Identity("carl", {"Contractor"}), MANAGER):
            with contextlib.suppress(ActivationDenied):
                await engine.call_flow("target", {}, identity=identity)
    finally:
        structlog.reset_defaults()
    decisions = [
        (entry["event"], entry["user"])
        for entry in captured.entries
        if entry["event"].startswith("activation.")
    ]
    assert decisions == [
        ("activation.allowed", "mia"),
        ("activation.denied", "carl"),
        ("activation.allowed", "mia"),
    ]


async def test_a_denied_api_activation_is_logged_with_its_decision(engine: Engine) -> None:
    await live(engine, child_document())
    await engine.permissions.deny(Role("Contractor"))

    with capture_logs() as logs, pytest.raises(ActivationDenied):
        await engine.call_flow("target", {}, identity=Identity("carl", {"Contractor", "Dev"}))

    [denied] = events(logs, "activation.denied")
    assert {key: denied[key] for key in denied if key not in ("log_level", "error")} == {
        "event": "activation.denied",
        "flow": "target",
        "version": None,
        "via": "api",
        "user": "carl",
        "roles": ["Contractor", "Dev"],
        "layer": "app.role",
        "reason": "denied by app-wide role Contractor",
        "parent_run_id": None,
    }
    assert not events(logs, "activation.allowed")


async def test_call_flow_activations_are_logged_with_the_parent_run(engine: Engine) -> None:
    child_version = await live(engine, child_document())
    await live(engine, child_document("secret"))
    parent_version = await live(engine, caller_document("parent"))
    await live(engine, caller_document("snoop", target="secret"))
    await engine.permissions.deny(Role("AuthenticatedUser"), flow="secret")

    with capture_logs() as logs:
        parent = await engine.call_flow("parent", {}, identity=ALICE)
        snoop = await engine.call_flow("snoop", {}, identity=ALICE)

    allowed = events(logs, "activation.allowed")
    assert [(e["flow"], e["via"], e["parent_run_id"]) for e in allowed] == [
        ("parent", "api", None),
        ("target", "call_flow", parent.run_id),
        ("snoop", "api", None),
    ]
    assert allowed[0]["version"] == parent_version
    assert allowed[1]["version"] == child_version
    assert allowed[1]["user"] == "alice" and allowed[1]["roles"] == []
    assert allowed[1]["layer"] == "default" and allowed[1]["reason"] == "granted by default"
    [denied] = events(logs, "activation.denied")
    assert denied["flow"] == "secret"
    assert denied["via"] == "call_flow"
    assert denied["parent_run_id"] == snoop.run_id
    assert denied["user"] == "alice"
    assert denied["layer"] == "flow.system_role"
    assert denied["reason"] == "denied by flow-level system role AuthenticatedUser"


async def test_refusals_after_the_permission_step_are_logged_with_their_reason(
    engine: Engine,
) -> None:
    version = await engine.add_version(child_document())

    with capture_logs() as logs:
        with pytest.raises(FlowNotLive):
            await engine.call_flow("target", {}, identity=ALICE)
        with pytest.raises(FlowNotFound):
            await engine.call_flow("ghost", {}, identity=ALICE)

    not_live, not_found = events(logs, "activation.denied")
    assert (not_live["reason"], not_live["version"]) == ("flow_not_live", version)
    assert (not_found["reason"], not_found["version"]) == ("flow_not_found", None)
    assert not_live["user"] == not_found["user"] == "alice"


# -- hostile settings, end to end ------------------------------------------------------------


async def test_a_user_grant_beats_a_flow_level_role_deny(engine: Engine, fake: FakeBlock) -> None:
    await live(engine, child_document())
    await live(engine, caller_document("parent"))
    await engine.permissions.deny(Role("Contractor"), flow="target")
    await engine.permissions.grant(User("carl"), flow="target")
    carl = Identity(user_id="carl", roles={"Contractor"})
    dora = Identity(user_id="dora", roles={"Contractor"})

    assert (await engine.call_flow("parent", {}, identity=carl)).output["user"] == "carl"
    refused = await engine.call_flow("parent", {}, identity=dora)
    assert refused.error is not None and refused.error.code == "activation_denied"
    assert len(fake.calls) == 1


async def test_a_user_deny_beats_a_role_grant(engine: Engine, fake: FakeBlock) -> None:
    await live(engine, child_document())
    await live(engine, caller_document("parent"))
    await engine.permissions.deny(Role("AuthenticatedUser"), flow="target")
    await engine.permissions.grant(Role("Manager"), flow="target")
    await engine.permissions.deny(User("mia"), flow="target")
    max_ = Identity(user_id="max", roles={"Manager"})

    refused = await engine.call_flow("parent", {}, identity=MANAGER)
    assert refused.error is not None and refused.error.code == "activation_denied"
    with pytest.raises(ActivationDenied) as direct:
        await engine.call_flow("target", {}, identity=MANAGER)
    assert direct.value.decision is not None and direct.value.decision.layer == "flow.user"
    assert (await engine.call_flow("parent", {}, identity=max_)).output["user"] == "max"
    assert len(fake.calls) == 1


@pytest.mark.parametrize("granted_first", [True, False])
@pytest.mark.parametrize("names", [("Alpha", "Zulu"), ("Zulu", "Alpha")])
@pytest.mark.parametrize("flow", ["target", None])
async def test_a_deny_among_two_custom_roles_wins_in_every_order(
    engine: Engine,
    fake: FakeBlock,
    granted_first: bool,
    names: tuple[str, str],
    flow: str | None,
) -> None:
    await live(engine, child_document())
    await live(engine, caller_document("parent"))
    granted, denied = names
    await engine.permissions.grant(User("pat"), flow="parent")  # the caller itself may run
    changes = [
        engine.permissions.grant(Role(granted), flow=flow),
        engine.permissions.deny(Role(denied), flow=flow),
    ]
    for change in changes if granted_first else reversed(changes):
        await change

    for roles in itertools.permutations([granted, denied]):
        identity = Identity(user_id="pat", roles=roles)
        with pytest.raises(ActivationDenied) as direct:
            await engine.call_flow("target", {}, identity=identity)
        assert direct.value.decision is not None
        assert direct.value.decision.subject == Role(denied)
        assert direct.value.reason.startswith("denied by ")
        result = await engine.call_flow("parent", {}, identity=identity)
        assert result.error is not None and result.error.code == "activation_denied"
    only_granted = Identity(user_id="pat", roles={granted})
    assert (await engine.call_flow("parent", {}, identity=only_granted)).output["user"] == "pat"
    assert len(fake.calls) == 1


async def test_deny_authenticated_grant_manager_admits_only_managers(
    engine: Engine, fake: FakeBlock
) -> None:
    await live(engine, child_document())
    await live(engine, caller_document("parent"))
    await engine.permissions.deny(Role("NonAuthenticatedUser"))
    await engine.permissions.deny(Role("AuthenticatedUser"), flow="target")
    await engine.permissions.grant(Role("Manager"), flow="target")

    outcomes = {}
    for name, identity in {
        "manager": MANAGER,
        "manager and auditor": Identity(user_id="max", roles={"Manager", "Auditor"}),
        "plain user": ALICE,
        "auditor": Identity(user_id="otto", roles={"Auditor"}),
        "anonymous": ANONYMOUS,
    }.items():
        try:
            result = await engine.call_flow("target", {}, identity=identity)
        except ActivationDenied:
            direct = False
        else:
            direct = result.status is RunStatus.COMPLETED
        if identity.is_anonymous:
            via_block = None  # anonymous callers cannot start the parent at all
        else:
            result = await engine.call_flow("parent", {}, identity=identity)
            via_block = result.status is RunStatus.COMPLETED
        outcomes[name] = (direct, via_block)

    assert outcomes == {
        "manager": (True, True),
        "manager and auditor": (True, True),
        "plain user": (False, False),
        "auditor": (False, False),
        "anonymous": (False, None),
    }
    assert len(fake.calls) == 4


# -- hostile callers -------------------------------------------------------------------------

SMUGGLER = {
    "flow": "smuggler",
    "start": "forge",
    "blocks": {
        "forge": {
            "type": "set",
            "values": {"user_id": "root", "roles": ["Manager"], "run": {"user_id": "root"}},
            "next": "call",
        },
        "call": {
            "type": "call_flow",
            "flow": "target",
            "inputs": {
                "user_id": "=vars.user_id",
                "roles": "=vars.roles",
                "identity": {"user_id": "root", "roles": ["Manager"]},
            },
            "result": "child",
            "next": "done",
        },
        "done": {"type": "return", "value": "=vars.child"},
    },
}


async def test_identity_smuggled_through_inputs_or_variables_changes_nothing(
    engine: Engine, fake: FakeBlock
) -> None:
    await live(engine, child_document())
    await live(engine, SMUGGLER)
    await engine.permissions.deny(Role("AuthenticatedUser"), flow="target")
    await engine.permissions.grant(Role("Manager"), flow="target")
    await engine.permissions.grant(User("root"), flow="target")
    await engine.permissions.deny(Role("NonAuthenticatedUser"), flow="target")
    forged = {"user_id": "root", "roles": ["Manager"]}

    with pytest.raises(ActivationDenied) as direct:
        await engine.call_flow("target", forged, identity=ALICE)
    assert direct.value.decision is not None and direct.value.decision.subject == Role(
        "AuthenticatedUser"
    )
    with pytest.raises(ActivationDenied):
        await engine.call_flow("target", forged, identity=ANONYMOUS)

    with capture_logs() as logs:
        refused = await engine.call_flow("smuggler", forged, identity=ALICE)
    assert refused.error is not None and refused.error.code == "activation_denied"
    [denial] = events(logs, "activation.denied")
    assert (denial["user"], denial["roles"]) == ("alice", [])
    assert fake.calls == []

    # a caller who is allowed runs the child as itself, whatever the variables say
    allowed = await engine.call_flow("smuggler", forged, identity=MANAGER)
    assert allowed.output == {"user": "mia", "roles": ["Manager"], "depth": 1}
    child = stored_runs(engine)[fake.calls[0].value]
    assert (child.user_id, child.roles) == ("mia", ("Manager",))
    assert child.inputs["user_id"] == "root"  # it arrived as data, and stayed data


async def test_a_revoked_permission_stops_the_next_child_but_not_the_running_parent(
    fake: FakeBlock,
) -> None:
    hold = HoldBlock()
    async with Engine(registry=BlockRegistry([fake.definition, hold.definition])) as engine:
        await live(engine, child_document())
        await live(
            engine,
            {
                "flow": "parent",
                "start": "first",
                "blocks": {
                    "first": {"type": "call_flow", "flow": "target", "next": "park"},
                    "park": {"type": "hold", "next": "second"},
                    "second": {
                        "type": "call_flow",
                        "flow": "target",
                        "next": "done",
                        "on_error": "refused",
                    },
                    "refused": {"type": "set", "values": {"refused": "=vars.error.code"}},
                    "done": {"type": "return", "value": "second child ran"},
                },
            },
        )
        parent_id = await engine.call_flow("parent", {}, identity=ALICE, wait=False)
        with anyio.fail_after(5):
            await hold.reached.wait()
        assert len(fake.calls) == 1

        await engine.permissions.deny(User("alice"), flow="target")
        await engine.permissions.deny(User("alice"), flow="parent")
        assert parent_id in engine.active_runs()
        hold.release.set()
        with anyio.fail_after(5):
            result = await engine.wait_for(parent_id)

        assert result.status is RunStatus.COMPLETED and result.has_errors
        assert [entry.block for entry in result.trace] == ["first", "park", "second", "refused"]
        assert result.trace[2].outcome == "activation_denied"
        assert len(fake.calls) == 1
        with pytest.raises(ActivationDenied):
            await engine.call_flow("parent", {}, identity=ALICE)


class BrokenStore(MemoryStore):
    """A store whose permission settings can fail on demand (the store, not the gate)."""

    broken = False

    async def permission_settings(self) -> Any:
        if self.broken:
            raise StoreError("the settings table is unreachable")
        return await super().permission_settings()


class BreakParams(Params):
    pass


async def test_a_store_error_while_resolving_denies(fake: FakeBlock) -> None:
    store = BrokenStore()

    async def sabotage(ctx: BlockContext, params: BreakParams) -> None:
        store.broken = True

    registry = BlockRegistry([fake.definition, BlockDefinition("sabotage", BreakParams, sabotage)])
    async with Engine(store, registry=registry) as engine:
        await live(engine, child_document())
        await live(
            engine,
            {
                "flow": "parent",
                "start": "outage",
                "blocks": {
                    "outage": {"type": "sabotage", "next": "call"},
                    "call": {"type": "call_flow", "flow": "target"},
                },
            },
        )
        parent = await engine.call_flow("parent", {}, identity=ALICE)
        assert parent.status is RunStatus.FAILED
        assert parent.error is not None and parent.error.code == "activation_denied"
        assert "unreachable" in parent.error.message

        with capture_logs() as logs, pytest.raises(ActivationDenied) as refused:
            await engine.call_flow("target", {}, identity=ALICE)
        decision = refused.value.decision
        assert decision is not None
        assert (decision.allowed, decision.layer, decision.subject) == (False, "error", None)
        [denial] = events(logs, "activation.denied")
        assert denial["layer"] == "error"

        resolved = await engine.permissions.resolve("target", ALICE)
        assert (resolved.allowed, resolved.layer) == (False, "error")

        store.broken = False
        assert (await engine.permissions.resolve("target", ALICE)).allowed
        assert (await engine.call_flow("target", {}, identity=ALICE)).status == "COMPLETED"
        assert len(fake.calls) == 1
        assert len(stored_runs(engine)) == 2


async def test_the_gate_does_not_accept_something_that_is_not_an_identity(
    engine: Engine, fake: FakeBlock
) -> None:
    await live(engine, child_document())
    forged: Any = {"user_id": "root", "roles": ["Manager"]}

    with capture_logs() as logs, pytest.raises(ActivationDenied) as refused:
        await engine.call_flow("target", {}, identity=forged)
    assert refused.value.reason == "error"
    assert_nothing_ran(engine, fake)
    [event] = [entry for entry in logs if entry["event"] == "activation.denied"]
    assert event["user"] is None and event["roles"] is None


async def test_a_refusal_is_freed_as_soon_as_the_caller_drops_it(engine: Engine) -> None:
    """A refusal raised by the gate is not kept alive by a reference cycle through its
    traceback, which would leave every denial to the garbage collector."""
    import gc
    import weakref

    from engine._runtime.gate import Activation, Gate

    await live(engine, child_document())
    await engine.permissions.deny(User("alice"), flow="target")
    gate = Gate(engine.store, engine.program, engine.limits)
    refused: list[weakref.ref[ActivationError]] = []
    gc.collect()
    gc.disable()
    try:
        for flow in ("target", "no-such-flow"):  # a denial, and a flow that does not exist
            try:
                await gate.admit(Activation(flow, None, ALICE, "api"))
            except ActivationError as exc:
                refused.append(weakref.ref(exc))
        assert len(refused) == 2
        assert [ref() for ref in refused] == [None, None]
    finally:
        gc.enable()
