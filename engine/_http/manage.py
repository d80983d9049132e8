"""The management API: flows, versions and their lifecycle, permission settings.

Administrators only (the configured admin role; others get 403 ``forbidden``). The
permission views list every subject that has a setting anywhere, plus the two system
roles, each with its setting at this level and the decision the gate would take now
for a representative identity:

* a user row: that user holding no custom roles;
* a custom role row: an authenticated user holding just that role, whose user id has
  no setting anywhere (``role-member``, with a numeric suffix if that id is taken);
* ``AuthenticatedUser``: that same user without roles; ``NonAuthenticatedUser``: the
  anonymous identity.

``?user=ID&role=R&role=R2`` adds the decision for that exact identity.
"""

from __future__ import annotations

from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from blocks import is_flow_name
from permissions import (
    ANONYMOUS,
    AUTHENTICATED,
    NON_AUTHENTICATED,
    SYSTEM_ROLES,
    Decision,
    Identity,
    Permission,
    Role,
    Settings,
    User,
    resolve,
)

from .._model.document import parse_document
from .._model.errors import FlowNotFound, InvalidFlow, Problem, suggestion
from .._model.limits import load_yaml, loads_json
from .._model.types import VersionInfo, VersionStatus
from .._runtime.graph import to_mermaid
from . import models as m
from .request import Api, ApiError, JSONResponse

__all__ = ["management_routes"]

_MAX_VERSION = 2**31 - 1  # a version number beyond it names no version
_ANY_FLOW = "-"  # not a valid flow name, so it never has flow-level settings


def management_routes(api: Api) -> list[Route]:
    """The routes of the management API, bound to ``api``."""
    views = _Views(api)
    flow = "/api/flows/{flow}"
    return [
        Route("/api/flows", views.list_flows, methods=["GET"]),
        Route(flow, views.get_flow, methods=["GET"]),
        Route(f"{flow}/versions", views.add_version, methods=["POST"]),
        Route(f"{flow}/versions/{{version:int}}/start", views.start, methods=["POST"]),
        Route(f"{flow}/pause", views.transition, methods=["POST"], name="pause"),
        Route(f"{flow}/resume", views.transition, methods=["POST"], name="resume"),
        Route(f"{flow}/stop", views.transition, methods=["POST"], name="stop"),
        Route(f"{flow}/permissions", views.permissions, methods=["GET"]),
        Route(f"{flow}/permissions/{{kind}}/{{name}}", views.setting, methods=["PUT", "DELETE"]),
        Route("/api/permissions", views.permissions, methods=["GET"]),
        Route("/api/permissions/{kind}/{name}", views.setting, methods=["PUT", "DELETE"]),
    ]


class _Views:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.engine = api.engine

    async def list_flows(self, request: Request) -> Response:
        self.api.admin(request)
        flows = [
            _flow_model(flow, await self.engine.list_versions(flow))
            for flow in await self.engine.list_flows()
        ]
        return JSONResponse(m.body(m.FlowList(flows=flows)))

    async def get_flow(self, request: Request) -> Response:
        """The flow, plus its LIVE version's document, inputs schema and graph."""
        self.api.admin(request)
        flow = await self._flow(request)
        versions = await self.engine.list_versions(flow.flow)
        live = next((v for v in versions if v.status is VersionStatus.LIVE), None)
        if live is None:
            return JSONResponse(m.body(m.FlowDetail(**flow.model_dump(), live=None, graph=None)))
        document = (await self.engine.program(flow.flow, live.version)).document
        detail = m.FlowDetail(
            **flow.model_dump(),
            live=m.LiveVersion(
                version=live.version, document=live.document, inputs=document.inputs
            ),
            graph=to_mermaid(document),
        )
        return JSONResponse(m.body(detail))

    async def add_version(self, request: Request) -> Response:
        self.api.admin(request)
        flow = _flow_name(request)
        body = await self.api.body(request)
        raw = parse_document(_with_flow(body, flow))
        if raw["flow"] != flow:
            message = f"the document is a version of flow {raw['flow']!r}, not {flow!r}"
            raise ApiError("invalid_flow", message, problems=[message])
        version = await self.engine.add_version(raw)
        info = await self.engine.get_version(flow, version)
        return JSONResponse(m.body(_version_model(info)), status_code=201)

    async def start(self, request: Request) -> Response:
        self.api.admin(request)
        flow = _flow_name(request)
        version = request.path_params["version"]
        if version > _MAX_VERSION:
            raise FlowNotFound(
                f"version {version} of flow {flow!r} does not exist", flow=flow, version=None
            )
        try:
            await self.engine.start(flow, version)
        except InvalidFlow as exc:
            problems = [str(problem) for problem in exc.problems]
            message = f"version {version} of flow {flow!r} is INVALID and cannot start"
            raise ApiError("version_invalid", message, problems=problems) from exc
        return JSONResponse(m.body(await self._flow(request)))

    async def transition(self, request: Request) -> Response:
        self.api.admin(request)
        flow = _flow_name(request)
        verb = request.url.path.rsplit("/", 1)[-1]
        if verb == "pause":
            await self.engine.pause(flow)
        elif verb == "resume":
            await self.engine.resume(flow)
        else:
            await self.engine.stop(flow)
        return JSONResponse(m.body(await self._flow(request)))

    async def permissions(self, request: Request) -> Response:
        self.api.admin(request)
        flow = _flow_name(request) if "flow" in request.path_params else None
        return JSONResponse(m.body(await self._permissions(request, flow)))

    async def setting(self, request: Request) -> Response:
        self.api.admin(request)
        flow = _flow_name(request) if "flow" in request.path_params else None
        subject = _subject(request.path_params["kind"], request.path_params["name"])
        if request.method == "DELETE":
            permission = Permission.INHERIT
        else:
            body = await self.api.json_body(request)
            word = body.get("permission") if isinstance(body, dict) else None
            if word not in ("GRANT", "DENY") or len(body) != 1:
                raise ApiError("invalid_body", 'the body must be {"permission": "GRANT" | "DENY"}')
            permission = Permission(word)
        await self.engine.permissions.set(subject, permission, flow=flow)
        return JSONResponse(m.body(await self._permissions(request, flow)))

    async def _flow(self, request: Request) -> m.Flow:
        flow = _flow_name(request)
        versions = await self.engine.list_versions(flow)
        if not versions:  # administrators may list the flows, so a close name is no leak
            hint = suggestion(flow, await self.engine.list_flows())
            raise FlowNotFound(f"flow {flow!r} does not exist{hint}", flow=flow)
        return _flow_model(flow, versions)

    async def _permissions(self, request: Request, flow: str | None) -> m.PermissionView:
        asked = asked_identity(request)
        settings = await self.engine.permissions.settings()
        view = _permission_view(settings, flow)
        more: dict[str, Any] = {}
        if flow is not None:
            more["exists"] = bool(await self.engine.list_versions(flow))
        if asked is not None:
            target = flow if flow is not None else _ANY_FLOW
            scope = settings if flow is not None else Settings(settings.default, settings.app)
            more["identity"] = m.IdentityDecision(
                user_id=asked.user_id,
                roles=sorted(asked.roles),
                effective=_decision_model(resolve(scope, target, asked)),
            )
        return view.model_copy(update=more)


def _flow_name(request: Request) -> str:
    flow = str(request.path_params["flow"])
    if not is_flow_name(flow):
        raise FlowNotFound(f"flow {flow!r} does not exist", flow=flow)
    return flow


def _with_flow(body: bytes, flow: str) -> bytes | dict[str, Any]:
    """The document of a new version; one that leaves out ``flow`` gets the path's.

    JSON is read as JSON (YAML does not take every JSON text), anything else as YAML.
    """
    try:
        loaded = loads_json(body)
    except ValueError:
        try:
            loaded = load_yaml(body.decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError):
            return body  # parse_document says what is wrong with it
    if not isinstance(loaded, dict):
        return body
    return loaded if "flow" in loaded else {"flow": flow, **loaded}


def _subject(kind: str, name: str) -> User | Role:
    if kind not in ("users", "roles"):
        raise ApiError("not_found", "no such endpoint")
    if len(name) > m.MAX_NAME:
        raise ApiError("invalid_body", f"a name is at most {m.MAX_NAME} characters")
    if kind == "roles":
        return Role(name)
    if name in SYSTEM_ROLES:
        raise ApiError("invalid_body", f"{name} is a system role, not a user")
    return User(name)


def asked_identity(request: Request) -> Identity | None:
    """The identity of ``?user=ID&role=R&role=R2`` (``None`` without either; an empty
    ``user`` is anonymous)."""
    user = request.query_params.get("user")
    roles = request.query_params.getlist("role")
    if user is None and not roles:
        return None
    try:
        return Identity(user_id=user or None, roles=roles)
    except (TypeError, ValueError) as exc:
        raise ApiError("invalid_query", f"not an identity: {exc}") from exc


def _flow_model(flow: str, versions: list[VersionInfo]) -> m.Flow:
    live = next((v.version for v in versions if v.status is VersionStatus.LIVE), None)
    paused = next((v.version for v in versions if v.status is VersionStatus.PAUSED), None)
    description = versions[-1].document.get("description") if versions else None
    return m.Flow(
        flow=flow,
        description=description if isinstance(description, str) else None,
        live_version=live,
        paused_version=paused,
        versions=[_version_model(info) for info in versions],
    )


def _version_model(info: VersionInfo) -> m.Version:
    return m.Version(
        flow=info.flow,
        version=info.version,
        status=info.status,
        problems=[str(problem) for problem in info.problems],
        problem_details=[_problem_model(problem) for problem in info.problems],
        created_at=info.created_at,
    )


def _problem_model(problem: Problem) -> m.ProblemDetail:
    """A problem's parts, for showing it; ``line`` and ``column`` when it knows them."""
    return m.ProblemDetail(
        message=problem.message,
        block=problem.block,
        field=problem.field,
        line=problem.line,
        column=problem.column,
    )


def _permission_view(settings: Settings, flow: str | None) -> m.PermissionView:
    """Every known subject's setting at this level and its effective decision."""
    levels = [settings.app, *settings.flows.values()]
    users = sorted({user for level in levels for user in level.users})
    custom = sorted({role for level in levels for role in level.roles} - SYSTEM_ROLES)
    member = "role-member"
    suffix = 1
    while member in users:
        suffix += 1
        member = f"role-member-{suffix}"
    level = settings.level(flow)
    scope = settings if flow is not None else Settings(settings.default, settings.app)
    target = flow if flow is not None else _ANY_FLOW

    def row(kind: str, name: str, identity: Identity) -> m.PermissionRow:
        here = (level.users if kind == "user" else level.roles).get(name, Permission.INHERIT)
        above = (settings.app.users if kind == "user" else settings.app.roles).get(
            name, Permission.INHERIT
        )
        entry: dict[str, Any] = {"name": name, "permission": here.value}
        if kind == "role":
            entry["system"] = name in SYSTEM_ROLES
        if flow is not None:
            entry["app_permission"] = above.value
        effective = _decision_model(resolve(scope, target, identity))
        return m.PermissionRow(**entry, effective=effective)

    roles = [
        row("role", NON_AUTHENTICATED, ANONYMOUS),
        row("role", AUTHENTICATED, Identity(user_id=member)),
        *(row("role", name, Identity(user_id=member, roles=[name])) for name in custom),
    ]
    return m.PermissionView(
        flow=flow,
        default="GRANT" if settings.default is Permission.GRANT else "DENY",
        role_member=member,
        users=[row("user", name, Identity(user_id=name)) for name in users],
        roles=roles,
    )


def _decision_model(decision: Decision) -> m.Decision:
    subject: m.Subject | None = None
    if isinstance(decision.subject, User):
        subject = m.Subject(kind="user", name=decision.subject.id)
    elif isinstance(decision.subject, Role):
        subject = m.Subject(kind="role", name=decision.subject.name)
    return m.Decision(
        allowed=decision.allowed, layer=decision.layer, subject=subject, reason=decision.reason
    )
