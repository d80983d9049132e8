"""Seeing runs from the command line: ``runs``, ``runs prune``, ``show``, ``cancel``,
``graph``, the workspace's store, environment variables, JSON logs and ``check --json``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from cli_support import cli, write

from engine import Engine
from engine._cli.main import _parser

ROOT = Path(__file__).resolve().parents[2]

ECHO = """\
    flow: echo
    status: LIVE
    start: say
    blocks:
      say: {type: log, level: warning, message: "='echo ' + string(inputs.n)", next: done}
      done: {type: return, value: "=inputs"}
"""
PARENT = """\
    flow: parent
    status: LIVE
    start: call
    blocks:
      call: {type: call_flow, flow: echo, inputs: {n: 1}, next: done}
      done: {type: fail, code: out_of_luck, message: no luck}
"""
WAIT = """\
    flow: slow
    status: LIVE
    start: nap
    blocks:
      nap: {type: wait, seconds: 30}
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    write(root, "echo.yaml", ECHO)
    write(root, "parent.yaml", PARENT)
    write(root, "slow.yaml", WAIT)
    return root


def run_json(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> dict[str, Any]:
    code, out, err = cli(capsys, "run", *argv, "--json", "--quiet")
    assert code in (0, 1), err
    result: dict[str, Any] = json.loads(out)
    return result


def listing(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> dict[str, Any]:
    code, out, err = cli(capsys, "runs", *argv, "--json")
    assert code == 0, err
    page: dict[str, Any] = json.loads(out)
    return page


# -- runs ----------------------------------------------------------------------------------


def test_run_keeps_its_run_in_the_workspace_store_and_runs_lists_it(capsys, workspace):
    first = run_json(capsys, workspace, "echo", "-i", "n=1", "--user", "ann")
    second = run_json(capsys, workspace, "echo", "-i", "n=2")
    assert (workspace / ".flowwarden.db").is_file()
    page = listing(capsys, workspace)
    assert [run["run_id"] for run in page["runs"]] == [second["run_id"], first["run_id"]]
    assert page["next_cursor"] is None
    assert page["runs"][1]["user_id"] == "ann"
    assert page["runs"][1]["status"] == "COMPLETED"

    code, out, _ = cli(capsys, "runs", workspace)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["RUN", "FLOW", "STATUS", "USER", "STARTED", "DURATION", "ERROR"]
    assert lines[1].split()[:4] == [second["run_id"], "echo", "v1", "COMPLETED"]
    assert lines[2].split()[:5] == [first["run_id"], "echo", "v1", "COMPLETED", "ann"]


def test_a_memory_store_keeps_nothing(capsys, workspace):
    run_json(capsys, workspace, "echo", "-i", "n=1", "--store", "memory:")
    assert not (workspace / ".flowwarden.db").exists()
    assert listing(capsys, workspace)["runs"] == []
    assert not (workspace / ".flowwarden.db").exists()  # listing creates no store
    code, out, _ = cli(capsys, "runs", workspace)
    assert (code, out.strip()) == (0, "no runs")


def test_runs_filters_by_flow_status_and_user_and_pages(capsys, workspace):
    parent = run_json(capsys, workspace, "parent", "--user", "bob")
    lone = run_json(capsys, workspace, "echo", "-i", "n=3", "--user", "ann")
    everything = listing(capsys, workspace)["runs"]
    assert len(everything) == 3
    (child,) = [run for run in everything if run["parent_run_id"] == parent["run_id"]]
    assert child["root_run_id"] == parent["run_id"] and child["depth"] == 1

    def ids(*argv: str) -> list[str]:
        return [run["run_id"] for run in listing(capsys, workspace, *argv)["runs"]]

    assert ids("--flow", "echo") == [lone["run_id"], child["run_id"]]
    assert ids("--status", "FAILED") == [parent["run_id"]]
    assert ids("--status", "failed", "--status", "COMPLETED") == [r["run_id"] for r in everything]
    assert ids("--user", "bob") == [child["run_id"], parent["run_id"]]
    first = listing(capsys, workspace, "--limit", "2")
    assert [r["run_id"] for r in first["runs"]] == [r["run_id"] for r in everything[:2]]
    rest = listing(capsys, workspace, "--limit", "2", "--cursor", first["next_cursor"])
    assert [r["run_id"] for r in rest["runs"]] == [everything[2]["run_id"]]
    assert rest["next_cursor"] is None

    code, out, _ = cli(capsys, "runs", workspace, "--status", "FAILED")
    assert code == 0 and "out_of_luck" in out and "bob" in out
    code, _, err = cli(capsys, "runs", workspace, "--cursor", "nonsense")
    assert code == 2 and "cursor" in err


def test_runs_prune_removes_finished_runs_older_than_the_days_given(capsys, workspace):
    run_json(capsys, workspace, "echo", "-i", "n=1")
    run_json(capsys, workspace, "echo", "-i", "n=2")
    code, out, _ = cli(capsys, "runs", "prune", workspace, "--older-than", "1")
    assert (code, out.strip()) == (0, "removed 0 finished runs")
    code, out, _ = cli(capsys, "runs", "prune", workspace, "--older-than", "0")
    assert (code, out.strip()) == (0, "removed 2 finished runs")
    assert listing(capsys, workspace)["runs"] == []
    code, _, err = cli(capsys, "runs", "prune", workspace)
    assert code == 2 and "--older-than" in err


# -- show ----------------------------------------------------------------------------------


def test_show_json_is_the_run_s_result_with_start_and_log(capsys, workspace):
    result = run_json(capsys, workspace, "echo", "-i", "n=7", "--user", "ann")
    code, out, _ = cli(capsys, "show", workspace, result["run_id"], "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown == result
    assert shown["started_at"] >= shown["created_at"]
    (entry,) = shown["log"]
    assert {k: entry[k] for k in ("level", "message", "block")} == {
        "level": "warning",
        "message": "echo 7",
        "block": "say",
    }
    assert isinstance(entry["time"], float)


def test_show_prints_the_run_its_timeline_log_and_child_tree(capsys, workspace):
    parent = run_json(capsys, workspace, "parent", "--user", "bob", "--role", "Clerk")
    code, out, _ = cli(capsys, "show", workspace, parent["run_id"])
    assert code == 0
    assert out.splitlines()[0].split() == [
        "run",
        parent["run_id"],
        "parent",
        "v1",
        "FAILED",
    ]
    assert re.search(r"user\s+bob\s+roles: Clerk", out)
    assert re.search(r"inputs\s+\{\}", out)
    assert re.search(r"error\s+\[out_of_luck\] no luck in block done", out)
    assert re.search(r"call\s+call_flow\s+[\d.]+ ms\s+ok\s+█", out)
    assert re.search(r"done\s+fail\s+[\d.]+ ms\s+out_of_luck", out)
    child = listing(capsys, workspace, "--flow", "echo")["runs"][0]
    assert f"child runs of {parent['run_id']}" in out
    assert re.search(rf"└── {child['run_id']}\s+echo v1\s+COMPLETED", out)

    code, out, _ = cli(capsys, "show", workspace, child["run_id"])
    assert re.search(r"parent\s+" + parent["run_id"], out)
    assert re.search(r"warning\s+say: echo 1", out)
    assert re.search(r'output\s+\{"n": 1\}', out)


def test_show_an_unknown_run_exits_4(capsys, workspace):
    code, _, err = cli(capsys, "show", workspace, "nope")
    assert code == 4 and "no run 'nope'" in err
    run_json(capsys, workspace, "echo", "-i", "n=1")
    code, _, err = cli(capsys, "show", workspace, "nope", "--json")
    assert code == 4


# -- cancel --------------------------------------------------------------------------------


def test_cancel_ends_a_queued_run_and_leaves_a_finished_one(capsys, workspace):
    done = run_json(capsys, workspace, "echo", "-i", "n=1")
    code, out, _ = cli(capsys, "cancel", workspace, done["run_id"])
    assert (code, out.strip()) == (0, "COMPLETED")

    async def enqueue() -> str:
        url = f"sqlite:///{workspace / '.flowwarden.db'}"
        async with Engine(url, execute=False) as engine:
            return await engine.call_flow("slow", wait=False)

    queued = anyio.run(enqueue)
    capsys.readouterr()  # what the engine logged, unconfigured
    code, out, _ = cli(capsys, "cancel", workspace, queued)
    assert (code, out.strip()) == (0, "CANCELLED")
    assert listing(capsys, workspace, "--status", "CANCELLED")["runs"][0]["run_id"] == queued
    code, _, err = cli(capsys, "cancel", workspace, "nope")
    assert code == 4 and "no run 'nope'" in err


# -- graph ---------------------------------------------------------------------------------

APPROVALS = ROOT / "examples" / "approvals"


def approvals(tmp_path: Path) -> Path:
    """A copy of the example workspace, so that its store lands in the test's folder."""
    return Path(shutil.copytree(APPROVALS, tmp_path / "approvals"))


def expected_edges(document: dict[str, Any]) -> set[tuple[str, str, str]]:
    """The edges of a document read straight from its YAML (conditions, next, on_error)."""
    edges = set()
    for block_id, block in document["blocks"].items():
        for field in ("then", "else", "next", "on_error"):
            if field in block:
                edges.add((block_id, block[field], field))
    return edges


def mermaid_parts(
    text: str,
) -> tuple[dict[str, str], set[tuple[str, str, str]], dict[str, set[str]]]:
    """Nodes (id -> label), edges and classes of the flowchart text we emit."""
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    nodes, edges, classes = {}, set(), {}
    for line in lines[1:]:
        line = line.strip()
        if match := re.fullmatch(r'(\w+)\["([^"]*)"\]', line):
            nodes[match[1]] = match[2]
        elif match := re.fullmatch(r'(\w+) (?:-->|-\.->)\|"([^"]*)"\| (\w+)', line):
            edges.add((match[1], match[3], match[2]))
        elif match := re.fullmatch(r"class ([\w,]+) (\w+)", line):
            classes[match[2]] = set(match[1].split(","))
        else:
            assert line.startswith("classDef "), line
    return nodes, edges, classes


def test_graph_of_the_approvals_example_has_a_node_per_block_and_an_edge_per_port(capsys, tmp_path):
    document = yaml.safe_load((APPROVALS / "order-approval.yaml").read_text())
    code, out, _ = cli(capsys, "graph", approvals(tmp_path), "order-approval")
    assert code == 0
    nodes, edges, classes = mermaid_parts(out)
    ids = {node: label.split(" ")[0] for node, label in nodes.items()}
    assert {f"{b} ({spec['type']})" for b, spec in document["blocks"].items()} == set(
        nodes.values()
    )
    assert {(ids[a], ids[b], label) for a, b, label in edges} == expected_edges(document)
    assert classes == {}


def test_graph_marks_what_a_run_executed_and_what_failed(capsys, tmp_path):
    root = approvals(tmp_path)
    denied = run_json(capsys, root, "order-approval", "-i", "amount=5000", "--user", "bob")
    code, out, _ = cli(capsys, "graph", root, "order-approval", "--run", denied["run_id"])
    assert code == 0
    nodes, _, classes = mermaid_parts(out)
    ids = {node: label.split(" ")[0] for node, label in nodes.items()}
    assert {ids[n] for n in classes["executed"]} == {
        "check",
        "announce",
        "escalate",
        "refer",
        "done",
    }
    assert {ids[n] for n in classes["failed"]} == {"escalate"}

    code, dot, _ = cli(
        capsys, "graph", root, "order-approval", "--format", "dot", "--run", denied["run_id"]
    )
    assert code == 0
    assert dot.startswith('digraph "order-approval" {')
    assert re.search(r'"escalate" \[label="escalate \(call_flow\)", class="executed failed"', dot)
    assert re.search(r'"refer" \[label="refer \(set\)", class="executed"', dot)
    assert re.search(r'"approve" \[label="approve \(set\)"\];', dot)
    assert '"escalate" -> "refer" [label="on_error", style=dashed];' in dot
    assert '"check" -> "approve" [label="else"];' in dot
    assert dot.count(" -> ") == len(
        expected_edges(yaml.safe_load((root / "order-approval.yaml").read_text()))
    )
    if shutil.which("dot"):
        svg = subprocess.run(
            ["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True
        )
        assert 'class="node executed failed"' in svg.stdout


def test_graph_draws_routes_bodies_branches_and_ids_mermaid_reserves(capsys, tmp_path):
    root = tmp_path / "ws"
    write(
        root,
        "shapes.yaml",
        """\
        flow: shapes
        status: LIVE
        start: route
        blocks:
          route: {type: router, value: "inputs.kind", routes: {a: fan-out, b: end}, default: loop}
          fan-out: {type: parallel, branches: [end, loop], next: end}
          loop: {type: for_each, items: "[1, 2]", body: step}
          step: {type: set, values: {x: 1}}
          end: {type: return}
        """,
    )
    code, out, _ = cli(capsys, "graph", root, "shapes")
    assert code == 0
    nodes, edges, _ = mermaid_parts(out)
    ids = {node: label.split(" ")[0] for node, label in nodes.items()}
    assert "end" not in nodes  # a Mermaid keyword is never a node id
    assert {(ids[a], ids[b], label) for a, b, label in edges} == {
        ("route", "fan-out", "a"),
        ("route", "end", "b"),
        ("route", "loop", "default"),
        ("fan-out", "end", "branches[0]"),
        ("fan-out", "loop", "branches[1]"),
        ("fan-out", "end", "next"),
        ("loop", "step", "body"),
    }


def test_graph_of_an_unknown_flow_version_or_run_exits_4(capsys, workspace):
    assert cli(capsys, "graph", workspace, "ghost")[0] == 4
    assert cli(capsys, "graph", workspace, "echo", "--version", "9")[0] == 4
    assert cli(capsys, "graph", workspace, "echo", "--run", "nope")[0] == 4


# -- environment, logs, check --json ----------------------------------------------------------


def test_store_host_and_port_options_read_the_environment(capsys, workspace, tmp_path, monkeypatch):
    other = tmp_path / "elsewhere.db"
    monkeypatch.setenv("FLOWWARDEN_STORE", f"sqlite:///{other}")
    result = run_json(capsys, workspace, "echo", "-i", "n=1")
    assert other.is_file() and not (workspace / ".flowwarden.db").exists()
    assert [r["run_id"] for r in listing(capsys, workspace)["runs"]] == [result["run_id"]]
    monkeypatch.setenv("FLOWWARDEN_HOST", "0.0.0.0")
    monkeypatch.setenv("FLOWWARDEN_PORT", "9123")
    args = _parser().parse_args(["serve", str(workspace)])
    assert (args.host, args.port, args.store) == ("0.0.0.0", 9123, f"sqlite:///{other}")
    assert _parser().parse_args(["worker"]).store == f"sqlite:///{other}"
    args = _parser().parse_args(["serve", str(workspace), "--port", "8000"])
    assert args.port == 8000  # the option wins over the environment


def test_log_format_json_gives_one_object_a_line_with_the_run_s_fields(capsys, workspace):
    code, _, err = cli(
        capsys, "run", workspace, "echo", "-i", "n=4", "--quiet", "--log-format", "json"
    )
    assert code == 0
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    (said,) = [e for e in events if e["event"] == "flow.log"]
    assert said["level"] == "warning" and said["message"] == "echo 4"
    assert (said["flow"], said["version"], said["block"]) == ("echo", 1, "say")
    assert len(said["run_id"]) == 24 and "timestamp" in said


def test_log_level_and_format_come_from_the_environment(capsys, workspace, monkeypatch):
    monkeypatch.setenv("FLOWWARDEN_LOG_FORMAT", "json")
    monkeypatch.setenv("FLOWWARDEN_LOG_LEVEL", "info")
    code, _, err = cli(capsys, "run", workspace, "echo", "-i", "n=4", "--quiet")
    assert code == 0
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    allowed = [e for e in events if e["event"] == "activation.allowed"]
    assert allowed and allowed[0]["via"] == "cli"
    code, _, err = cli(
        capsys, "run", workspace, "echo", "-i", "n=4", "--quiet", "--log-level", "error"
    )
    assert "flow.log" not in err


def chain_workspace(root: Path) -> Path:
    write(
        root,
        "checkout.yaml",
        """\
        flow: checkout
        status: LIVE
        start: pay
        blocks:
          pay: {type: call_flow, flow: payment, next: gone}
          gone: {type: call_flow, flow: ledger, next: draft}
          draft: {type: call_flow, flow: draft, next: back}
          back: {type: call_flow, flow: checkout}
        """,
    )
    write(
        root,
        "payment.yaml",
        "flow: payment\nstatus: LIVE\ncallable_by: []\nstart: a\nblocks: {a: {type: return}}\n",
    )
    write(root, "draft.yaml", "flow: draft\nstart: a\nblocks: {a: {type: return}}\n")
    write(root, "permissions.yaml", "flows: {checkout: {users: {ann: grant}}}\n")
    return root


def test_check_json_gives_the_chain_with_a_problem_for_each_refusal(capsys, tmp_path):
    root = chain_workspace(tmp_path / "ws")
    code, out, _ = cli(capsys, "check", root, "checkout", "--user", "ann", "--json")
    assert code == 3
    report = json.loads(out)
    assert report["allowed"] is False
    chain = {(entry["flow"], entry["problem"]): entry for entry in report["chain"]}
    assert set(chain) == {
        ("checkout", None),
        ("payment", "callable_by"),
        ("ledger", "not_found"),
        ("draft", "not_live"),
        ("checkout", "cycle"),
    }
    root_entry = chain[("checkout", None)]
    assert root_entry == {
        "flow": "checkout",
        "called_from": None,
        "allowed": True,
        "layer": "flow.user",
        "reason": "granted by flow-level user ann",
        "problem": None,
    }
    assert chain[("payment", "callable_by")]["called_from"] == "checkout"
    assert chain[("payment", "callable_by")]["allowed"] is False
    assert chain[("ledger", "not_found")]["reason"] == "flow 'ledger' does not exist"
    assert chain[("draft", "not_live")]["reason"] == "version 1 is READY"
    code, lines, _ = cli(capsys, "check", root, "checkout", "--user", "ann")
    assert code == 3
    assert len(lines.splitlines()) == len(report["chain"])  # the same analysis, as lines


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any folder")
def test_a_read_only_workspace_still_runs_without_keeping_the_run(capsys, workspace):
    workspace.chmod(0o555)
    try:
        code, out, err = cli(capsys, "run", workspace, "echo", "-i", "n=1")
        assert code == 0 and json.loads(out) == {"n": 1}
        assert "not writable: the run is not kept" in err
        assert not (workspace / ".flowwarden.db").exists()
    finally:
        workspace.chmod(0o755)
