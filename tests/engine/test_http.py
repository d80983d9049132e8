"""The HTTP Call Flow API and the management API, against a real uvicorn server."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from anyio.from_thread import start_blocking_portal
from live_server import LiveServer
from serve_process import FLOWWARDEN
from serve_process import ServeProcess as Served
from starlette.applications import Starlette
from starlette.routing import Mount

from blocks import BlockRegistry
from engine import Engine
from engine._http.app import create_app
from engine._http.auth import TokenFileAuthenticator, add_token
from engine._model.errors import Unauthenticated
from engine.testing import FakeBlock, capture_logs
from permissions import ANONYMOUS, Identity

LIMIT = 1_048_576

FLOWS = {
    "add.yaml": """
flow: add
description: Adds two integers in three blocks.
status: LIVE
inputs:
  type: object
  required: [a, b]
  properties: {a: {type: integer}, b: {type: integer}}
start: first
blocks:
  first: {type: set, values: {a: "=inputs.a"}, next: second}
  second: {type: set, values: {sum: "=vars.a + inputs.b"}, next: done}
  done: {type: return, value: {sum: "=vars.sum"}}
""",
    "echo.yaml": """
flow: echo
status: LIVE
start: done
blocks:
  done: {type: return, value: {got: "=inputs"}}
""",
    "slow.yaml": """
flow: slow
status: LIVE
start: nap
blocks:
  nap: {type: wait, seconds: 0.4, next: done}
  done: {type: return, value: {slept: true}}
""",
    "guarded.yaml": """
flow: guarded
status: LIVE
start: effect
blocks:
  effect: {type: effect, value: "=run.user_id", next: done}
  done: {type: return, value: {ok: true}}
""",
    "paused.yaml": """
flow: paused
status: PAUSED
start: done
blocks:
  done: {type: return, value: 1}
""",
    "ready.yaml": """
flow: ready
start: done
blocks:
  done: {type: return, value: 1}
""",
}

PERMISSIONS = """
default: grant
flows:
  guarded: {roles: {NonAuthenticatedUser: deny}}
"""


class Tokens:
    def __init__(self, workspace: Path) -> None:
        path = workspace / "tokens.yaml"
        self.admin = add_token(path, "root", ["Administrator"])
        self.alice = add_token(path, "alice", ["Manager"])
        self.bob = add_token(path, "bob", [])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


JSON_BODY = {"Content-Type": "application/json"}  # a non-empty activation body says so


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    for name, text in FLOWS.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "permissions.yaml").write_text(PERMISSIONS)
    return tmp_path


@pytest.fixture
def tokens(workspace: Path) -> Tokens:
    return Tokens(workspace)


@pytest.fixture
def effect() -> FakeBlock:
    return FakeBlock("effect")


@pytest.fixture
def server(workspace: Path, tokens: Tokens, effect: FakeBlock) -> Iterator[LiveServer]:
    with LiveServer(workspace, registry=BlockRegistry([effect.definition])) as running:
        yield running


@pytest.fixture
async def client(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        yield http


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    return body


async def requests_logged(events: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The access-log events, once ``count`` are there (each is written after its answer)."""
    with anyio.fail_after(5):
        while True:  # written by the server's thread: nothing to await but time
            found = [event for event in events if event["event"] == "http.request"]
            if len(found) >= count:
                return found
            await anyio.sleep(0.01)


async def finished(client: httpx.AsyncClient, run_id: str, token: str) -> dict[str, Any]:
    with anyio.fail_after(5):
        while True:
            response = await client.get(f"/api/runs/{run_id}", headers=bearer(token))
            assert response.status_code == 200, response.text
            if response.json()["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                return response.json()  # type: ignore[no-any-return]
            await anyio.sleep(0.02)


# -- the Call Flow API -----------------------------------------------------------------------


async def test_blocking_call_returns_the_output(client: httpx.AsyncClient, tokens: Tokens) -> None:
    response = await client.post(
        "/api/flows/add/activate-blocking", json={"a": 2, "b": 3}, headers=bearer(tokens.alice)
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "COMPLETED"
    assert result["output"] == {"sum": 5}
    assert result["user_id"] == "alice"
    assert result["roles"] == ["Manager"]
    assert [entry["block"] for entry in result["trace"]] == ["first", "second", "done"]


async def test_non_blocking_call_answers_a_run_id_whose_result_is_read_later(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    response = await client.post(
        "/api/flows/add/activate", json={"a": 40, "b": 2}, headers=bearer(tokens.alice)
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    assert response.headers["location"] == f"/api/runs/{run_id}"
    result = await finished(client, run_id, tokens.alice)
    assert result["run_id"] == run_id
    assert result["output"] == {"sum": 42}


async def test_blocking_call_answers_202_when_the_wait_runs_out_and_the_run_goes_on(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    response = await client.post(
        "/api/flows/slow/activate-blocking?timeout=0.05", headers=bearer(tokens.bob)
    )
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    early = await client.get(f"/api/runs/{run_id}", headers=bearer(tokens.bob))
    assert early.json()["status"] == "RUNNING"
    assert (await finished(client, run_id, tokens.bob))["output"] == {"slept": True}


async def test_timeout_over_the_maximum_is_clamped_not_refused(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    response = await client.post(
        "/api/flows/echo/activate-blocking?timeout=100000", headers=bearer(tokens.bob)
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("seconds", ["-1", "abc", "nan", ""])
async def test_a_negative_or_non_numeric_timeout_is_422(
    client: httpx.AsyncClient, tokens: Tokens, seconds: str
) -> None:
    response = await client.post(
        f"/api/flows/echo/activate-blocking?timeout={seconds}", headers=bearer(tokens.bob)
    )
    assert_error(response, 422, "invalid_timeout")


async def test_an_empty_body_is_an_empty_object(client: httpx.AsyncClient, tokens: Tokens) -> None:
    response = await client.post("/api/flows/echo/activate-blocking", headers=bearer(tokens.bob))
    assert response.status_code == 200, response.text
    assert response.json()["output"] == {"got": {}}


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"{not json", b'{"a": "two", "b": 1}'])
async def test_a_body_that_is_not_fitting_json_object_is_422(
    client: httpx.AsyncClient, tokens: Tokens, body: bytes
) -> None:
    response = await client.post(
        "/api/flows/add/activate", content=body, headers={**bearer(tokens.bob), **JSON_BODY}
    )
    assert_error(response, 422, "invalid_inputs")


async def test_unknown_flow_is_404_and_a_flow_that_is_not_live_is_409(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    headers = bearer(tokens.bob)
    assert_error(
        await client.post("/api/flows/nope/activate", headers=headers), 404, "flow_not_found"
    )
    assert_error(
        await client.post("/api/flows/paused/activate", headers=headers), 409, "flow_not_live"
    )
    assert_error(
        await client.post("/api/flows/ready/activate", headers=headers), 409, "flow_not_live"
    )


# -- who may call and who may read -----------------------------------------------------------


async def test_an_anonymous_caller_denied_by_non_authenticated_user_gets_403_and_nothing_runs(
    client: httpx.AsyncClient, tokens: Tokens, effect: FakeBlock
) -> None:
    with capture_logs() as events:
        response = await client.post("/api/flows/guarded/activate-blocking", json={})
        [request] = await requests_logged(events, 1)
    body = assert_error(response, 403, "activation_denied")
    assert "NonAuthenticatedUser" in body["message"]
    assert effect.calls == []
    names = [event["event"] for event in events]
    assert "activation.denied" in names
    assert "activation.allowed" not in names
    assert request["status"] == 403 and request["run_id"] is None
    # the same flow with a token runs, so the check above could have failed
    allowed = await client.post("/api/flows/guarded/activate-blocking", headers=bearer(tokens.bob))
    assert allowed.status_code == 200, allowed.text
    assert [call.value for call in effect.calls] == ["bob"]


async def test_no_authorization_header_is_anonymous(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/flows/echo/activate-blocking")
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] is None


@pytest.mark.parametrize(
    "header",
    [
        "Bearer not-a-token",
        "Bearer",
        "Bearer two words",
        "Basic dXNlcjpwYXNz",
        "not-even-a-scheme",
        "",
    ],
)
async def test_a_bad_token_is_401_never_anonymous(client: httpx.AsyncClient, header: str) -> None:
    # echo is open to anonymous callers: a bad token must still not get through
    response = await client.post(
        "/api/flows/echo/activate", headers={"Authorization": header}, json={}
    )
    assert_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_run_is_not_readable_by_another_identity(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    started = await client.post(
        "/api/flows/add/activate-blocking", json={"a": 1, "b": 1}, headers=bearer(tokens.alice)
    )
    run_id = started.json()["run_id"]
    own = await client.get(f"/api/runs/{run_id}", headers=bearer(tokens.alice))
    assert own.status_code == 200 and own.json()["output"] == {"sum": 2}
    other = await client.get(f"/api/runs/{run_id}", headers=bearer(tokens.bob))
    unknown = await client.get("/api/runs/0123456789abcdef01234567", headers=bearer(tokens.bob))
    assert_error(other, 404, "run_not_found")
    assert_error(unknown, 404, "run_not_found")
    assert other.json()["message"].replace(run_id, "ID") == unknown.json()["message"].replace(
        "0123456789abcdef01234567", "ID"
    )
    assert_error(await client.get(f"/api/runs/{run_id}"), 404, "run_not_found")
    admin = await client.get(f"/api/runs/{run_id}", headers=bearer(tokens.admin))
    assert admin.status_code == 200 and admin.json()["user_id"] == "alice"


async def test_an_anonymous_run_is_readable_by_administrators_only(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    run_id = (await client.post("/api/flows/echo/activate-blocking")).json()["run_id"]
    assert_error(await client.get(f"/api/runs/{run_id}"), 404, "run_not_found")
    assert_error(
        await client.get(f"/api/runs/{run_id}", headers=bearer(tokens.bob)), 404, "run_not_found"
    )
    admin = await client.get(f"/api/runs/{run_id}", headers=bearer(tokens.admin))
    assert admin.status_code == 200


# -- sizes and the order of refusals ---------------------------------------------------------


async def test_a_body_over_the_limit_is_413_by_content_length(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    body = b'{"pad": "' + b"x" * LIMIT + b'"}'
    response = await client.post(
        "/api/flows/echo/activate", content=body, headers=bearer(tokens.bob)
    )
    assert_error(response, 413, "payload_too_large")


async def test_a_streamed_body_over_the_limit_is_413(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"pad": "'
        for _ in range(20):
            yield b"x" * 65_536
        yield b'"}'

    response = await client.post(
        "/api/flows/echo/activate", content=chunks(), headers=bearer(tokens.bob)
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")


async def test_a_body_at_the_limit_is_not_413(client: httpx.AsyncClient, tokens: Tokens) -> None:
    body = b'{"pad": "' + b"x" * (LIMIT - 11) + b'"}'
    assert len(body) == LIMIT
    response = await client.post(
        "/api/flows/echo/activate-blocking",
        content=body,
        headers={**bearer(tokens.bob), **JSON_BODY},
    )
    assert response.status_code == 200, response.text[:200]


async def test_refusals_come_in_order_401_413_then_the_gate(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    huge = b"x" * (LIMIT + 1)
    bad = {"Authorization": "Bearer wrong"}
    assert_error(
        await client.post("/api/flows/guarded/activate", content=huge, headers=bad),
        401,
        "unauthenticated",
    )
    # a denied caller with a huge body: 413 comes before the gate
    assert_error(
        await client.post("/api/flows/guarded/activate", content=huge), 413, "payload_too_large"
    )
    # a denied caller with a broken body learns nothing from it: the body is parsed last
    assert_error(
        await client.post("/api/flows/guarded/activate", content=b"{oops", headers=JSON_BODY),
        403,
        "activation_denied",
    )
    bob = {**bearer(tokens.bob), **JSON_BODY}
    assert_error(
        await client.post("/api/flows/nope/activate", content=b"{oops", headers=bob),
        404,
        "flow_not_found",
    )
    assert_error(
        await client.post("/api/flows/paused/activate", content=b"{oops", headers=bob),
        409,
        "flow_not_live",
    )


async def test_unknown_endpoints_and_methods_answer_json(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/nothing"), 404, "not_found")
    assert_error(await client.delete("/api/flows/add/activate"), 405, "method_not_allowed")


# -- the management API ----------------------------------------------------------------------


async def test_the_management_api_is_for_administrators_only(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    assert_error(await client.get("/api/flows"), 403, "forbidden")
    assert_error(await client.get("/api/flows", headers=bearer(tokens.alice)), 403, "forbidden")
    assert_error(
        await client.put(
            "/api/permissions/roles/Manager",
            json={"permission": "GRANT"},
            headers=bearer(tokens.alice),
        ),
        403,
        "forbidden",
    )
    assert_error(await client.get("/api/flows", headers=bearer("wrong")), 401, "unauthenticated")
    listed = await client.get("/api/flows", headers=bearer(tokens.admin))
    assert listed.status_code == 200
    flows = {flow["flow"]: flow for flow in listed.json()["flows"]}
    assert set(flows) == {"add", "echo", "slow", "guarded", "paused", "ready"}
    assert flows["add"]["live_version"] == 1
    assert flows["paused"]["live_version"] is None and flows["paused"]["paused_version"] == 1
    assert flows["ready"]["versions"][0]["status"] == "READY"


async def test_versions_are_added_and_moved_through_their_lifecycle(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    admin = bearer(tokens.admin)
    document = {
        "flow": "echo",
        "start": "done",
        "blocks": {"done": {"type": "return", "value": "v2"}},
    }
    added = await client.post("/api/flows/echo/versions", json=document, headers=admin)
    assert added.status_code == 201, added.text
    assert added.json()["version"] == 2 and added.json()["status"] == "READY"
    started = await client.post("/api/flows/echo/versions/2/start", headers=admin)
    assert started.json()["live_version"] == 2
    assert [v["status"] for v in started.json()["versions"]] == ["READY", "LIVE"]
    ran = await client.post("/api/flows/echo/activate-blocking", headers=bearer(tokens.bob))
    assert ran.json()["output"] == "v2" and ran.json()["version"] == 2

    paused = await client.post("/api/flows/echo/pause", headers=admin)
    assert paused.json()["paused_version"] == 2
    refused = await client.post("/api/flows/echo/activate", headers=bearer(tokens.bob))
    assert_error(refused, 409, "flow_not_live")
    assert_error(
        await client.post("/api/flows/echo/pause", headers=admin), 409, "invalid_transition"
    )
    assert (await client.post("/api/flows/echo/resume", headers=admin)).json()["live_version"] == 2
    stopped = await client.post("/api/flows/echo/stop", headers=admin)
    assert stopped.json()["live_version"] is None

    yaml_text = b"flow: echo\nstart: x\nblocks:\n  x: {type: nonsense}\n"
    invalid = await client.post("/api/flows/echo/versions", content=yaml_text, headers=admin)
    assert invalid.status_code == 201 and invalid.json()["status"] == "INVALID"
    assert invalid.json()["problems"]
    body = assert_error(
        await client.post("/api/flows/echo/versions/3/start", headers=admin), 409, "version_invalid"
    )
    assert body["problems"]
    assert_error(
        await client.post("/api/flows/echo/versions/9/start", headers=admin), 404, "flow_not_found"
    )
    other = await client.post("/api/flows/add/versions", json=document, headers=admin)
    assert_error(other, 422, "invalid_flow")
    garbage = await client.post("/api/flows/echo/versions", content=b"[1, 2", headers=admin)
    assert_error(garbage, 422, "invalid_flow")
    assert_error(await client.get("/api/flows/nope", headers=admin), 404, "flow_not_found")
    assert_error(await client.post("/api/flows/nope/pause", headers=admin), 404, "flow_not_found")


async def test_a_flow_permission_setting_changes_the_next_activation(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    admin = bearer(tokens.admin)
    path = "/api/flows/add/permissions/roles/Manager"
    denied = await client.put(path, json={"permission": "DENY"}, headers=admin)
    assert denied.status_code == 200, denied.text
    row = next(r for r in denied.json()["roles"] if r["name"] == "Manager")
    assert row["permission"] == "DENY" and row["app_permission"] == "INHERIT"
    assert row["effective"] == {
        "allowed": False,
        "layer": "flow.role",
        "subject": {"kind": "role", "name": "Manager"},
        "reason": "denied by flow-level role Manager",
    }
    body = {"a": 1, "b": 2}
    refused = await client.post("/api/flows/add/activate", json=body, headers=bearer(tokens.alice))
    assert_error(refused, 403, "activation_denied")
    # others are not touched by a Manager setting
    other = await client.post("/api/flows/add/activate", json=body, headers=bearer(tokens.bob))
    assert other.status_code == 202

    inherited = await client.delete(path, headers=admin)
    assert not any(r["name"] == "Manager" for r in inherited.json()["roles"])
    again = await client.post("/api/flows/add/activate", json=body, headers=bearer(tokens.alice))
    assert again.status_code == 202


async def test_app_wide_settings_and_the_decision_for_a_given_identity(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    admin = bearer(tokens.admin)
    set_user = await client.put(
        "/api/permissions/users/alice", json={"permission": "DENY"}, headers=admin
    )
    assert set_user.status_code == 200
    view = set_user.json()
    assert view["flow"] is None and view["default"] == "GRANT"
    alice = next(r for r in view["users"] if r["name"] == "alice")
    assert alice["permission"] == "DENY" and alice["effective"]["layer"] == "app.user"
    system = {r["name"]: r for r in view["roles"] if r["system"]}
    assert set(system) == {"NonAuthenticatedUser", "AuthenticatedUser"}

    flow_view = await client.get(
        "/api/flows/guarded/permissions",
        params={"user": "carol", "role": ["Auditor"]},
        headers=admin,
    )
    assert flow_view.status_code == 200
    assert flow_view.json()["exists"] is True
    anonymous = next(r for r in flow_view.json()["roles"] if r["name"] == "NonAuthenticatedUser")
    assert anonymous["permission"] == "DENY"
    assert (
        anonymous["effective"]["reason"] == "denied by flow-level system role NonAuthenticatedUser"
    )
    alice_here = next(r for r in flow_view.json()["users"] if r["name"] == "alice")
    assert alice_here["permission"] == "INHERIT" and alice_here["app_permission"] == "DENY"
    asked = flow_view.json()["identity"]
    assert asked["user_id"] == "carol" and asked["roles"] == ["Auditor"]
    assert asked["effective"]["allowed"] is True and asked["effective"]["layer"] == "default"

    refused = await client.post("/api/flows/echo/activate", headers=bearer(tokens.alice))
    assert_error(refused, 403, "activation_denied")


@pytest.mark.parametrize(
    ("method", "path", "body", "code"),
    [
        ("PUT", "/api/permissions/roles/Manager", {"permission": "INHERIT"}, "invalid_body"),
        ("PUT", "/api/permissions/roles/Manager", {"permission": "grant"}, "invalid_body"),
        ("PUT", "/api/permissions/roles/Manager", ["GRANT"], "invalid_body"),
        (
            "PUT",
            "/api/permissions/users/AuthenticatedUser",
            {"permission": "GRANT"},
            "invalid_body",
        ),
        ("GET", "/api/permissions?role=NonAuthenticatedUser", None, "invalid_query"),
        (
            "PUT",
            "/api/flows/Not%20A%20Flow/permissions/users/x",
            {"permission": "GRANT"},
            "flow_not_found",
        ),
        ("PUT", "/api/flows/add/permissions/groups/x", {"permission": "GRANT"}, "not_found"),
    ],
)
async def test_bad_management_requests_are_refused(
    client: httpx.AsyncClient, tokens: Tokens, method: str, path: str, body: Any, code: str
) -> None:
    response = await client.request(
        method,
        path,
        content=None if body is None else json.dumps(body).encode(),
        headers=bearer(tokens.admin),
    )
    assert_error(response, 422 if code.startswith("invalid") else 404, code)


# -- pluggable authenticators, internal errors, pages without a token ------------------------


class FixedTokens:
    """An authenticator of its own: one fixed token, and one that breaks."""

    def authenticate(self, token: str | None) -> Identity:
        if token is None:
            return ANONYMOUS
        if token == "let-me-in":
            return Identity(user_id="plugged", roles=["Administrator"])
        if token == "boom":
            raise RuntimeError("secret detail of the authenticator")
        raise Unauthenticated("unknown token")


async def test_a_pluggable_authenticator_decides_who_calls_and_errors_leak_nothing(
    workspace: Path,
) -> None:
    with LiveServer(workspace, authenticator=FixedTokens()) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            ok = await client.post("/api/flows/echo/activate-blocking", headers=bearer("let-me-in"))
            assert ok.json()["user_id"] == "plugged"
            assert (await client.get("/api/flows", headers=bearer("let-me-in"))).status_code == 200
            assert_error(
                await client.get("/api/flows", headers=bearer("nope")), 401, "unauthenticated"
            )
            with capture_logs() as events:
                broken = await client.post("/api/flows/echo/activate", headers=bearer("boom"))
    assert broken.status_code == 500
    assert broken.json() == {"error": "internal", "message": "internal error"}
    assert "secret" not in broken.text and "Traceback" not in broken.text
    assert any(event["event"] == "http.error" for event in events)


async def test_the_openapi_document_and_the_ui_pages_need_no_token(
    client: httpx.AsyncClient,
) -> None:
    document = await client.get("/openapi.json")
    assert document.status_code == 200 and document.json()["openapi"].startswith("3.1")
    for path in ("/", "/sign-in", "/settings", "/flows/add"):
        page = await client.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
    flow_page = (await client.get("/flows/%3Cscript%3Ex")).text
    assert "<script>x" not in flow_page and "&lt;script&gt;x" in flow_page
    assert (await client.get("/static/app.js")).status_code == 200
    assert_error(await client.get("/static/secrets.txt"), 404, "not_found")


# -- access logs -----------------------------------------------------------------------------


async def test_each_request_is_logged_with_its_run_id_and_never_the_token(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    with capture_logs() as events:
        response = await client.post(
            "/api/flows/add/activate", json={"a": 1, "b": 2}, headers=bearer(tokens.alice)
        )
        await client.get("/api/flows", headers=bearer(tokens.admin))
        requests = await requests_logged(events, 2)
    run_id = response.json()["run_id"]
    assert requests[0] | {"duration_ms": 0} == {
        "event": "http.request",
        "log_level": "info",
        "method": "POST",
        "path": "/api/flows/add/activate",
        "status": 202,
        "duration_ms": 0,
        "user": "alice",
        "run_id": run_id,
    }
    assert requests[1]["user"] == "root" and requests[1]["run_id"] is None
    text = repr(events)
    assert tokens.alice not in text and tokens.admin not in text
    assert "Bearer" not in text


async def test_a_blocking_activation_is_logged_with_its_run_id_however_it_ends(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    # "add" ends within the request's own task; "slow" waits in a task of its own
    with capture_logs() as events:
        ended = await client.post(
            "/api/flows/add/activate-blocking", json={"a": 1, "b": 2}, headers=bearer(tokens.alice)
        )
        waited = await client.post("/api/flows/slow/activate-blocking", headers=bearer(tokens.bob))
        requests = await requests_logged(events, 2)
    assert (ended.status_code, ended.json()["output"]) == (200, {"sum": 3})
    assert (waited.status_code, waited.json()["output"]) == (200, {"slept": True})
    assert [(r["path"], r["status"], r["user"], r["run_id"]) for r in requests] == [
        ("/api/flows/add/activate-blocking", 200, "alice", ended.json()["run_id"]),
        ("/api/flows/slow/activate-blocking", 200, "bob", waited.json()["run_id"]),
    ]


def test_flowwarden_serve_logs_json_lines_and_stops_cleanly(
    workspace: Path, tokens: Tokens
) -> None:
    with Served(str(workspace), "--store", "memory:") as server:
        ran = httpx.post(
            f"{server.url}/api/flows/add/activate-blocking",
            json={"a": 3, "b": 4},
            headers=bearer(tokens.alice),
        )
        assert ran.json()["output"] == {"sum": 7}
        assert httpx.get(f"{server.url}/api/flows", headers=bearer("wrong")).status_code == 401
    assert server.process.returncode == 0, server.stderr
    lines = [json.loads(line) for line in server.stderr.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["event"] == "http.request"]
    activation = next(line for line in requests if line["path"].endswith("activate-blocking"))
    assert activation["run_id"] == ran.json()["run_id"] and activation["status"] == 200
    assert any(line["event"] == "http.listening" for line in lines)
    assert tokens.alice not in server.stderr and "wrong" not in server.stderr
    assert server.stdout == ""
    assert not (workspace / ".flowwarden.db").exists()


def test_flowwarden_serve_keeps_runs_in_the_workspace_sqlite_file_by_default(
    workspace: Path, tokens: Tokens
) -> None:
    with Served(str(workspace)) as server:
        ran = httpx.post(
            f"{server.url}/api/flows/add/activate-blocking",
            json={"a": 1, "b": 1},
            headers=bearer(tokens.alice),
        ).json()
    assert server.process.returncode == 0, server.stderr
    assert (workspace / ".flowwarden.db").is_file()
    with Served(str(workspace)) as again:
        kept = httpx.get(f"{again.url}/api/runs/{ran['run_id']}", headers=bearer(tokens.alice))
        assert kept.status_code == 200 and kept.json()["output"] == {"sum": 2}
        other = httpx.get(f"{again.url}/api/runs/{ran['run_id']}", headers=bearer(tokens.bob))
        assert other.status_code == 404


def test_flowwarden_serve_refuses_an_address_in_use(workspace: Path, tokens: Tokens) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = subprocess.run(
            [*FLOWWARDEN, "serve", str(workspace), "--store", "memory:", "--port", port],
            capture_output=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert b"cannot listen" in result.stderr and b"Traceback" not in result.stderr


def test_flowwarden_serve_refuses_a_broken_workspace(tmp_path: Path) -> None:
    (tmp_path / "tokens.yaml").write_text("tokens: [{sha256: short, user: x}]\n")
    result = subprocess.run(
        [*FLOWWARDEN, "serve", str(tmp_path), "--port", "0"], capture_output=True, timeout=60
    )
    assert result.returncode == 2
    assert b"sha256" in result.stderr and b"Traceback" not in result.stderr


def test_an_embedded_app_runs_its_engine_and_follows_its_mount_prefix(tmp_path: Path) -> None:
    async def build() -> Starlette:
        engine = Engine()
        version = await engine.add_version(FLOWS["echo.yaml"])
        await engine.start("echo", version)
        app = create_app(engine, TokenFileAuthenticator(tmp_path / "tokens.yaml"), own_engine=True)
        # a mounted app's lifespan is not run by Starlette: the outer app takes it over
        return Starlette(routes=[Mount("/flowwarden", app)], lifespan=app.router.lifespan_context)

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/flowwarden"
        with start_blocking_portal("asyncio") as portal:
            outer = portal.call(build)
            server = uvicorn.Server(uvicorn.Config(outer, log_config=None, lifespan="on"))
            served = portal.start_task_soon(server.serve, [listener])
            try:
                deadline = time.monotonic() + 10
                while not server.started:
                    assert time.monotonic() < deadline and not served.done()
                    time.sleep(0.01)
                ran = httpx.post(f"{url}/api/flows/echo/activate-blocking", json={"x": 1})
                page = httpx.get(f"{url}/flows/echo")
                accepted = httpx.post(f"{url}/api/flows/echo/activate")
            finally:
                server.should_exit = True
                served.result(10)
    assert ran.status_code == 200 and ran.json()["output"] == {"got": {"x": 1}}
    assert 'href="/flowwarden/static/app.css"' in page.text
    assert accepted.headers["location"].startswith("/flowwarden/api/runs/")


async def test_every_answer_carries_the_security_headers_once(tmp_path: Path) -> None:
    async with Engine() as engine:
        app = create_app(engine, TokenFileAuthenticator(tmp_path / "tokens.yaml"))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for answer in (
                await http.post("/api/flows/nope/activate-blocking", content=b""),
                await http.get("/openapi.json"),
                await http.get("/no/such/endpoint"),
            ):
                for name, value in (
                    ("x-content-type-options", "nosniff"),
                    ("referrer-policy", "no-referrer"),
                    ("x-frame-options", "DENY"),
                ):
                    assert answer.headers.get_list(name) == [value], (answer.url, name)
            # a response that sets one itself keeps its own
            framed = await http.get("/graph-renderer")
            assert framed.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
            assert framed.headers.get_list("x-content-type-options") == ["nosniff"]
