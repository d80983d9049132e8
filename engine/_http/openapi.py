"""The OpenAPI 3.1 document served at ``/openapi.json``, written out by hand.

Kept next to the endpoints it describes and checked against the running server by the
test suite (every documented status, every response body against its schema).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["openapi_document"]

_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
_SETTING = {"type": "string", "enum": ["GRANT", "DENY", "INHERIT"]}
_LAYERS = [
    "flow.user",
    "flow.role",
    "flow.system_role",
    "app.user",
    "app.role",
    "app.system_role",
    "default",
    "error",
]


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Any], *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": [name for name in properties if name not in optional],
    }


_SCHEMAS: dict[str, Any] = {
    "Error": {
        **_obj(
            {
                "error": {"type": "string", "description": "a stable error code"},
                "message": {"type": "string"},
                "problems": {"type": "array", "items": {"type": "string"}},
            },
            optional=("problems",),
        ),
    },
    "RunId": _obj({"run_id": {"type": "string"}}),
    "RunError": {
        **_obj(
            {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "block": _NULLABLE_STRING,
                "child_run_id": {"type": "string"},
            },
            optional=("child_run_id",),
        ),
    },
    "TraceEntry": _obj(
        {
            "block": {"type": "string"},
            "type": {"type": "string"},
            "start": {"type": "number"},
            "duration": {"type": "number"},
            "outcome": {"type": "string"},
        }
    ),
    "RunResult": _obj(
        {
            "run_id": {"type": "string"},
            "flow": {"type": "string"},
            "version": {"type": "integer"},
            "status": {
                "type": "string",
                "enum": ["QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"],
            },
            "output": {"description": "any JSON value"},
            "error": {"oneOf": [{"type": "null"}, _ref("RunError")]},
            "has_errors": {"type": "boolean"},
            "user_id": _NULLABLE_STRING,
            "roles": {"type": "array", "items": {"type": "string"}},
            "parent_run_id": _NULLABLE_STRING,
            "root_run_id": _NULLABLE_STRING,
            "depth": {"type": "integer", "minimum": 0},
            "inputs": {"description": "the run's initial data"},
            "trace": {"type": "array", "items": _ref("TraceEntry")},
            "log": {"type": "array", "items": {"type": "object"}},
            "created_at": {"type": "number"},
            "finished_at": {"type": ["number", "null"]},
        }
    ),
    "Version": _obj(
        {
            "flow": {"type": "string"},
            "version": {"type": "integer", "minimum": 1},
            "status": {"type": "string", "enum": ["INVALID", "READY", "LIVE", "PAUSED"]},
            "problems": {"type": "array", "items": {"type": "string"}},
            "problem_details": {"type": "array", "items": _ref("Problem")},
            "created_at": {"type": "number"},
        }
    ),
    "Problem": _obj(
        {
            "message": {"type": "string"},
            "block": _NULLABLE_STRING,
            "field": _NULLABLE_STRING,
            "line": _NULLABLE_INT,
            "column": _NULLABLE_INT,
        }
    ),
    "Flow": _obj(
        {
            "flow": {"type": "string"},
            "description": _NULLABLE_STRING,
            "live_version": _NULLABLE_INT,
            "paused_version": _NULLABLE_INT,
            "versions": {"type": "array", "items": _ref("Version")},
        }
    ),
    "FlowDetail": {
        "allOf": [_ref("Flow")],
        "type": "object",
        "properties": {
            "live": {"oneOf": [{"type": "null"}, _ref("LiveVersion")]},
            "graph": {**_NULLABLE_STRING, "description": "the LIVE graph, Mermaid"},
        },
        "required": ["live", "graph"],
    },
    "LiveVersion": _obj(
        {
            "version": {"type": "integer"},
            "document": {"type": "object"},
            "inputs": {"type": ["object", "null"]},
        }
    ),
    "FlowList": _obj({"flows": {"type": "array", "items": _ref("Flow")}}),
    "Decision": _obj(
        {
            "allowed": {"type": "boolean"},
            "layer": {"type": "string", "enum": _LAYERS},
            "subject": {
                "oneOf": [
                    {"type": "null"},
                    _obj(
                        {
                            "kind": {"type": "string", "enum": ["user", "role"]},
                            "name": {"type": "string"},
                        }
                    ),
                ]
            },
            "reason": {"type": "string"},
        }
    ),
    "PermissionRow": _obj(
        {
            "name": {"type": "string"},
            "permission": _SETTING,
            "system": {"type": "boolean", "description": "roles only: a system role"},
            "app_permission": {**_SETTING, "description": "flow views only: the app-wide one"},
            "effective": _ref("Decision"),
        },
        optional=("system", "app_permission"),
    ),
    "PermissionView": _obj(
        {
            "flow": _NULLABLE_STRING,
            "default": {"type": "string", "enum": ["GRANT", "DENY"]},
            "exists": {"type": "boolean", "description": "flow views only"},
            "role_member": {
                "type": "string",
                "description": "the user id role rows are resolved for (has no setting)",
            },
            "users": {"type": "array", "items": _ref("PermissionRow")},
            "roles": {"type": "array", "items": _ref("PermissionRow")},
            "identity": _obj(
                {
                    "user_id": _NULLABLE_STRING,
                    "roles": {"type": "array", "items": {"type": "string"}},
                    "effective": _ref("Decision"),
                }
            ),
        },
        optional=("exists", "identity"),
    ),
    "PermissionBody": {
        **_obj({"permission": {"type": "string", "enum": ["GRANT", "DENY"]}}),
        "additionalProperties": False,
    },
}

_ERRORS = {
    "401": "unauthenticated: a bad or malformed bearer token",
    "403": "activation_denied, or forbidden (the management API without the admin role)",
    "404": "flow_not_found, run_not_found or not_found",
    "409": "flow_not_live, invalid_transition or version_invalid",
    "413": "payload_too_large: a body over 1,048,576 bytes",
    "422": "invalid_inputs, invalid_timeout, invalid_flow, invalid_body or invalid_query",
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _responses(ok: dict[str, Any], *errors: str) -> dict[str, Any]:
    responses = dict(ok)
    for status in errors:
        responses[status] = _json(_ref("Error"), _ERRORS[status])
    return responses


def _path(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_FLOW = _path("flow", "the flow's name")
_ANONYMOUS_OK: list[dict[str, list[str]]] = [{}, {"bearer": []}]
_ADMIN: list[dict[str, list[str]]] = [{"bearer": []}]
_ACCEPTED = {
    "202": {
        **_json(_ref("RunId"), "the run was accepted; read it at the Location"),
        "headers": {"Location": {"schema": {"type": "string"}, "required": True}},
    }
}
_INPUTS = {
    "required": False,
    "description": "the initial data (an empty body is {})",
    "content": {"application/json": {"schema": {"type": "object"}}},
}
_SYSTEM_ROLES = ["AuthenticatedUser", "NonAuthenticatedUser"]
_DOCUMENT = {
    "type": "object",
    "properties": {
        "description": {"type": "string"},
        "start": {"type": "string"},
        "blocks": {"type": "object"},
    },
}
_PERMISSION_QUERY = [
    {
        "name": "user",
        "in": "query",
        "required": False,
        "description": "with role: the identity to resolve for (empty: anonymous)",
        "schema": {"type": "string"},
    },
    {
        "name": "role",
        "in": "query",
        "required": False,
        "schema": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "not": {"enum": _SYSTEM_ROLES}},
        },
        "style": "form",
        "explode": True,
    },
]


def _admin_op(summary: str, ok: dict[str, Any], *errors: str, **extra: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": _ADMIN,
        "responses": _responses(ok, "401", "403", *errors),
        **extra,
    }


def _setting_ops(subject: dict[str, Any], where: str, *flow: dict[str, Any]) -> dict[str, Any]:
    view = {"200": _json(_ref("PermissionView"), "the settings after the change")}
    body = {
        "required": True,
        "content": {"application/json": {"schema": _ref("PermissionBody")}},
    }
    return {
        "parameters": [*flow, subject],
        "put": _admin_op(f"Grant or deny {where}", view, "404", "413", "422", requestBody=body),
        "delete": _admin_op(f"Remove the setting {where} (inherit)", view, "404", "422"),
    }


def openapi_document() -> dict[str, Any]:
    """The whole document, as a fresh dict."""
    flow_view = {"200": _json(_ref("Flow"), "the flow, its versions and statuses")}
    detail = {"200": _json(_ref("FlowDetail"), "the flow and its LIVE version")}
    perm_view = {"200": _json(_ref("PermissionView"), "settings and effective decisions")}
    user = _path(
        "user",
        "a user id (not a system role's name)",
        {"type": "string", "maxLength": 256, "not": {"enum": _SYSTEM_ROLES}},
    )
    role = _path(
        "role", "a role name (system roles included)", {"type": "string", "maxLength": 256}
    )
    transitions = {
        f"/api/flows/{{flow}}/{verb}": {
            "parameters": [_FLOW],
            "post": _admin_op(summary, flow_view, "404", "409"),
        }
        for verb, summary in (
            ("pause", "LIVE to PAUSED"),
            ("resume", "PAUSED to LIVE"),
            ("stop", "LIVE or PAUSED to READY, cancelling the version's runs"),
        )
    }
    paths: dict[str, Any] = {
        "/api/flows/{flow}/activate": {
            "parameters": [_FLOW],
            "post": {
                "summary": "Start a run of the flow's LIVE version; answers at once",
                "security": _ANONYMOUS_OK,
                "requestBody": _INPUTS,
                "responses": _responses(_ACCEPTED, "401", "403", "404", "409", "413", "422"),
            },
        },
        "/api/flows/{flow}/activate-blocking": {
            "parameters": [
                _FLOW,
                {
                    "name": "timeout",
                    "in": "query",
                    "required": False,
                    "description": "seconds to wait (default 5, over 300 clamped to 300)",
                    "schema": {"type": "number", "minimum": 0},
                },
            ],
            "post": {
                "summary": "Start a run and wait for its result",
                "security": _ANONYMOUS_OK,
                "requestBody": _INPUTS,
                "responses": _responses(
                    {
                        "200": _json(_ref("RunResult"), "the run ended: its result"),
                        **_ACCEPTED,
                    },
                    "401",
                    "403",
                    "404",
                    "409",
                    "413",
                    "422",
                ),
            },
        },
        "/api/runs/{run_id}": {
            "parameters": [_path("run_id", "the run id an activation answered")],
            "get": {
                "summary": "A run's result, for the run's own user and administrators",
                "security": _ANONYMOUS_OK,
                "responses": _responses(
                    {"200": _json(_ref("RunResult"), "the run, finished or not")}, "401", "404"
                ),
            },
        },
        "/api/flows": {
            "get": _admin_op(
                "Every flow with its versions and statuses",
                {"200": _json(_ref("FlowList"), "the flows")},
            )
        },
        "/api/flows/{flow}": {
            "parameters": [_FLOW],
            "get": _admin_op("One flow, its LIVE document and graph", detail, "404"),
        },
        "/api/flows/{flow}/versions": {
            "parameters": [_FLOW],
            "post": _admin_op(
                "Add a version (READY, or INVALID with its problems)",
                {"201": _json(_ref("Version"), "the new version")},
                "404",
                "413",
                "422",
                requestBody={
                    "required": True,
                    "description": (
                        "the flow document (JSON, or YAML text); its 'flow' may be left "
                        "out, and must be the path's flow when given"
                    ),
                    "content": {"application/json": {"schema": _DOCUMENT}},
                },
            ),
        },
        "/api/flows/{flow}/versions/{version}/start": {
            "parameters": [_FLOW, _path("version", "version number", {"type": "integer"})],
            "post": _admin_op("Make a version LIVE (switchover)", flow_view, "404", "409"),
        },
        **transitions,
        "/api/flows/{flow}/permissions": {
            "parameters": [_FLOW, *_PERMISSION_QUERY],
            "get": _admin_op("The flow's permission settings", perm_view, "404", "422"),
        },
        "/api/flows/{flow}/permissions/users/{user}": _setting_ops(user, "for a user", _FLOW),
        "/api/flows/{flow}/permissions/roles/{role}": _setting_ops(role, "for a role", _FLOW),
        "/api/permissions": {
            "parameters": _PERMISSION_QUERY,
            "get": _admin_op("The app-wide permission settings", perm_view, "422"),
        },
        "/api/permissions/users/{user}": _setting_ops(user, "app-wide for a user"),
        "/api/permissions/roles/{role}": _setting_ops(role, "app-wide for a role"),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flowwarden",
            "version": "0.1.0",
            "description": "The Call Flow API and the management API of a flowwarden server.",
        },
        "paths": paths,
        "components": {
            "schemas": copy.deepcopy(_SCHEMAS),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
