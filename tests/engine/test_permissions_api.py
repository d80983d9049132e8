"""``engine.permissions``: grant, deny and inherit per flow and app-wide, the default,
and the snapshots and decisions it hands back -- each checked against real activations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine import (
    ANONYMOUS,
    ActivationDenied,
    Decision,
    Engine,
    Identity,
    Permission,
    Role,
    RunStatus,
    User,
)
from permissions import Level, Settings

ALICE = Identity(user_id="alice")
BOB = Identity(user_id="bob", roles={"Manager"})


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with Engine() as running:
        for flow in ("payroll", "reports", "unconfigured"):
            document = {
                "flow": flow,
                "start": "done",
                "blocks": {"done": {"type": "return", "value": "=run.flow"}},
            }
            await running.start(flow, await running.add_version(document))
        yield running


async def admitted(engine: Engine, flow: str, identity: Identity) -> bool:
    """Whether a real activation gets past the gate (and the decision agrees)."""
    decision = await engine.permissions.resolve(flow, identity)
    try:
        result = await engine.call_flow(flow, {}, identity=identity)
    except ActivationDenied as exc:
        assert exc.decision == decision
        return False
    assert decision.allowed
    assert result.status is RunStatus.COMPLETED
    return True


async def test_everything_is_granted_by_default(engine: Engine) -> None:
    decision = await engine.permissions.resolve("payroll", ALICE)

    assert decision == Decision(True, "default", None, "granted by default")
    assert await engine.permissions.settings() == Settings()
    assert await admitted(engine, "payroll", ANONYMOUS)


async def test_grant_deny_and_inherit_per_flow(engine: Engine) -> None:
    await engine.permissions.deny(User("alice"), flow="payroll")

    assert not await admitted(engine, "payroll", ALICE)
    assert await admitted(engine, "reports", ALICE)
    decision = await engine.permissions.resolve("payroll", ALICE)
    assert (decision.layer, decision.subject, decision.reason) == (
        "flow.user",
        User("alice"),
        "denied by flow-level user alice",
    )

    await engine.permissions.grant(User("alice"), flow="payroll")
    assert await admitted(engine, "payroll", ALICE)
    assert (await engine.permissions.resolve("payroll", ALICE)).layer == "flow.user"

    await engine.permissions.inherit(User("alice"), flow="payroll")
    assert (await engine.permissions.resolve("payroll", ALICE)).layer == "default"
    assert await engine.permissions.level("payroll") == Level()
    assert "payroll" not in (await engine.permissions.settings()).flows


async def test_grant_deny_and_inherit_app_wide(engine: Engine) -> None:
    await engine.permissions.deny(Role("Manager"))

    for flow in ("payroll", "reports", "unconfigured", "no-such-flow"):
        decision = await engine.permissions.resolve(flow, BOB)
        assert (decision.allowed, decision.layer, decision.subject) == (
            False,
            "app.role",
            Role("Manager"),
        )
    assert not await admitted(engine, "reports", BOB)
    assert await admitted(engine, "reports", ALICE)

    await engine.permissions.grant(Role("Manager"), flow="reports")  # specific beats global
    assert await admitted(engine, "reports", BOB)
    assert not await admitted(engine, "payroll", BOB)

    await engine.permissions.inherit(Role("Manager"))
    assert await admitted(engine, "payroll", BOB)
    assert await engine.permissions.level() == Level()
    assert await engine.permissions.level(None) == Level()


async def test_settings_and_level_show_what_was_set(engine: Engine) -> None:
    await engine.permissions.grant(Role("Manager"), flow="payroll")
    await engine.permissions.deny(Role("AuthenticatedUser"), flow="payroll")
    await engine.permissions.deny(User("mallory"))
    await engine.permissions.set(Role("NonAuthenticatedUser"), "DENY")
    await engine.permissions.set(User("alice"), Permission.GRANT, flow="reports")

    settings = await engine.permissions.settings()

    assert settings.default is Permission.GRANT
    assert settings.app == Level(
        users={"mallory": Permission.DENY}, roles={"NonAuthenticatedUser": Permission.DENY}
    )
    assert dict(settings.flows) == {
        "payroll": Level(roles={"Manager": Permission.GRANT, "AuthenticatedUser": Permission.DENY}),
        "reports": Level(users={"alice": Permission.GRANT}),
    }
    assert await engine.permissions.level("payroll") == settings.flows["payroll"]
    assert await engine.permissions.level("unconfigured") == Level()
    assert await engine.permissions.level() == settings.app


async def test_a_snapshot_does_not_change_when_settings_do(engine: Engine) -> None:
    before = await engine.permissions.settings()

    await engine.permissions.deny(User("alice"), flow="payroll")

    assert before == Settings()
    assert (await engine.permissions.settings()).level("payroll").users == {
        "alice": Permission.DENY
    }


async def test_set_default_deny_makes_unconfigured_flows_deny(engine: Engine) -> None:
    await engine.permissions.grant(Role("AuthenticatedUser"), flow="reports")
    await engine.permissions.set_default(Permission.DENY)

    decision = await engine.permissions.resolve("unconfigured", ALICE)
    assert decision == Decision(False, "default", None, "denied by default")
    assert not await admitted(engine, "unconfigured", ALICE)
    assert not await admitted(engine, "unconfigured", ANONYMOUS)
    assert await admitted(engine, "reports", ALICE)
    assert not await admitted(engine, "reports", ANONYMOUS)
    assert (await engine.permissions.settings()).default is Permission.DENY

    await engine.permissions.set_default("GRANT")
    assert await admitted(engine, "unconfigured", ALICE)


async def test_set_default_deny_also_hides_which_flows_exist(engine: Engine) -> None:
    await engine.permissions.set_default(Permission.DENY)

    with pytest.raises(ActivationDenied) as unknown:
        await engine.call_flow("no-such-flow", {}, identity=ALICE)

    assert unknown.value.decision == Decision(False, "default", None, "denied by default")


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda p: p.set_default(Permission.INHERIT), ValueError),
        (lambda p: p.set_default("maybe"), ValueError),
        (lambda p: p.set(User("alice"), "ALLOW"), ValueError),
        (lambda p: p.grant("alice"), TypeError),
        (lambda p: p.deny(Role("Manager"), flow=""), ValueError),
    ],
)
async def test_bad_changes_are_refused_and_change_nothing(
    engine: Engine, call: Any, error: type[Exception]
) -> None:
    before = await engine.permissions.settings()

    with pytest.raises(error):
        await call(engine.permissions)

    assert await engine.permissions.settings() == before


async def test_resolve_reports_each_layer_as_the_gate_decides_it(engine: Engine) -> None:
    p = engine.permissions
    await p.deny(Role("NonAuthenticatedUser"))
    await p.grant(User("carol"))
    await p.deny(Role("Contractor"))
    await p.deny(Role("AuthenticatedUser"), flow="payroll")
    await p.grant(Role("Payroll"), flow="payroll")
    await p.grant(User("dave"), flow="payroll")

    cases = {
        ("payroll", Identity("dave", {"Contractor"})): (True, "flow.user"),
        ("payroll", Identity("erin", {"Payroll", "Contractor"})): (True, "flow.role"),
        ("payroll", Identity("carol")): (False, "flow.system_role"),
        ("reports", Identity("carol", {"Contractor"})): (True, "app.user"),
        ("reports", Identity("erin", {"Contractor"})): (False, "app.role"),
        ("reports", ANONYMOUS): (False, "app.system_role"),
        ("reports", ALICE): (True, "default"),
    }
    for (flow, identity), (allowed, layer) in cases.items():
        decision = await p.resolve(flow, identity)
        assert (decision.allowed, decision.layer) == (allowed, layer), (flow, identity)
        assert await admitted(engine, flow, identity) is allowed
