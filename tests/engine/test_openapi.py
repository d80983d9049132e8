"""The OpenAPI document, checked by schemathesis against a real server.

Every operation of ``/openapi.json`` gets a bounded number of generated requests, sent
with an administrator token, so the management API is exercised as well as the Call
Flow API: no 500s, every status documented, every body matching its schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pydantic
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from live_server import LiveServer
from schemathesis.schemas import BaseSchema
from starlette.applications import Starlette
from starlette.routing import Mount

from engine import Engine
from engine._http import models
from engine._http.app import create_app
from engine._http.auth import add_token
from engine._http.openapi import openapi_document
from permissions import ANONYMOUS, Identity

FLOW = """
flow: add
description: Adds two integers in three blocks.
status: LIVE
inputs:
  type: object
  properties: {a: {type: integer}, b: {type: integer}}
start: first
blocks:
  first: {type: set, values: {a: "=inputs.a"}, next: second}
  second: {type: set, values: {sum: "=vars.a + vars.a"}, next: done}
  done: {type: return, value: {sum: "=vars.sum"}}
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    workspace: Path = tmp_path_factory.mktemp("workspace")
    (workspace / "add.yaml").write_text(FLOW)
    token = add_token(workspace / "tokens.yaml", "root", ["Administrator"])
    with LiveServer(workspace) as server:
        yield server, token


@pytest.fixture(scope="module")
def api_schema(live: tuple[LiveServer, str]) -> BaseSchema:
    server, _ = live
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


OPERATIONS = [
    (method.upper(), path)
    for path, item in openapi_document()["paths"].items()
    for method in item
    if method != "parameters"
]


def real_cursor(live: tuple[LiveServer, str]) -> str:
    """The next_cursor of a real first page of one run (two runs are started for it)."""
    server, token = live
    auth = {"Authorization": f"Bearer {token}"}
    for _ in range(2):
        httpx.post(f"{server.url}/api/flows/add/activate", json={"a": 1}, headers=auth)
    page = httpx.get(f"{server.url}/api/runs", params={"limit": 1}, headers=auth).json()
    cursor = page["next_cursor"]
    assert isinstance(cursor, str)
    return cursor


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_each_operation_conforms_to_the_served_document(
    api_schema: BaseSchema, live: tuple[LiveServer, str], method: str, path: str
) -> None:
    _, token = live
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=20,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def conforms(case: schemathesis.Case) -> None:
        if case.query and "cursor" in case.query:
            case.query["cursor"] = real_cursor(live)  # an opaque cursor cannot be made up
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, timeout=30)

    conforms()


def test_the_document_served_is_the_one_written(live: tuple[LiveServer, str]) -> None:
    server, _ = live
    served = httpx.get(f"{server.url}/openapi.json").json()
    assert served == openapi_document()
    documented = {
        (path, method.upper())
        for path, item in served["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert ("/api/flows/{flow}/activate", "POST") in documented
    assert ("/api/flows/{flow}/activate-blocking", "POST") in documented
    assert ("/api/runs/{run_id}", "GET") in documented
    assert len(documented) == len(OPERATIONS) == 25


def test_the_documents_schemas_are_the_models(live: tuple[LiveServer, str]) -> None:
    server, token = live
    served = httpx.get(f"{server.url}/openapi.json").json()
    schemas = served["components"]["schemas"]
    for name in ("RunResult", "RunPage", "FlowList", "PermissionView", "Error"):
        model = getattr(models, name)
        ref = "#/components/schemas/{model}"
        own = model.model_json_schema(ref_template=ref, mode="serialization")
        assert schemas[name] == {key: value for key, value in own.items() if key != "$defs"}
        for inner, schema in own.get("$defs", {}).items():
            assert schemas[inner] == schema
    # an answer the model accepts is one the document's schema accepts, and the reverse
    auth = {"Authorization": f"Bearer {token}"}
    answer = httpx.post(
        f"{server.url}/api/flows/add/activate-blocking", json={"a": 2}, headers=auth
    )
    run = answer.json()
    assert models.RunResult.model_validate(run).model_dump(mode="json") == run
    validator = jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/RunResult", "components": served["components"]}
    )
    validator.validate(run)
    wrong = {**run, "status": "DONE"}
    assert not validator.is_valid(wrong)
    with pytest.raises(pydantic.ValidationError):
        models.RunResult.model_validate(wrong)


async def test_the_explorer_mounted_under_a_prefix_loads_everything_from_it() -> None:
    class Nobody:
        def authenticate(self, token: str | None) -> Identity:
            return ANONYMOUS

    outer = Starlette(routes=[Mount("/flowwarden", create_app(Engine(), Nobody()))])
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        text = (await client.get("/flowwarden/docs")).text
        assert 'data-url="/flowwarden/openapi.json"' in text
        for path in ("/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js", "/docs/explorer.js"):
            assert f'"/flowwarden{path}"' in text
            assert (await client.get(f"/flowwarden{path}")).status_code == 200
