"""``GET /api/flows/{flow}/check``: the analysis of ``flowwarden check`` over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from live_server import LiveServer

from engine._http import models
from engine._http.auth import add_token

FLOWS = {
    "checkout.yaml": """
flow: checkout
status: LIVE
start: pay
blocks:
  pay: {type: call_flow, flow: payment, next: gone}
  gone: {type: call_flow, flow: ledger}
""",
    "payment.yaml": """
flow: payment
status: LIVE
start: done
blocks:
  done: {type: return, value: 1}
""",
}
PERMISSIONS = """
default: grant
flows:
  payment:
    users: {mallory: deny}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    workspace: Path = tmp_path_factory.mktemp("workspace")
    for name, text in FLOWS.items():
        (workspace / name).write_text(text)
    (workspace / "permissions.yaml").write_text(PERMISSIONS)
    tokens = {
        "root": add_token(workspace / "tokens.yaml", "root", ["Administrator"]),
        "alice": add_token(workspace / "tokens.yaml", "alice", []),
    }
    with LiveServer(workspace) as running:
        yield running, tokens


def check(
    server: tuple[LiveServer, dict[str, str]], query: str, who: str = "root"
) -> httpx.Response:
    live, tokens = server
    headers = {"Authorization": f"Bearer {tokens[who]}"}
    return httpx.get(f"{live.url}/api/flows/checkout/check?{query}", headers=headers)


def test_check_gives_each_link_of_the_chain_with_its_problem(server) -> None:
    response = check(server, "user=alice")
    assert response.status_code == 200
    report = models.ChainReport.model_validate(response.json())
    assert report.allowed is False  # ledger does not exist
    links = {(entry.flow, entry.problem): entry for entry in report.chain}
    assert links[("checkout", None)].allowed is True
    assert links[("payment", None)].called_from == "checkout"
    assert links[("ledger", "not_found")].allowed is False


def test_check_resolves_for_the_identity_asked(server) -> None:
    report = check(server, "user=mallory&role=Clerk").json()
    [payment] = [entry for entry in report["chain"] if entry["flow"] == "payment"]
    assert (payment["allowed"], payment["layer"]) == (False, "flow.user")


def test_check_is_for_administrators(server) -> None:
    live, _ = server
    assert check(server, "user=alice", who="alice").status_code == 403
    anonymous = httpx.get(f"{live.url}/api/flows/checkout/check")
    assert anonymous.status_code == 403  # like every administrator's endpoint
    refused = check(server, "role=AuthenticatedUser")
    assert refused.status_code == 422
    assert refused.json()["error"] == "invalid_query"
