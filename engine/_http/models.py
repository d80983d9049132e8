"""The bodies of the HTTP API as pydantic models: what each request sends and each
response holds.

The OpenAPI document (:mod:`.openapi`) is generated from these models' JSON Schemas,
and the management endpoints build their answers with them, so the document and the
answers cannot drift apart. Run results and summaries keep their one JSON codec in
the engine (``RunResult.to_json``, ``RunSummary.to_json``); :class:`RunResult` and
:class:`RunSummary` here describe exactly that object, and the test suite holds the two
together.

A field that is sometimes left out (rather than ``null``) is typed ``X |
SkipJsonSchema[None]`` with :func:`_absent`: the document shows it as optional and not
nullable, and :func:`body` drops it when it was not given.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from permissions import SYSTEM_ROLES, Layer

from .._model.types import RunStatus, VersionStatus

__all__ = [
    "ChainEntry",
    "ChainReport",
    "Decision",
    "Error",
    "Flow",
    "FlowDocument",
    "FlowList",
    "IdentityDecision",
    "Inputs",
    "LogEntry",
    "PermissionBody",
    "PermissionRow",
    "PermissionView",
    "RunError",
    "RunId",
    "RunPage",
    "RunResult",
    "RunSummary",
    "RunsQuery",
    "Subject",
    "TraceEntry",
    "Version",
    "body",
]

MAX_NAME = 256
"""The longest user id or role name a settings path takes."""

_SYSTEM_ROLE_NAMES = sorted(SYSTEM_ROLES)


def _absent(description: str = "") -> Any:
    """A field that is left out of the answer when it does not apply (no ``default``
    in the document: the field is simply not there)."""

    def shape(schema: dict[str, Any]) -> None:
        schema.pop("default", None)
        if description:
            schema["description"] = description

    return Field(default=None, json_schema_extra=shape)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def body(model: BaseModel) -> dict[str, Any]:
    """A model as the JSON object an endpoint answers (fields never given left out)."""
    return model.model_dump(mode="json", exclude_unset=True)


# -- path and query values ---------------------------------------------------------

FlowName = Annotated[str, Field(description="the flow's name")]
UserName = Annotated[
    str,
    Field(
        max_length=MAX_NAME,
        description="a user id (not a system role's name)",
        json_schema_extra={"not": {"enum": _SYSTEM_ROLE_NAMES}},
    ),
]
RoleName = Annotated[
    str, Field(max_length=MAX_NAME, description="a role name (system roles included)")
]
CustomRole = Annotated[
    str, Field(min_length=1, json_schema_extra={"not": {"enum": _SYSTEM_ROLE_NAMES}})
]


class RunsQuery(_Body):
    """The filters of ``GET /api/runs`` (each given one must hold)."""

    flow: str | None = Field(None, description="runs of this flow")
    status: list[RunStatus] = Field(
        default_factory=list, description="runs in any of these statuses (repeatable)"
    )
    user: str | None = Field(
        None, description="runs of this user id (administrators; others see only their own)"
    )
    parent: str | None = Field(None, description="children of this run")
    root: str | None = Field(None, description="runs of this run tree")
    since: float | None = Field(
        None, allow_inf_nan=False, description="created at or after (Unix time)"
    )
    until: float | None = Field(None, allow_inf_nan=False, description="created before (Unix time)")
    limit: int = Field(50, ge=1, le=500, description="at most this many runs")
    cursor: str | None = Field(None, description="the next_cursor of the previous page")


class IdentityQuery(_Body):
    """``?user=ID&role=R&role=R2``: also resolve for that exact identity."""

    user: str | None = Field(
        None, description="with role: the identity to resolve for (empty: anonymous)"
    )
    role: list[CustomRole] = Field(default_factory=list)


class BlockingQuery(_Body):
    timeout: float | None = Field(
        None, ge=0, description="seconds to wait (default 5, over 300 clamped to 300)"
    )


# -- requests ---------------------------------------------------------------------


class Inputs(BaseModel):
    """The initial data of a run: any JSON object (an empty body is ``{}``)."""

    model_config = ConfigDict(extra="allow")


class FlowDocument(BaseModel):
    """A flow document; its ``flow`` may be left out, and must be the path's when given."""

    model_config = ConfigDict(extra="allow")

    description: str | SkipJsonSchema[None] = _absent()
    start: str | SkipJsonSchema[None] = _absent()
    blocks: dict[str, Any] | SkipJsonSchema[None] = _absent()


class PermissionBody(_Body):
    permission: Literal["GRANT", "DENY"]


# -- runs -------------------------------------------------------------------------


class Error(_Body):
    """Every refusal: a stable code, a sentence, and for documents and inputs the list
    of problems."""

    error: str = Field(description="a stable error code")
    message: str
    problems: list[str] | SkipJsonSchema[None] = _absent()


class RunId(_Body):
    run_id: str


class RunError(_Body):
    code: str
    message: str
    block: str | None
    child_run_id: str | SkipJsonSchema[None] = _absent("when a child run failed: its id")


class TraceEntry(_Body):
    block: str
    type: str
    start: float
    duration: float
    outcome: str


class LogEntry(BaseModel):
    """A line a block wrote, with any fields a custom block added."""

    model_config = ConfigDict(extra="allow", frozen=True)

    time: float
    level: str
    message: str
    block: str


class RunResult(_Body):
    """A run as its caller sees it, finished or not (the CLI's ``--json`` object)."""

    run_id: str
    flow: str
    version: int
    status: RunStatus
    output: Any = Field(description="any JSON value")
    error: RunError | None
    has_errors: bool
    user_id: str | None
    roles: list[str]
    parent_run_id: str | None
    root_run_id: str | None
    depth: int = Field(ge=0)
    inputs: Any = Field(description="the run's initial data")
    trace: list[TraceEntry]
    log: list[LogEntry]
    created_at: float
    started_at: float | None
    finished_at: float | None


class RunSummary(_Body):
    """One line of a run listing."""

    run_id: str
    flow: str
    version: int
    status: RunStatus
    has_errors: bool
    error_code: str | None
    user_id: str | None
    parent_run_id: str | None
    root_run_id: str | None
    depth: int = Field(ge=0)
    created_at: float
    started_at: float | None
    finished_at: float | None


class RunPage(_Body):
    """A page of runs, newest first; pass ``next_cursor`` back as ``cursor`` (``null``:
    the last page)."""

    runs: list[RunSummary]
    next_cursor: str | None


class RunGraph(_Body):
    """A run's version as Mermaid text, its executed blocks in class ``executed`` and
    the failed ones in ``failed``; both lists in the document's block order."""

    run_id: str
    flow: str
    version: int = Field(ge=1)
    graph: str
    executed: list[str]
    failed: list[str]


class RunStepBody(_Body):
    """The state of a run after one block: the block, the position of its entry in the
    run's trace (from 0), and the variables then (``null``: larger than a step keeps;
    ``size`` is their size as JSON in bytes either way)."""

    trace_index: int = Field(ge=0)
    block: str
    size: int = Field(ge=0)
    kept: bool
    variables: dict[str, Any] | None


class StepLimits(_Body):
    """What a durable store keeps of a run's steps: those of the first ``steps`` trace
    entries, variables of at most ``step_bytes`` each and ``run_bytes`` in all."""

    steps: int
    step_bytes: int
    run_bytes: int


class RunSteps(_Body):
    """A run's steps in trace order. ``kept`` is false when the store keeps no steps
    (the in-memory store); ``steps`` is empty then."""

    run_id: str
    kept: bool
    steps: list[RunStepBody]
    limits: StepLimits


# -- flows and versions -----------------------------------------------------------


class ProblemDetail(_Body):
    """One problem of a document, in parts; ``line`` and ``column`` (1-based) when the
    document was read from text."""

    message: str
    block: str | None
    field: str | None
    line: int | None
    column: int | None


class Version(_Body):
    flow: str
    version: int = Field(ge=1)
    status: VersionStatus
    problems: list[str]
    problem_details: list[ProblemDetail]
    created_at: float


class Flow(_Body):
    flow: str
    description: str | None
    live_version: int | None
    paused_version: int | None
    versions: list[Version]


class LiveVersion(_Body):
    version: int = Field(ge=1)
    document: dict[str, Any]
    inputs: dict[str, Any] | None


class FlowDetail(Flow):
    """A flow with its LIVE version's document, ``inputs`` schema and graph (Mermaid
    text); both are null while no version is LIVE."""

    live: LiveVersion | None
    graph: str | None


class FlowList(_Body):
    flows: list[Flow]


# -- permissions ------------------------------------------------------------------


class Subject(_Body):
    kind: Literal["user", "role"]
    name: str


class Decision(_Body):
    """What the gate would decide, where and why."""

    allowed: bool
    layer: Layer
    subject: Subject | None
    reason: str


class PermissionRow(_Body):
    name: str
    permission: Literal["GRANT", "DENY", "INHERIT"]
    system: bool | SkipJsonSchema[None] = _absent("roles only: a system role")
    app_permission: Literal["GRANT", "DENY", "INHERIT"] | SkipJsonSchema[None] = _absent(
        "flow views only: the app-wide setting"
    )
    effective: Decision


class ChainEntry(_Body):
    """One flow the chain reaches (or one call cycle) and the gate's answer for it."""

    flow: str
    called_from: str | None
    allowed: bool
    layer: Layer | None
    reason: str
    problem: Literal["not_found", "not_live", "callable_by", "depth", "cycle"] | None


class ChainReport(_Body):
    """Allowed when every link the chain reaches would be admitted."""

    allowed: bool
    chain: list[ChainEntry]


class IdentityDecision(_Body):
    user_id: str | None
    roles: list[str]
    effective: Decision


class PermissionView(_Body):
    """The settings at one level and each subject's effective decision."""

    flow: str | None
    default: Literal["GRANT", "DENY"]
    exists: bool | SkipJsonSchema[None] = _absent("flow views only: whether the flow exists")
    role_member: str = Field(description="the user id role rows are resolved for")
    users: list[PermissionRow]
    roles: list[PermissionRow]
    identity: IdentityDecision | SkipJsonSchema[None] = _absent("with ?user= or ?role=")
