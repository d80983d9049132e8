"""The ``examples/access`` workspace: one chain of flows, four callers, four outcomes.

``expense-claim`` -> ``approve-expense`` -> ``ledger-post``, every link a Call Flow block
running under the claimant's identity. Anonymous callers and contractors are refused at
the entry; a plain user's small claim is paid, a large one is parked for review because
the approval child is manager-only; a manager's large claim is approved and posted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# This file sits next to the ``tests/engine`` folder, which pytest's default import mode
# would otherwise let shadow the real ``engine`` package when the file runs on its own.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from engine import (  # noqa: E402
    ANONYMOUS,
    ActivationDenied,
    Engine,
    Identity,
    MemoryStore,
    RunResult,
    RunStatus,
    VersionStatus,
)

WORKSPACE = ROOT / "examples" / "access"
FLOWS = ("expense-claim", "approve-expense", "ledger-post")
BOB = Identity(user_id="bob")
CAROL = Identity(user_id="carol", roles={"Manager"})
DAN = Identity(user_id="dan", roles={"Contractor"})


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with await Engine.open_workspace(WORKSPACE) as running:
        yield running


def runs(engine: Engine) -> list[RunResult]:
    store = engine.store
    assert isinstance(store, MemoryStore)
    return sorted(store._runs.values(), key=lambda run: run.depth)


async def test_every_flow_of_the_example_is_valid_and_live(engine: Engine) -> None:
    assert await engine.list_flows() == sorted(FLOWS)
    for flow in FLOWS:
        [info] = await engine.list_versions(flow)
        assert info.problems == ()
        assert info.status is VersionStatus.LIVE


async def test_an_anonymous_caller_is_refused_at_the_entry(engine: Engine) -> None:
    with pytest.raises(ActivationDenied) as refused:
        await engine.call_flow("expense-claim", {"amount": 50}, identity=ANONYMOUS)

    assert refused.value.decision is not None
    assert refused.value.decision.layer == "app.system_role"
    assert refused.value.reason == "denied by app-wide system role NonAuthenticatedUser"
    assert runs(engine) == []


async def test_a_plain_user_files_a_small_claim(engine: Engine) -> None:
    result = await engine.call_flow("expense-claim", {"amount": 50}, identity=BOB)

    assert result.status is RunStatus.COMPLETED
    assert result.output == {"status": "paid from petty cash", "amount": 50, "claimant": "bob"}
    assert not result.has_errors
    assert [run.flow for run in runs(engine)] == ["expense-claim"]


async def test_a_plain_users_large_claim_is_parked_for_review(engine: Engine) -> None:
    result = await engine.call_flow(
        "expense-claim", {"amount": 250, "purpose": "travel"}, identity=BOB
    )

    assert result.status is RunStatus.COMPLETED
    assert result.has_errors
    assert result.output == {
        "status": "pending review",
        "amount": 250,
        "claimant": "bob",
        "reason": "activation_denied",
    }
    assert [(entry.block, entry.outcome) for entry in result.trace] == [
        ("size", "then"),
        ("approve", "activation_denied"),
        ("park", "ok"),
    ]
    assert [run.flow for run in runs(engine)] == ["expense-claim"]  # no approval run at all


async def test_a_managers_large_claim_is_approved_and_posted(engine: Engine) -> None:
    result = await engine.call_flow(
        "expense-claim", {"amount": 250, "purpose": "travel"}, identity=CAROL
    )

    assert result.status is RunStatus.COMPLETED
    assert not result.has_errors
    assert result.output == {
        "status": "approved",
        "amount": 250,
        "claimant": "carol",
        "approval": {
            "approved": True,
            "approver": "carol",
            "entry": {"account": "6200-travel", "amount": 250, "posted_by": "carol", "depth": 2},
        },
    }
    chain = runs(engine)
    assert [(run.flow, run.depth, run.user_id) for run in chain] == [
        ("expense-claim", 0, "carol"),
        ("approve-expense", 1, "carol"),
        ("ledger-post", 2, "carol"),
    ]
    assert {run.root_run_id for run in chain} == {result.run_id}
    assert chain[2].log[0]["message"] == "posting 250 to 6200-travel"


async def test_a_manager_cannot_approve_over_the_limit(engine: Engine) -> None:
    result = await engine.call_flow("expense-claim", {"amount": 9000.5}, identity=CAROL)

    assert result.output == {
        "status": "rejected",
        "amount": 9000.5,
        "claimant": "carol",
        "approval": {
            "approved": False,
            "approver": "carol",
            "note": "over the approval limit of 5000",
        },
    }
    assert [run.flow for run in runs(engine)] == ["expense-claim", "approve-expense"]


async def test_a_contractor_is_refused_everywhere(engine: Engine) -> None:
    with pytest.raises(ActivationDenied) as refused:
        await engine.call_flow("expense-claim", {"amount": 50}, identity=DAN)

    assert refused.value.decision is not None
    assert refused.value.decision.layer == "app.role"
    assert refused.value.reason == "denied by app-wide role Contractor"
    for flow in FLOWS:
        assert not (await engine.permissions.resolve(flow, DAN)).allowed, flow
    assert runs(engine) == []


async def test_the_approval_flows_cannot_be_reached_around_the_entry(engine: Engine) -> None:
    # a plain user may not start the manager-only flows directly either
    for flow, inputs in (
        ("approve-expense", {"amount": 250, "purpose": "travel"}),
        ("ledger-post", {"account": "6900-other", "amount": 1}),
    ):
        with pytest.raises(ActivationDenied) as refused:
            await engine.call_flow(flow, inputs, identity=BOB)
        assert refused.value.reason == "denied by flow-level system role AuthenticatedUser"
    assert runs(engine) == []


MANAGER_OUTPUT = {
    "status": "approved",
    "amount": 250,
    "claimant": "carol",
    "approval": {
        "approved": True,
        "approver": "carol",
        "entry": {"account": "6200-travel", "amount": 250, "posted_by": "carol", "depth": 2},
    },
}


@pytest.mark.parametrize(
    ("arguments", "code", "output"),
    [
        (["-i", "amount=50"], 3, None),
        (["-i", "amount=50", "--user", "dan", "--role", "Contractor"], 3, None),
        (
            ["-i", "amount=50", "--user", "bob"],
            0,
            {"status": "paid from petty cash", "amount": 50, "claimant": "bob"},
        ),
        (
            ["-i", "amount=250", "--user", "bob"],
            0,
            {
                "status": "pending review",
                "amount": 250,
                "claimant": "bob",
                "reason": "activation_denied",
            },
        ),
        (
            ["-i", "amount=250", "-i", "purpose=travel", "--user", "carol", "--role", "Manager"],
            0,
            MANAGER_OUTPUT,
        ),
    ],
    ids=["anonymous", "contractor", "small claim", "large claim", "manager"],
)
def test_the_cli_demo_lines(
    arguments: list[str], code: int, output: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine._cli import main

    assert main(["run", str(WORKSPACE), "expense-claim", *arguments]) == code

    out = capsys.readouterr().out
    assert (json.loads(out) if out.strip() else None) == output
