"""The ``flowwarden`` command line: run, validate and check, in-process and as a program."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import structlog
from cli_support import cli, write

ECHO = """\
    flow: echo
    status: LIVE
    start: done
    blocks:
      done: {type: return, value: "=inputs"}
"""

ORDER = """\
    flow: order
    status: LIVE
    inputs:
      type: object
      required: [amount]
      properties: {amount: {type: number, minimum: 0}}
    start: check
    blocks:
      check: {type: condition, if: "inputs.amount > 100", then: big, else: small}
      big: {type: return, value: {size: big, doubled: "=inputs.amount * 2.0"}}
      small: {type: return, value: {size: small}}
"""

BROKEN = """\
    flow: broken
    status: LIVE
    start: go
    blocks:
      go: {type: fail, code: out_of_stock, message: "=string(inputs.sku) + ' is gone'"}
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    write(root, "echo.yaml", ECHO)
    write(root, "order.yaml", ORDER)
    write(root, "broken.yaml", BROKEN)
    return root


# -- run -----------------------------------------------------------------------------------


def test_run_prints_the_output_as_json_and_the_blocks_on_stderr(capsys, workspace):
    code, out, err = cli(capsys, "run", workspace, "order", "-i", "amount=500")
    assert code == 0
    assert json.loads(out) == {"size": "big", "doubled": 1000}
    assert "✓ check (condition)" in err
    assert "→ then" in err
    assert "✓ big (return)" in err
    assert "completed: order v1" in err


def test_input_values_are_json_when_they_parse_and_strings_otherwise(capsys, workspace):
    code, out, _ = cli(
        capsys,
        "run",
        workspace,
        "echo",
        "-i", "n=4",
        "-i", "name=Ada",
        "-i", "ok=true",
        "-i", "tags=[1, 2]",
        "-i", 'quoted="4"',
        "-i", "empty=",
        "-i", "eq=a=b",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out) == {
        "n": 4,
        "name": "Ada",
        "ok": True,
        "tags": [1, 2],
        "quoted": "4",
        "empty": "",
        "eq": "a=b",
    }


def test_inputs_json_is_merged_under_the_i_values(capsys, workspace):
    code, out, _ = cli(
        capsys, "run", workspace, "echo", "--inputs", '{"a": 1, "b": {"c": 2}}', "-i", "a=9"
    )
    assert code == 0
    assert json.loads(out) == {"a": 9, "b": {"c": 2}}


def test_json_prints_the_whole_result_object(capsys, workspace):
    code, out, _ = cli(capsys, "run", workspace, "order", "-i", "amount=5", "--json", "-q")
    assert code == 0
    result = json.loads(out)
    assert result["status"] == "COMPLETED"
    assert result["output"] == {"size": "small"}
    assert result["error"] is None
    assert result["has_errors"] is False
    assert result["flow"] == "order"
    assert result["version"] == 1
    assert result["inputs"] == {"amount": 5}
    assert result["user_id"] is None
    assert len(result["run_id"]) > 8
    assert [entry["block"] for entry in result["trace"]] == ["check", "small"]


def test_quiet_lists_no_blocks(capsys, workspace):
    code, out, err = cli(capsys, "run", workspace, "order", "-i", "amount=5", "-q")
    assert code == 0
    assert json.loads(out) == {"size": "small"}
    assert "check (condition)" not in err


def test_user_and_roles_reach_the_run(capsys, workspace):
    write(
        workspace,
        "whoami.yaml",
        """\
        flow: whoami
        status: LIVE
        start: done
        blocks:
          done: {type: return, value: {user: "=run.user_id", roles: "=run.roles"}}
        """,
    )
    code, out, _ = cli(
        capsys, "run", workspace, "whoami", "--user", "ada", "--role", "Ops", "--role", "Dev"
    )
    assert code == 0
    assert json.loads(out) == {"user": "ada", "roles": ["Dev", "Ops"]}


def test_a_failed_run_exits_1_with_code_message_and_block(capsys, workspace):
    code, out, err = cli(capsys, "run", workspace, "broken", "-i", "sku=A-1")
    assert code == 1
    assert out == ""
    assert "failed: broken v1" in err
    assert "error: [out_of_stock] A-1 is gone (block 'go')" in err
    assert "✗ go (fail)" in err


def test_a_failed_run_with_json_still_prints_the_result(capsys, workspace):
    code, out, _ = cli(capsys, "run", workspace, "broken", "-i", "sku=X", "--json")
    assert code == 1
    result = json.loads(out)
    assert result["status"] == "FAILED"
    assert result["error"] == {"code": "out_of_stock", "message": "X is gone", "block": "go"}


def test_a_handled_error_completes_and_says_so(capsys, tmp_path):
    root = tmp_path / "ws"
    write(
        root,
        "safe.yaml",
        """\
        flow: safe
        status: LIVE
        start: go
        blocks:
          go: {type: fail, code: nope, on_error: recover}
          recover: {type: return, value: "=vars.error.code"}
        """,
    )
    code, out, err = cli(capsys, "run", root, "safe")
    assert code == 0
    assert json.loads(out) == "nope"
    assert "completed with handled errors (has_errors)" in err


def test_invalid_inputs_exit_2_with_every_problem(capsys, workspace):
    code, out, err = cli(capsys, "run", workspace, "order", "-i", "amount=-3")
    assert code == 2
    assert out == ""
    assert "invalid inputs for flow 'order'" in err
    assert "amount: -3 is less than the minimum of 0" in err


def test_missing_required_input_exits_2(capsys, workspace):
    code, _, err = cli(capsys, "run", workspace, "order")
    assert code == 2
    assert "'amount' is a required property" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-i", "novalue"], "-i expects KEY=VALUE, got 'novalue'"),
        (["-i", "=3"], "-i expects KEY=VALUE"),
        (["--inputs", "{not json"], "--inputs is not valid JSON"),
        (["--inputs", "[1, 2]"], "--inputs must be a JSON object, not list"),
        (["--inputs", '{"x": NaN}'], "--inputs is not valid JSON"),
        (["--role", "AuthenticatedUser"], "system roles are computed, not supplied"),
        (["--user", "ada", "--role", "NonAuthenticatedUser"], "NonAuthenticatedUser"),
        (["--store", "ftp://nowhere"], "--store: unsupported store URL"),
    ],
)
def test_bad_command_line_input_exits_2_with_a_message(capsys, workspace, argv, message):
    code, out, err = cli(capsys, "run", workspace, "echo", *argv)
    assert code == 2
    assert out == ""
    assert message in err
    assert "Traceback" not in err


def test_a_system_role_gets_a_hint(capsys, workspace):
    _, _, err = cli(capsys, "run", workspace, "echo", "--role", "AuthenticatedUser")
    assert "AuthenticatedUser comes with --user" in err


def test_an_invalid_document_of_the_flow_exits_2_with_its_problems(capsys, workspace):
    write(
        workspace,
        "shaky.yaml",
        """\
        flow: shaky
        status: LIVE
        start: a
        blocks:
          a: {type: set, values: {x: 1}, next: ghost}
        """,
    )
    code, out, err = cli(capsys, "run", workspace, "shaky")
    assert code == 2
    assert out == ""
    assert "flow 'shaky' has an invalid document" in err
    assert "block 'a': field 'next': unknown target block 'ghost'" in err


def test_an_unparseable_document_named_like_the_flow_exits_2(capsys, workspace):
    write(workspace, "torn.yaml", "flow: torn\nstart: a\nblocks:\n  a: {type: set\n")
    code, _, err = cli(capsys, "run", workspace, "torn", "--user", "ada")
    assert code == 2
    assert "flow 'torn' has an invalid document" in err
    assert "does not parse at line" in err


def test_problems_of_other_documents_are_warnings_and_the_run_goes_on(capsys, workspace):
    write(workspace, "other.yaml", "flow: other\nstart: a\nblocks: {a: {type: teleport}}\n")
    code, out, err = cli(capsys, "run", workspace, "echo", "-i", "x=1")
    assert code == 0
    assert json.loads(out) == {"x": 1}
    assert "warning:" in err
    assert "other.yaml: block 'a': field 'type': unknown block type 'teleport'" in err


def test_a_denied_activation_exits_3_with_the_reason(capsys, workspace):
    write(workspace, "permissions.yaml", "flows: {order: {roles: {Contractor: deny}}}\n")
    code, out, err = cli(
        capsys, "run", workspace, "order", "-i", "amount=5", "--user", "c", "--role", "Contractor"
    )
    assert code == 3
    assert out == ""
    assert "activation denied: flow 'order' (layer flow.role)" in err
    assert "denied by flow-level role Contractor" in err


def test_denial_comes_before_existence_so_nothing_leaks(capsys, workspace):
    write(workspace, "permissions.yaml", "app: {roles: {NonAuthenticatedUser: deny}}\n")
    code, _, err = cli(capsys, "run", workspace, "no-such-flow")
    assert code == 3
    assert "NonAuthenticatedUser" in err
    assert "does not exist" not in err


def test_an_unknown_flow_exits_4(capsys, workspace):
    code, out, err = cli(capsys, "run", workspace, "no-such-flow")
    assert code == 4
    assert out == ""
    assert "error: flow 'no-such-flow' does not exist" in err


def test_a_flow_that_is_not_live_exits_4(capsys, workspace):
    write(workspace, "draft.yaml", "flow: draft\nstart: a\nblocks: {a: {type: return}}\n")
    code, _, err = cli(capsys, "run", workspace, "draft")
    assert code == 4
    assert "flow 'draft' version 1 is READY, not LIVE" in err


def test_a_paused_flow_exits_4(capsys, workspace):
    write(
        workspace,
        "held.yaml",
        "flow: held\nstatus: PAUSED\nstart: a\nblocks: {a: {type: return}}\n",
    )
    code, _, err = cli(capsys, "run", workspace, "held")
    assert code == 4
    assert "is PAUSED, not LIVE" in err


def test_a_workspace_that_is_not_a_directory_exits_2(capsys, tmp_path):
    code, _, err = cli(capsys, "run", tmp_path / "nowhere", "echo")
    assert code == 2
    assert "not a workspace directory" in err


def test_a_bad_permissions_file_exits_2(capsys, workspace):
    write(workspace, "permissions.yaml", "default: sometimes\n")
    code, _, err = cli(capsys, "run", workspace, "echo")
    assert code == 2
    assert "unknown permission 'sometimes'" in err


def test_flow_log_warnings_reach_stderr_and_v_shows_gate_decisions(capsys, workspace):
    write(
        workspace,
        "noisy.yaml",
        """\
        flow: noisy
        status: LIVE
        start: say
        blocks:
          say: {type: log, level: warning, message: disk almost full}
        """,
    )
    code, _, err = cli(capsys, "run", workspace, "noisy")
    assert code == 0
    assert "disk almost full" in err
    assert "activation.allowed" not in err
    code, _, err = cli(capsys, "run", workspace, "noisy", "-v")
    assert code == 0
    assert "activation.allowed" in err
    assert "via=cli" in err


def test_main_leaves_the_structlog_configuration_as_it_found_it(capsys, workspace):
    before = structlog.get_config()
    cli(capsys, "run", workspace, "echo")
    assert structlog.get_config() == before


def test_a_long_run_lists_the_first_blocks_then_a_count(capsys, tmp_path):
    root = tmp_path / "ws"
    write(
        root,
        "spin.yaml",
        """\
        flow: spin
        status: LIVE
        start: loop
        blocks:
          loop: {type: repeat, while: "iteration <= 150", body: tick, next: done}
          tick: {type: set, values: {n: "=iteration"}}
          done: {type: return, value: "=vars.n"}
        """,
    )
    code, out, err = cli(capsys, "run", root, "spin")
    assert code == 0
    assert json.loads(out) == 150
    assert err.count("✓ tick (set)") == 100
    assert "52 more blocks ran" in err


# -- usage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [[], ["launch"], ["serve", "ws"], ["worker"], ["token", "add"], ["run", "ws"], ["check"]],
)
def test_bad_usage_exits_2(capsys, argv):
    code, _, err = cli(capsys, *argv)
    assert code == 2
    assert "usage:" in err


def test_help_exits_0(capsys):
    code, out, _ = cli(capsys, "run", "--help")
    assert code == 0
    assert "KEY=VALUE" in out
    assert "Exit codes" in out


# -- validate ------------------------------------------------------------------------------


def test_validate_a_good_file(capsys, workspace):
    code, out, _ = cli(capsys, "validate", workspace / "order.yaml")
    assert code == 0
    assert out.strip() == f"ok: {workspace / 'order.yaml'} (order)"


def test_validate_a_directory_checks_every_document_and_the_permissions(capsys, workspace):
    write(workspace, "permissions.yaml", "flows: {order: {users: {ada: grant}}}\n")
    code, out, _ = cli(capsys, "validate", workspace)
    assert code == 0
    assert out.splitlines() == [
        f"ok: {workspace / 'broken.yaml'} (broken)",
        f"ok: {workspace / 'echo.yaml'} (echo)",
        f"ok: {workspace / 'order.yaml'} (order)",
        f"ok: {workspace / 'permissions.yaml'} (permissions)",
    ]


def test_validate_reports_every_problem_at_once_with_file_and_block(capsys, tmp_path):
    bad = write(
        tmp_path,
        "bad.yaml",
        """\
        flow: bad
        start: a
        colour: blue
        blocks:
          a: {type: set, values: {x: 1}, next: b, speed: 3}
          b: {type: teleport}
          c: {type: condition, if: "1 +", then: a}
          d: {type: return, next: nowhere}
        """,
    )
    code, out, _ = cli(capsys, "validate", bad)
    assert code == 2
    lines = out.splitlines()
    assert f"{bad}:3:1: field 'colour': unknown field" in lines
    assert f"{bad}:5:43: block 'a': field 'speed': unknown field" in lines
    assert any(
        line.startswith(f"{bad}:6:13: block 'b': field 'type': unknown block type")
        for line in lines
    )
    assert any(
        line.startswith(f"{bad}:7:28: block 'c': field 'if': expression '1 +'") for line in lines
    )
    assert f"{bad}:8:27: block 'd': field 'next': unknown target block 'nowhere'" in lines
    assert f"{bad}:8:3: block 'd': unreachable from the start block" in lines
    assert not any(line.startswith("ok:") for line in lines)


def test_validate_reports_unknown_targets_of_a_block_with_other_problems(capsys, tmp_path):
    bad = write(
        tmp_path,
        "bad.yaml",
        """\
        flow: bad
        start: a
        blocks:
          a: {type: condition, if: "1 +", then: zzz, else: b}
          b: {type: set, values: 3, next: nowhere}
        """,
    )
    code, out, _ = cli(capsys, "validate", bad)
    assert code == 2
    assert f"{bad}:4:41: block 'a': field 'then': unknown target block 'zzz'" in out
    assert f"{bad}:5:35: block 'b': field 'next': unknown target block 'nowhere'" in out


def test_validate_a_truncated_yaml_file(capsys, tmp_path):
    torn = tmp_path / "torn.yaml"
    torn.write_text("flow: torn\nstart: a\nblocks:\n  a: {type: set, values: {x: 1}\n")
    code, out, _ = cli(capsys, "validate", torn)
    assert code == 2
    assert out.startswith(f"{torn}:5:1: the document does not parse at line 5")


def test_validate_goes_on_after_a_bad_file_and_still_reports_the_good_ones(capsys, workspace):
    write(workspace, "nameless.yaml", "start: a\nblocks: {a: {type: return}}\n")
    code, out, _ = cli(capsys, "validate", workspace, workspace / "echo.yaml")
    assert code == 2
    assert f"{workspace / 'nameless.yaml'}:1:1: field 'flow': 'flow' must be a name" in out
    assert out.count(f"ok: {workspace / 'echo.yaml'} (echo)") == 2


def test_validate_reports_permissions_problems_and_missing_paths(capsys, workspace):
    write(
        workspace, "permissions.yaml", "default: maybe\napp: {users: {AuthenticatedUser: deny}}\n"
    )
    code, out, _ = cli(capsys, "validate", workspace, workspace / "gone.yaml")
    assert code == 2
    assert f"{workspace / 'permissions.yaml'}: field 'default': unknown permission 'maybe'" in out
    assert "AuthenticatedUser is a system role, not a user" in out
    assert f"{workspace / 'gone.yaml'}: no such file or directory" in out


def test_validate_warns_about_permissions_for_unknown_flows(capsys, workspace):
    write(workspace, "permissions.yaml", "flows: {ghost: {users: {ada: grant}}}\n")
    code, _, err = cli(capsys, "validate", workspace)
    assert code == 0
    assert "settings for unknown flow 'ghost'" in err


def test_validate_skips_files_that_are_not_documents(capsys, workspace):
    notes = write(workspace, "README.md", "# not: [a flow\n")
    code, out, _ = cli(capsys, "validate", notes, workspace / "echo.yaml")
    assert code == 0
    assert out.splitlines() == [
        f"skipped: {notes} (flow documents are .yaml, .yml or .json files)",
        f"ok: {workspace / 'echo.yaml'} (echo)",
    ]


def test_validate_an_empty_directory_is_a_problem(capsys, tmp_path):
    code, out, _ = cli(capsys, "validate", tmp_path)
    assert code == 2
    assert "no flow documents" in out


# -- check ---------------------------------------------------------------------------------


def chain_workspace(root: Path, permissions: str | None = None) -> Path:
    write(
        root,
        "checkout.yaml",
        """\
        flow: checkout
        status: LIVE
        start: pay
        blocks:
          pay: {type: call_flow, flow: payment, next: note}
          note: {type: call_flow, flow: notify, identity: anonymous}
        """,
    )
    write(
        root,
        "payment.yaml",
        """\
        flow: payment
        status: LIVE
        callable_by: [checkout]
        start: fraud
        blocks:
          fraud: {type: call_flow, flow: fraud-check}
        """,
    )
    write(
        root,
        "fraud-check.yaml",
        "flow: fraud-check\nstatus: LIVE\nstart: a\nblocks: {a: {type: return, value: true}}\n",
    )
    write(
        root,
        "notify.yaml",
        "flow: notify\nstatus: LIVE\nstart: a\nblocks: {a: {type: return}}\n",
    )
    if permissions is not None:
        write(root, "permissions.yaml", permissions)
    return root


def test_check_an_allowed_chain_exits_0_with_one_line_per_flow(capsys, tmp_path):
    root = chain_workspace(
        tmp_path / "ws", "flows: {payment: {roles: {Cashier: grant, AuthenticatedUser: deny}}}\n"
    )
    code, out, _ = cli(capsys, "check", root, "checkout", "--user", "ann", "--role", "Cashier")
    assert code == 0
    assert out.splitlines() == [
        "ALLOW checkout (layer default): granted by default",
        "ALLOW payment (layer flow.role) via checkout: granted by flow-level role Cashier",
        "ALLOW notify (layer default) as anonymous via checkout: granted by default",
        "ALLOW fraud-check (layer default) via checkout → payment: granted by default",
    ]


def test_check_a_denied_part_exits_3_and_marks_what_lies_beyond(capsys, tmp_path):
    root = chain_workspace(
        tmp_path / "ws", "flows: {payment: {roles: {Cashier: grant, AuthenticatedUser: deny}}}\n"
    )
    code, out, _ = cli(capsys, "check", root, "checkout", "--user", "bob")
    assert code == 3
    lines = out.splitlines()
    assert (
        "DENY payment (layer flow.system_role) via checkout: "
        "denied by flow-level system role AuthenticatedUser"
    ) in lines
    assert (
        "ALLOW fraud-check (layer default) via checkout → payment: granted by default "
        "[not reached: payment is refused]"
    ) in lines


def test_check_uses_the_anonymous_identity_for_anonymous_calls(capsys, tmp_path):
    root = chain_workspace(
        tmp_path / "ws", "flows: {notify: {roles: {NonAuthenticatedUser: deny}}}\n"
    )
    code, out, _ = cli(capsys, "check", root, "checkout", "--user", "ann")
    assert code == 3
    assert (
        "DENY notify (layer flow.system_role) as anonymous via checkout: "
        "denied by flow-level system role NonAuthenticatedUser"
    ) in out.splitlines()


def test_check_reports_callable_by_missing_and_not_live_flows(capsys, tmp_path):
    root = chain_workspace(tmp_path / "ws")
    write(
        root,
        "refund.yaml",
        """\
        flow: refund
        status: LIVE
        start: a
        blocks:
          a: {type: call_flow, flow: payment, next: b}
          b: {type: call_flow, flow: ledger, next: c}
          c: {type: call_flow, flow: draft}
        """,
    )
    write(root, "draft.yaml", "flow: draft\nstart: a\nblocks: {a: {type: return}}\n")
    code, out, _ = cli(capsys, "check", root, "refund", "--user", "ann")
    assert code == 3
    lines = out.splitlines()
    assert "DENY payment (callable_by) via refund: callable only by checkout" in lines
    assert "NOT-FOUND ledger via refund: flow 'ledger' does not exist" in lines
    assert "NOT-LIVE draft via refund: version 1 is READY" in lines


def test_check_reports_a_cycle(capsys, tmp_path):
    root = tmp_path / "ws"
    write(
        root,
        "ping.yaml",
        "flow: ping\nstatus: LIVE\nstart: a\nblocks: {a: {type: call_flow, flow: pong}}\n",
    )
    write(
        root,
        "pong.yaml",
        "flow: pong\nstatus: LIVE\nstart: a\nblocks: {a: {type: call_flow, flow: ping}}\n",
    )
    code, out, _ = cli(capsys, "check", root, "ping", "--user", "ann")
    assert code == 0
    assert out.splitlines() == [
        "ALLOW ping (layer default): granted by default",
        "ALLOW pong (layer default) via ping: granted by default",
        "CYCLE ping → pong → ping: recursion, stopped at run time by the depth limit (16)",
    ]


def test_check_an_unknown_root_flow_exits_3(capsys, workspace):
    code, out, _ = cli(capsys, "check", workspace, "nothing", "--user", "ann")
    assert code == 3
    assert out.strip() == "NOT-FOUND nothing: flow 'nothing' does not exist"


def test_check_a_denied_root_flow_exits_3(capsys, workspace):
    write(workspace, "permissions.yaml", "default: deny\n")
    code, out, _ = cli(capsys, "check", workspace, "echo")
    assert code == 3
    assert out.strip() == "DENY echo (layer default): denied by default"


# -- the installed program -------------------------------------------------------------------


def program() -> Path:
    script = Path(sys.executable).with_name("flowwarden")
    assert script.is_file(), "the flowwarden console script is not installed next to Python"
    return script


def test_the_console_script_runs_a_flow(workspace):
    done = subprocess.run(
        [program(), "run", workspace, "order", "-i", "amount=200"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"size": "big", "doubled": 400}
    assert "✓ big (return)" in done.stderr


def test_the_console_script_exits_with_the_run_and_gate_codes(workspace):
    failed = subprocess.run(
        [program(), "run", workspace, "broken", "-i", "sku=Z"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 1
    assert "[out_of_stock] Z is gone" in failed.stderr
    missing = subprocess.run(
        [program(), "run", workspace, "ghost"], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 4
    assert "Traceback" not in missing.stderr


def test_the_module_validates_and_exits_2_on_problems(tmp_path):
    torn = tmp_path / "torn.yaml"
    torn.write_text("flow: torn\nblocks: [\n")
    done = subprocess.run(
        [sys.executable, "-m", "engine._cli.main", "validate", torn],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout.startswith(f"{torn}:3:1: the document does not parse")
    assert "Traceback" not in done.stderr
