"""Seeing runs over HTTP: the listing, one run, cancelling — and whose runs a caller sees."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LiveServer

from engine._http import models
from engine._http.auth import add_token

FLOWS = {
    "note.yaml": """
flow: note
status: LIVE
start: say
blocks:
  say: {type: log, level: warning, message: disk almost full, next: done}
  done: {type: return, value: {ok: true}}
""",
    "nap.yaml": """
flow: nap
status: LIVE
start: nap
blocks:
  nap: {type: wait, seconds: 60, next: done}
  done: {type: return, value: {slept: true}}
""",
    "tally.yaml": """
flow: tally
status: LIVE
start: one
blocks:
  one: {type: set, values: {n: 1, token: hunter2}, next: two}
  two: {type: set, values: {n: "=vars.n + 1"}, next: done}
  done: {type: return, value: "=vars.n"}
""",
}


# a chain of checkpointed blocks that takes longer than the timeouts asked for below
CHAIN_LENGTH = 120
FLOWS["chain.yaml"] = (
    "flow: chain\nstatus: LIVE\nstart: b0\nblocks:\n"
    + "".join(
        f"  b{i}: {{type: set, values: {{n: {i}}}, next: b{i + 1}}}\n" for i in range(CHAIN_LENGTH)
    )
    + f"  b{CHAIN_LENGTH}: {{type: return, value: '=vars.n'}}\n"
)


class Callers:
    def __init__(self, server: LiveServer, tokens: dict[str, str]) -> None:
        self.server = server
        self.tokens = tokens

    def client(self, who: str | None) -> httpx.Client:
        headers = {} if who is None else {"Authorization": f"Bearer {self.tokens[who]}"}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=30)

    def run(self, who: str, flow: str = "note") -> str:
        with self.client(who) as client:
            response = client.post(f"/api/flows/{flow}/activate-blocking?timeout=10", json={})
        assert response.status_code in (200, 202), response.text
        run_id: str = response.json()["run_id"]
        return run_id

    def runs(self, who: str, **params: Any) -> list[str]:
        with self.client(who) as client:
            response = client.get("/api/runs", params=params)
        assert response.status_code == 200, response.text
        page = models.RunPage.model_validate(response.json())
        return [run.run_id for run in page.runs]


def write_workspace(workspace: Path) -> dict[str, str]:
    """The flows and the three callers' tokens in ``workspace``; the tokens by name."""
    for name, text in FLOWS.items():
        (workspace / name).write_text(text)
    return {
        "root": add_token(workspace / "tokens.yaml", "root", ["Administrator"]),
        "alice": add_token(workspace / "tokens.yaml", "alice", ["Manager"]),
        "bob": add_token(workspace / "tokens.yaml", "bob", []),
    }


@pytest.fixture(scope="module")
def callers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callers]:
    workspace: Path = tmp_path_factory.mktemp("workspace")
    tokens = write_workspace(workspace)
    with LiveServer(workspace) as server:
        yield Callers(server, tokens)


@pytest.fixture(scope="module")
def alice_runs(callers: Callers) -> list[str]:
    """Three runs of alice's, newest first, and one of bob's started between them."""
    first = callers.run("alice")
    callers.run("bob")
    second = callers.run("alice")
    return [callers.run("alice"), second, first]


def error_of(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == code


def test_listing_and_cancelling_need_a_token(callers: Callers, alice_runs: list[str]) -> None:
    with callers.client(None) as anonymous:
        error_of(anonymous.get("/api/runs"), 401, "unauthenticated")
        error_of(anonymous.post(f"/api/runs/{alice_runs[0]}/cancel"), 401, "unauthenticated")
    with httpx.Client(base_url=callers.server.url) as client:
        bad = {"Authorization": "Bearer nope"}
        error_of(client.get("/api/runs", headers=bad), 401, "unauthenticated")


def test_a_caller_sees_only_its_own_runs_newest_first(
    callers: Callers, alice_runs: list[str]
) -> None:
    assert callers.runs("alice", flow="note") == alice_runs
    bobs = callers.runs("bob")
    assert len(bobs) == 1
    assert not set(bobs) & set(alice_runs)


def test_filters_never_show_bob_alices_runs(callers: Callers, alice_runs: list[str]) -> None:
    bobs = callers.runs("bob")
    assert callers.runs("bob", user="alice") == bobs  # forced to himself
    assert callers.runs("bob", flow="note", user="alice", status="COMPLETED") == bobs
    assert callers.runs("bob", root=alice_runs[0]) == []
    assert callers.runs("bob", parent=alice_runs[0]) == []
    with callers.client("bob") as bob:
        for run_id in alice_runs:
            error_of(bob.get(f"/api/runs/{run_id}"), 404, "run_not_found")


def test_administrators_see_every_run_and_may_filter_by_user(
    callers: Callers, alice_runs: list[str]
) -> None:
    everyone = callers.runs("root", flow="note")
    assert set(alice_runs) | set(callers.runs("bob")) <= set(everyone)
    assert callers.runs("root", user="alice", flow="note") == alice_runs


def test_pages_follow_the_cursor_without_repeating_a_run(
    callers: Callers, alice_runs: list[str]
) -> None:
    seen: list[str] = []
    cursor = None
    with callers.client("alice") as alice:
        while True:
            params: dict[str, Any] = {"limit": 1, "flow": "note"}
            if cursor is not None:
                params["cursor"] = cursor
            page = alice.get("/api/runs", params=params).json()
            seen += [run["run_id"] for run in page["runs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            callers.run("bob")  # new runs meanwhile change nothing
    assert seen == alice_runs


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=501",
        "limit=ten",
        "status=DONE",
        "since=yesterday",
        "until=nan",
        "cursor=not-a-cursor",
    ],
)
def test_bad_parameters_are_invalid_query(callers: Callers, query: str) -> None:
    with callers.client("alice") as alice:
        error_of(alice.get(f"/api/runs?{query}"), 422, "invalid_query")


def test_one_run_has_started_at_and_its_log(callers: Callers, alice_runs: list[str]) -> None:
    with callers.client("alice") as alice:
        response = alice.get(f"/api/runs/{alice_runs[0]}")
    assert response.status_code == 200
    result = models.RunResult.model_validate(response.json())
    assert result.started_at is not None and result.started_at >= result.created_at
    [entry] = result.log
    assert (entry.level, entry.message, entry.block) == ("warning", "disk almost full", "say")


def test_cancel_of_a_waiting_run_answers_its_cancelled_summary(callers: Callers) -> None:
    with callers.client("alice") as alice:
        run_id = alice.post("/api/flows/nap/activate", json={}).json()["run_id"]
        deadline = time.monotonic() + 10
        while alice.get(f"/api/runs/{run_id}").json()["status"] != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with callers.client("bob") as bob:
            error_of(bob.post(f"/api/runs/{run_id}/cancel"), 404, "run_not_found")
        started = time.monotonic()
        response = alice.post(f"/api/runs/{run_id}/cancel")
        assert time.monotonic() - started < 10
        assert response.status_code == 200, response.text
        summary = models.RunSummary.model_validate(response.json())
        assert (summary.run_id, summary.status, summary.user_id) == (run_id, "CANCELLED", "alice")
        assert alice.get(f"/api/runs/{run_id}").json()["status"] == "CANCELLED"
        again = alice.post(f"/api/runs/{run_id}/cancel")
        assert again.json()["status"] == "CANCELLED"


def test_cancel_of_a_finished_run_answers_its_final_status(
    callers: Callers, alice_runs: list[str]
) -> None:
    with callers.client("root") as root:  # an administrator may cancel anyone's run
        response = root.post(f"/api/runs/{alice_runs[0]}/cancel")
        assert response.status_code == 200
        assert response.json()["status"] == "COMPLETED"
        error_of(root.post("/api/runs/no-such-run/cancel"), 404, "run_not_found")


@pytest.fixture(scope="module")
def durable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callers]:
    """The same callers of a server whose engine keeps its runs in a SQLite file."""
    workspace: Path = tmp_path_factory.mktemp("durable")
    tokens = write_workspace(workspace)
    with LiveServer(workspace, store=f"sqlite:///{workspace / 'runs.db'}") as server:
        yield Callers(server, tokens)


def test_steps_need_a_token_and_are_the_runs_own(durable: Callers) -> None:
    callers = durable
    run_id = callers.run("alice", "tally")
    with callers.client(None) as anonymous:
        error_of(anonymous.get(f"/api/runs/{run_id}/steps"), 401, "unauthenticated")
    with callers.client("bob") as bob:  # someone else's run is as good as none
        error_of(bob.get(f"/api/runs/{run_id}/steps"), 404, "run_not_found")
        error_of(bob.get("/api/runs/no-such-run/steps"), 404, "run_not_found")
    for who in ("alice", "root"):
        with callers.client(who) as client:
            response = client.get(f"/api/runs/{run_id}/steps")
        assert response.status_code == 200, response.text
        steps = models.RunSteps.model_validate(response.json())
        assert (steps.run_id, steps.kept) == (run_id, True)
        assert [(s.trace_index, s.block, s.kept, s.variables) for s in steps.steps] == [
            (0, "one", True, {"n": 1, "token": "hunter2"}),
            (1, "two", True, {"n": 2, "token": "hunter2"}),
        ]
        assert steps.limits.steps == 1000


def test_steps_of_a_run_bob_started_are_his_to_see(durable: Callers) -> None:
    run_id = durable.run("bob", "tally")
    with durable.client("bob") as bob:
        response = bob.get(f"/api/runs/{run_id}/steps")
    assert response.status_code == 200, response.text
    assert [step["block"] for step in response.json()["steps"]] == ["one", "two"]
    with durable.client("alice") as alice:
        error_of(alice.get(f"/api/runs/{run_id}/steps"), 404, "run_not_found")


def test_a_server_on_the_memory_store_says_it_keeps_no_steps(callers: Callers) -> None:
    run_id = callers.run("alice", "tally")
    with callers.client("alice") as alice:
        response = alice.get(f"/api/runs/{run_id}/steps")
    assert response.status_code == 200, response.text
    assert (response.json()["kept"], response.json()["steps"]) == (False, [])


def finished_run(callers: Callers, who: str, run_id: str) -> dict[str, Any]:
    """The run as its owner reads it once it has ended."""
    deadline = time.monotonic() + 30
    with callers.client(who) as client:
        while True:
            run: dict[str, Any] = client.get(f"/api/runs/{run_id}").json()
            if run["status"] not in ("QUEUED", "RUNNING") or time.monotonic() > deadline:
                return run
            time.sleep(0.02)


def test_a_durable_run_past_its_callers_timeout_is_answered_202_and_ends(
    durable: Callers,
) -> None:
    with durable.client("alice") as alice:
        response = alice.post("/api/flows/chain/activate-blocking?timeout=0.001", json={})
    assert response.status_code == 202, response.text
    run = finished_run(durable, "alice", response.json()["run_id"])
    assert (run["status"], run["output"]) == ("COMPLETED", CHAIN_LENGTH - 1)
    assert [entry["block"] for entry in run["trace"]] == [f"b{i}" for i in range(CHAIN_LENGTH + 1)]


def test_a_durable_run_whose_caller_hangs_up_still_ends(durable: Callers) -> None:
    before = set(durable.runs("alice", flow="chain"))
    host, port = durable.server.url.removeprefix("http://").split(":")
    request = (
        "POST /api/flows/chain/activate-blocking HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer {durable.tokens['alice']}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )
    with socket.create_connection((host, int(port))) as caller:
        caller.sendall(request.encode())
    # gone before any answer: the run it started goes on all the same
    deadline = time.monotonic() + 30
    while not (started := set(durable.runs("alice", flow="chain")) - before):
        assert time.monotonic() < deadline, "the run was never started"
        time.sleep(0.02)
    (run_id,) = started
    run = finished_run(durable, "alice", run_id)
    assert (run["status"], run["output"]) == ("COMPLETED", CHAIN_LENGTH - 1)
    assert len(run["trace"]) == CHAIN_LENGTH + 1
