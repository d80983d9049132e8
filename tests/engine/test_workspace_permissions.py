"""``permissions.yaml`` in a workspace: applied as written, refused with the field named
when it is wrong, and only warned about when it names flows the workspace lacks."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine import (
    ANONYMOUS,
    ActivationDenied,
    Engine,
    Identity,
    InvalidWorkspace,
    Permission,
    RunStatus,
)
from engine._runtime.workspace import load_workspace
from engine.testing import capture_logs
from permissions import Level

FLOW = """\
flow: {name}
status: LIVE
start: done
blocks:
  done: {{type: return, value: "=run.flow"}}
"""


def workspace(tmp_path: Path, permissions: str, flows: tuple[str, ...] = ("payroll", "reports")):
    for name in flows:
        (tmp_path / f"{name}.yaml").write_text(FLOW.format(name=name))
    (tmp_path / "permissions.yaml").write_text(textwrap.dedent(permissions))
    return tmp_path


async def outcome(engine: Engine, flow: str, identity: Identity) -> str:
    try:
        result = await engine.call_flow(flow, {}, identity=identity)
    except ActivationDenied as exc:
        assert exc.decision is not None
        return f"denied at {exc.decision.layer}"
    assert result.status is RunStatus.COMPLETED
    return "ran"


async def test_a_valid_permissions_file_is_applied(tmp_path: Path) -> None:
    root = workspace(
        tmp_path,
        """\
        # comments are fine
        default: grant
        app:
          roles: {NonAuthenticatedUser: deny, Contractor: DENY}
          users: {mallory: deny}
        flows:
          payroll:
            roles: {AuthenticatedUser: deny, Manager: grant, Temp: inherit}
            users: {alice: grant}
        """,
    )

    async with await Engine.open_workspace(root) as engine:
        settings = await engine.permissions.settings()
        assert settings.default is Permission.GRANT
        assert settings.app == Level(
            users={"mallory": Permission.DENY},
            roles={"NonAuthenticatedUser": Permission.DENY, "Contractor": Permission.DENY},
        )
        assert settings.flows["payroll"] == Level(
            users={"alice": Permission.GRANT},
            roles={"AuthenticatedUser": Permission.DENY, "Manager": Permission.GRANT},
        )
        cases = {
            ("payroll", Identity("alice")): "ran",
            ("payroll", Identity("bob", {"Manager"})): "ran",
            ("payroll", Identity("carl")): "denied at flow.system_role",
            ("payroll", Identity("dora", {"Contractor", "Manager"})): "ran",
            ("reports", Identity("dora", {"Contractor", "Manager"})): "denied at app.role",
            ("reports", Identity("carl")): "ran",
            ("reports", Identity("mallory")): "denied at app.user",
            ("reports", ANONYMOUS): "denied at app.system_role",
            ("payroll", ANONYMOUS): "denied at app.system_role",
        }
        for (flow, identity), expected in cases.items():
            assert await outcome(engine, flow, identity) == expected, (flow, identity)


async def test_default_deny_in_the_file_denies_flows_without_settings(tmp_path: Path) -> None:
    root = workspace(
        tmp_path,
        """\
        default: deny
        flows: {reports: {roles: {AuthenticatedUser: grant}}}
        """,
    )

    async with await Engine.open_workspace(root) as engine:
        assert await outcome(engine, "payroll", Identity("alice")) == "denied at default"
        assert await outcome(engine, "reports", Identity("alice")) == "ran"
        assert await outcome(engine, "reports", ANONYMOUS) == "denied at default"


async def test_a_workspace_without_a_permissions_file_grants_by_default(tmp_path: Path) -> None:
    (tmp_path / "payroll.yaml").write_text(FLOW.format(name="payroll"))

    async with await Engine.open_workspace(tmp_path) as engine:
        assert await outcome(engine, "payroll", ANONYMOUS) == "ran"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("flows: {payroll: {roles: {Manager: allow}}}", "flows.payroll.roles.Manager"),
        ("app: {users: {alice: yes}}", "app.users.alice"),
        ("app: {roles: {Contractor: 0}}", "app.roles.Contractor"),
        ("default: maybe", "default"),
        ("default: inherit", "default"),
        ("app: {users: {AuthenticatedUser: deny}}", "app.users.AuthenticatedUser"),
        (
            "flows: {payroll: {users: {NonAuthenticatedUser: grant}}}",
            "flows.payroll.users.NonAuthenticatedUser",
        ),
        ("apps: {roles: {Manager: grant}}", "apps"),
        ("flows: {payroll: {groups: {Manager: grant}}}", "flows.payroll.groups"),
    ],
)
async def test_a_wrong_permissions_file_is_refused_naming_the_field(
    tmp_path: Path, text: str, field: str
) -> None:
    root = workspace(tmp_path, text)

    with pytest.raises(InvalidWorkspace) as refused:
        await Engine.open_workspace(root)

    assert [problem.field for problem in refused.value.problems] == [field]
    [problem] = refused.value.problems
    assert problem.file is not None and problem.file.endswith("permissions.yaml")
    assert field in str(refused.value)


async def test_every_problem_of_a_permissions_file_is_reported_at_once(tmp_path: Path) -> None:
    root = workspace(
        tmp_path,
        """\
        app: {users: {AuthenticatedUser: deny, bob: nope}}
        flows: {payroll: {roles: {Manager: sure}}}
        """,
    )

    with pytest.raises(InvalidWorkspace) as refused:
        await Engine.open_workspace(root)

    assert sorted(problem.field or "" for problem in refused.value.problems) == [
        "app.users.AuthenticatedUser",
        "app.users.bob",
        "flows.payroll.roles.Manager",
    ]


async def test_a_refused_permissions_file_applies_nothing(tmp_path: Path) -> None:
    root = workspace(
        tmp_path,
        """\
        app: {roles: {NonAuthenticatedUser: deny}}
        flows: {payroll: {roles: {Manager: allow}}}
        """,
    )
    engine = Engine()

    async with engine:
        with pytest.raises(InvalidWorkspace):
            await load_workspace(engine, root)
        assert await outcome(engine, "payroll", ANONYMOUS) == "ran"


async def test_settings_for_unknown_flows_are_only_warnings(tmp_path: Path) -> None:
    root = workspace(
        tmp_path,
        """\
        app: {roles: {NonAuthenticatedUser: deny}}
        flows:
          payroll: {users: {alice: deny}}
          payrol: {users: {alice: grant}}
        """,
    )
    engine = Engine()

    async with engine:
        with capture_logs() as logs:
            report = await load_workspace(engine, root)

        assert report.problems == []
        assert sorted(report.flows) == ["payroll", "reports"]
        [warning] = report.warnings
        assert "payrol" in warning and "unknown flow" in warning
        assert [e["message"] for e in logs if e["event"] == "workspace.warning"] == [warning]
        assert await outcome(engine, "payroll", Identity("alice")) == "denied at flow.user"
        assert await outcome(engine, "reports", ANONYMOUS) == "denied at app.system_role"


async def test_a_setting_dropped_from_permissions_yaml_is_dropped_from_a_persistent_store(
    tmp_path: Path,
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "hello.yaml").write_text(
        "flow: hello\nstatus: LIVE\nstart: r\nblocks:\n  r: {type: return, value: hi}\n"
    )
    store = f"sqlite:///{tmp_path / 'store.db'}"
    (workspace / "permissions.yaml").write_text("flows: {hello: {users: {bob: deny}}}\n")
    async with await Engine.open_workspace(workspace, store=store) as engine:
        decision = await engine.permissions.resolve("hello", Identity(user_id="bob"))
        assert not decision.allowed
    (workspace / "permissions.yaml").write_text("app: {users: {eve: deny}}\n")
    async with await Engine.open_workspace(workspace, store=store) as engine:
        assert (await engine.permissions.resolve("hello", Identity(user_id="bob"))).allowed
        assert not (await engine.permissions.resolve("hello", Identity(user_id="eve"))).allowed
        versions = await engine.list_versions("hello")
        assert len(versions) == 1  # the same document is not added again
