"""``/metrics`` (read back with prometheus-client's own parser) and ``/healthz``."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine import Engine, Identity
from engine._http.app import create_app
from engine._http.auth import TokenFileAuthenticator, add_token
from engine.testing import deploy
from permissions import Role

ADD = {
    "sum": {"type": "set", "values": {"s": "=inputs.a + inputs.b"}, "next": "done"},
    "done": {"type": "return", "value": "=vars.s"},
}
INPUTS = {"type": "object", "required": ["a", "b"], "properties": {"a": {"type": "integer"}}}
SLOW = {"nap": {"type": "wait", "seconds": 5}}
JSON_BODY = {"Content-Type": "application/json"}


class Callers:
    def __init__(self, path: Path) -> None:
        self.admin = {"Authorization": f"Bearer {add_token(path, 'root', ['Administrator'])}"}
        self.alice = {"Authorization": f"Bearer {add_token(path, 'alice', ['Manager'])}"}


@pytest.fixture
def callers(tmp_path: Path) -> Callers:
    return Callers(tmp_path / "tokens.yaml")


async def client_for(engine: Engine, tmp_path: Path) -> httpx.AsyncClient:
    app = create_app(engine, TokenFileAuthenticator(tmp_path / "tokens.yaml"))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
async def client(
    engine: Engine, tmp_path: Path, callers: Callers
) -> AsyncIterator[httpx.AsyncClient]:
    await deploy(engine, ADD, flow="add", inputs=INPUTS)
    await deploy(engine, ADD, flow="guarded")
    await deploy(engine, ADD, flow="paused")
    await engine.pause("paused")
    await deploy(engine, SLOW, flow="slow")
    await engine.permissions.deny(Role("NonAuthenticatedUser"), flow="guarded")
    async with await client_for(engine, tmp_path) as http:
        yield http


async def scrape(
    client: httpx.AsyncClient, callers: Callers
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics``: (name, labels) → value."""
    response = await client.get("/metrics", headers=callers.admin)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def activations(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float],
) -> dict[tuple[str, str, str], float]:
    found = {}
    for (name, labels), value in samples.items():
        if name == "flowwarden_activations_total":
            label = dict(labels)
            found[(label["flow"], label["via"], label["outcome"])] = value
    return found


async def test_metrics_need_an_administrators_token(
    client: httpx.AsyncClient, callers: Callers
) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"
    response = await client.get("/metrics", headers=callers.alice)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    response = await client.get("/metrics", headers=callers.admin)
    assert response.status_code == 200


async def test_activation_counters_move_with_each_decision(
    engine: Engine, client: httpx.AsyncClient, callers: Callers
) -> None:
    assert activations(await scrape(client, callers)) == {}
    for _ in range(2):
        response = await client.post(
            "/api/flows/add/activate-blocking",
            json={"a": 1, "b": 2},
            headers={**callers.alice, **JSON_BODY},
        )
        assert response.status_code == 200, response.text
    assert (await client.post("/api/flows/guarded/activate")).status_code == 403
    assert (
        await client.post("/api/flows/nothing-here/activate", headers=callers.alice)
    ).status_code == 404
    assert (
        await client.post("/api/flows/paused/activate", headers=callers.alice)
    ).status_code == 409
    response = await client.post(
        "/api/flows/add/activate", json={"a": "x"}, headers={**callers.alice, **JSON_BODY}
    )
    assert response.status_code == 422
    await engine.call_flow("add", {"a": 3, "b": 4}, identity=Identity(user_id="ada"))

    samples = await scrape(client, callers)
    assert activations(samples) == {
        ("add", "http", "allowed"): 2,
        ("guarded", "http", "denied"): 1,  # a known flow keeps its name
        ("unknown", "http", "not_found"): 1,
        ("paused", "http", "not_live"): 1,
        ("add", "http", "invalid_inputs"): 1,
        ("add", "api", "allowed"): 1,
    }
    finished = {("flow", "add"), ("status", "COMPLETED")}
    assert samples[("flowwarden_runs_finished_total", frozenset(finished))] == 3
    assert samples[("flowwarden_run_duration_seconds_count", frozenset({("flow", "add")}))] == 3
    assert (
        samples[
            ("flowwarden_run_duration_seconds_bucket", frozenset({("flow", "add"), ("le", "+Inf")}))
        ]
        == 3
    )
    assert samples[("flowwarden_run_duration_seconds_sum", frozenset({("flow", "add")}))] > 0
    assert samples[("flowwarden_runs_in_flight", frozenset())] == 0


async def test_a_denied_caller_cannot_make_up_flow_labels(
    engine: Engine, client: httpx.AsyncClient, callers: Callers
) -> None:
    await engine.permissions.deny(Role("NonAuthenticatedUser"))  # app-wide
    for name in ("a1", "b2", "c3"):
        assert (await client.post(f"/api/flows/{name}/activate")).status_code == 403
    assert (await client.post("/api/flows/add/activate")).status_code == 403
    counted = activations(await scrape(client, callers))
    assert counted == {("unknown", "http", "denied"): 3, ("add", "http", "denied"): 1}


async def test_runs_in_flight_are_a_gauge(
    engine: Engine, client: httpx.AsyncClient, callers: Callers
) -> None:
    run_id = await engine.call_flow("slow", wait=False)
    await anyio.sleep(0.05)
    assert (await scrape(client, callers))[("flowwarden_runs_in_flight", frozenset())] == 1
    await engine.cancel(run_id)
    await engine.wait_for(run_id)
    samples = await scrape(client, callers)
    assert samples[("flowwarden_runs_in_flight", frozenset())] == 0
    cancelled = frozenset({("flow", "slow"), ("status", "CANCELLED")})
    assert samples[("flowwarden_runs_finished_total", cancelled)] == 1


async def test_each_engine_has_metrics_of_its_own(
    client: httpx.AsyncClient, callers: Callers, tmp_path: Path
) -> None:
    async with Engine() as other:
        await deploy(other, ADD, flow="add", inputs=INPUTS)
        await other.call_flow("add", {"a": 1, "b": 1})
        async with await client_for(other, tmp_path) as second:
            assert activations(await scrape(second, callers)) == {("add", "api", "allowed"): 1}
    assert activations(await scrape(client, callers)) == {}


async def test_healthz_answers_ok_without_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_healthz_answers_503_when_the_store_does_not(
    tmp_path: Path, callers: Callers
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    engine = Engine(f"sqlite:///{folder / 'runs.db'}")
    async with engine, await client_for(engine, tmp_path) as client:
        assert (await client.get("/healthz")).status_code == 200
        await engine.store.close()  # the next call opens the file again ...
        shutil.rmtree(folder)  # ... which is gone with its folder
        response = await client.get("/healthz")
        assert response.status_code == 503
        assert response.json() == {"status": "unavailable"}
