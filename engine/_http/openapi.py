"""The OpenAPI 3.1 document served at ``/openapi.json``, generated from the models.

:data:`OPERATIONS` is the table of every operation — method, path, summary, who may
call it, its query and body models, and its answers by status. :func:`openapi_document`
turns it into the document, with the JSON Schemas pydantic generates for the models
(:mod:`.models`) as its components. A new endpoint is a new row here and, if it sends
or answers a new shape, a new model there; the test suite checks every operation of
the document against a running server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from . import models as m

__all__ = ["OPERATIONS", "Operation", "openapi_document"]

Auth = Literal["optional", "token", "admin"]
"""``optional``: anonymous callers too; ``token``: a bearer token; ``admin``: a bearer
token of an administrator."""

_REF = "#/components/schemas/{model}"

_ERRORS: Mapping[int, str] = {
    401: "unauthenticated: a missing, bad or malformed bearer token",
    403: "activation_denied, or forbidden (an administrator's operation)",
    404: "flow_not_found, run_not_found or not_found",
    409: "flow_not_live, invalid_transition or version_invalid",
    413: "payload_too_large: a body over 1,048,576 bytes",
    422: "invalid_inputs, invalid_timeout, invalid_flow, invalid_body or invalid_query",
}


@dataclass(frozen=True)
class Answer:
    """One documented success: its model and what it means."""

    model: type[BaseModel]
    description: str
    location: bool = False  # a ``Location`` header (accepted runs)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    auth: Auth
    answers: Mapping[int, Answer]
    errors: tuple[int, ...] = ()
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    body_description: str = ""

    @property
    def refusals(self) -> list[int]:
        """Every error status documented: those of its ``auth``, then its own."""
        implied = {"optional": (401,), "token": (401,), "admin": (401, 403)}[self.auth]
        return sorted({*implied, *self.errors})


_PATH_VALUES: Mapping[str, Any] = {
    "flow": m.FlowName,
    "run_id": str,
    "version": int,
    "user": m.UserName,
    "role": m.RoleName,
}
_PATH_WORDS = {
    "run_id": "the run id an activation answered",
    "version": "version number",
}

_ACCEPTED = Answer(m.RunId, "the run was accepted; read it at the Location", location=True)
_FLOW = Answer(m.Flow, "the flow, its versions and statuses")
_VIEW = Answer(m.PermissionView, "settings and effective decisions")
_CHANGED = Answer(m.PermissionView, "the settings after the change")


def _transition(verb: str, summary: str) -> Operation:
    return Operation(
        "post", f"/api/flows/{{flow}}/{verb}", summary, "admin", {200: _FLOW}, (404, 409)
    )


def _settings(prefix: str, where: str) -> list[Operation]:
    operations = []
    for kind, subject in (("users", "user"), ("roles", "role")):
        path = f"{prefix}/{kind}/{{{subject}}}"
        operations += [
            Operation(
                "put",
                path,
                f"Grant or deny {where} for a {subject}",
                "admin",
                {200: _CHANGED},
                (404, 413, 422),
                body=m.PermissionBody,
            ),
            Operation(
                "delete",
                path,
                f"Remove the setting {where} for a {subject} (inherit)",
                "admin",
                {200: _CHANGED},
                (404, 422),
            ),
        ]
    return operations


_ACTIVATION_ERRORS = (403, 404, 409, 413, 422)
_INPUTS = "the initial data (an empty body is {})"

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "post",
        "/api/flows/{flow}/activate",
        "Start a run of the flow's LIVE version; answers at once",
        "optional",
        {202: _ACCEPTED},
        _ACTIVATION_ERRORS,
        body=m.Inputs,
        body_required=False,
        body_description=_INPUTS,
    ),
    Operation(
        "post",
        "/api/flows/{flow}/activate-blocking",
        "Start a run and wait for its result",
        "optional",
        {200: Answer(m.RunResult, "the run ended: its result"), 202: _ACCEPTED},
        _ACTIVATION_ERRORS,
        query=m.BlockingQuery,
        body=m.Inputs,
        body_required=False,
        body_description=_INPUTS,
    ),
    Operation(
        "get",
        "/api/runs/{run_id}",
        "A run's result, for the run's own user and administrators",
        "optional",
        {200: Answer(m.RunResult, "the run, finished or not")},
        (404,),
    ),
    Operation(
        "get",
        "/api/runs",
        "Runs newest first, a page at a time: the caller's own (administrators: all)",
        "token",
        {200: Answer(m.RunPage, "a page of run summaries")},
        (422,),
        query=m.RunsQuery,
    ),
    Operation(
        "get",
        "/api/runs/{run_id}/graph",
        "A run's flow version as Mermaid text, with the blocks it executed marked",
        "token",
        {200: Answer(m.RunGraph, "the graph and the executed and failed blocks")},
        (404,),
    ),
    Operation(
        "get",
        "/api/runs/{run_id}/steps",
        "A run's variables after each block, where the store keeps them (durable stores)",
        "token",
        {200: Answer(m.RunSteps, "the run's steps in trace order")},
        (404,),
    ),
    Operation(
        "post",
        "/api/runs/{run_id}/cancel",
        "Cancel a run (its own user or an administrator) and answer its final summary",
        "token",
        {200: Answer(m.RunSummary, "the run: CANCELLED, or the status it had finished in")},
        (404,),
    ),
    Operation(
        "get",
        "/api/flows",
        "Every flow with its versions and statuses",
        "admin",
        {200: Answer(m.FlowList, "the flows")},
    ),
    Operation(
        "get",
        "/api/flows/{flow}",
        "One flow with its versions, its LIVE version's document and its graph",
        "admin",
        {200: Answer(m.FlowDetail, "the flow and its LIVE version")},
        (404,),
    ),
    Operation(
        "post",
        "/api/flows/{flow}/versions",
        "Add a version (READY, or INVALID with its problems)",
        "admin",
        {201: Answer(m.Version, "the new version")},
        (404, 413, 422),
        body=m.FlowDocument,
        body_description=(
            "the flow document (JSON, or YAML text); its 'flow' may be left out, and must "
            "be the path's flow when given"
        ),
    ),
    Operation(
        "post",
        "/api/flows/{flow}/versions/{version}/start",
        "Make a version LIVE (switchover)",
        "admin",
        {200: _FLOW},
        (404, 409),
    ),
    _transition("pause", "LIVE to PAUSED"),
    _transition("resume", "PAUSED to LIVE"),
    _transition("stop", "LIVE or PAUSED to READY, cancelling the version's runs"),
    Operation(
        "get",
        "/api/flows/{flow}/permissions",
        "The flow's permission settings",
        "admin",
        {200: _VIEW},
        (404, 422),
        query=m.IdentityQuery,
    ),
    *_settings("/api/flows/{flow}/permissions", "on the flow"),
    Operation(
        "get",
        "/api/flows/{flow}/check",
        "Whether an identity may run the flow and every flow it reaches (flowwarden check)",
        "admin",
        {200: Answer(m.ChainReport, "the gate's answer for each link of the chain")},
        (422,),
        query=m.IdentityQuery,
    ),
    Operation(
        "get",
        "/api/permissions",
        "The app-wide permission settings",
        "admin",
        {200: _VIEW},
        (422,),
        query=m.IdentityQuery,
    ),
    *_settings("/api/permissions", "app-wide"),
)


def openapi_document(operations: tuple[Operation, ...] = OPERATIONS) -> dict[str, Any]:
    """The whole document, as a fresh dict."""
    used = {
        (model, mode)
        for op in operations
        for model, mode in (
            *((answer.model, "serialization") for answer in op.answers.values()),
            *(((op.body, "validation"),) if op.body is not None else ()),
            *(((m.Error, "serialization"),) if op.refusals else ()),
        )
    }
    keys, schemas = models_json_schema(
        sorted(used, key=lambda pair: (pair[0].__name__, pair[1])), ref_template=_REF
    )
    refs: dict[Any, dict[str, Any]] = dict(keys)
    paths: dict[str, Any] = {}
    for op in operations:
        item = paths.setdefault(op.path, {"parameters": _path_parameters(op.path)})
        item[op.method] = _operation(op, refs)
    for item in paths.values():
        if not item["parameters"]:
            del item["parameters"]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flowwarden",
            "version": "0.1.0",
            "description": "The Call Flow API and the management API of a flowwarden server.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(op: Operation, refs: Mapping[Any, dict[str, Any]]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, answer in sorted(op.answers.items()):
        responses[str(status)] = _json(refs[(answer.model, "serialization")], answer.description)
        if answer.location:
            responses[str(status)]["headers"] = {
                "Location": {"schema": {"type": "string"}, "required": True}
            }
    for status in op.refusals:
        responses[str(status)] = _json(refs[(m.Error, "serialization")], _ERRORS[status])
    document: dict[str, Any] = {
        "summary": op.summary,
        "security": [{}, {"bearer": []}] if op.auth == "optional" else [{"bearer": []}],
    }
    if op.query is not None:
        document["parameters"] = _query_parameters(op.query)
    if op.body is not None:
        request: dict[str, Any] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
        if op.body_description:
            request["description"] = op.body_description
        document["requestBody"] = request
    document["responses"] = responses
    return document


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _path_parameters(path: str) -> list[dict[str, Any]]:
    parameters = []
    for name in re.findall(r"{(\w+)}", path):
        schema = TypeAdapter(_PATH_VALUES[name]).json_schema()
        description = schema.pop("description", None) or _PATH_WORDS.get(name, name)
        parameter = {"name": name, "in": "path", "required": True, "description": description}
        parameters.append({**parameter, "schema": schema})
    return parameters


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One ``in: query`` parameter per field; a list is a repeated parameter."""
    schema = model.model_json_schema(ref_template=_REF)
    defs = schema.get("$defs", {})
    parameters = []
    for name, prop in schema["properties"].items():
        prop = _inline(dict(prop), defs)
        description = prop.pop("description", None)
        prop.pop("title", None)
        prop.pop("default", None)
        prop = _not_null(prop)
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": False}
        if description:
            parameter["description"] = description
        parameter["schema"] = prop
        if prop.get("type") == "array":
            parameter.update(style="form", explode=True)
        parameters.append(parameter)
    return parameters


def _inline(schema: dict[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    """A query value's schema without references (enums named in ``$defs``)."""
    if "$ref" in schema:
        target = dict(defs[schema.pop("$ref").rsplit("/", 1)[-1]])
        target.pop("title", None)
        return {**target, **schema}
    if "items" in schema:
        schema["items"] = _inline(dict(schema["items"]), defs)
    return schema


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``X | None`` as a query value is X: an absent parameter is the ``None``."""
    options = schema.get("anyOf")
    if options is None:
        return schema
    rest = [option for option in options if option != {"type": "null"}]
    if len(rest) != 1:
        return schema
    return {**{k: v for k, v in schema.items() if k != "anyOf"}, **rest[0]}
