"""The built-in block palette: parameter models for all, ``run`` for the action blocks.

The structural blocks (condition, router, repeat, for_each, break, parallel, return,
call_flow's waiting) change where a path goes, so the interpreter carries them out; the
action blocks here are plain functions of ``(ctx, params)``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
from pydantic import AfterValidator, Field, StringConstraints, field_validator

if TYPE_CHECKING:
    import httpx

from ._contract import BlockContext, BlockDefinition, BlockError, Params
from ._values import Expression, Template

__all__ = [
    "BUILTINS",
    "FLOW_NAME_PATTERN",
    "RESERVED_NAMES",
    "BreakParams",
    "CallFlowParams",
    "ConditionParams",
    "FailParams",
    "ForEachParams",
    "HttpParams",
    "LogParams",
    "ParallelParams",
    "RepeatParams",
    "ReturnParams",
    "RouterParams",
    "SetParams",
    "WaitParams",
    "is_flow_name",
]

FLOW_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
"""A flow name, matched in full: with Python's ``re``, use ``fullmatch`` (``$`` would
also match before a trailing newline); pydantic's engine reads ``$`` as the very end."""
_FLOW_NAME = re.compile(FLOW_NAME_PATTERN)


def is_flow_name(name: object) -> bool:
    """Whether ``name`` is a flow name, matched in full (no trailing newline)."""
    return isinstance(name, str) and _FLOW_NAME.fullmatch(name) is not None


RESERVED_NAMES = frozenset({"inputs", "vars", "run"})

BlockId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
VarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
FlowName = Annotated[str, StringConstraints(pattern=FLOW_NAME_PATTERN)]


def _object_template(template: Template) -> Template:
    if not isinstance(template.raw, dict):
        raise ValueError("must be an object of name: value")
    return template


class SetParams(Params):
    """``values: {name: value}`` — sets run variables."""

    values: Annotated[Template, AfterValidator(_object_template)]

    @field_validator("values")
    @classmethod
    def _names(cls, template: Template) -> Template:
        for name in template.raw:
            if not name or not (name[0].isalpha() or name[0] == "_"):
                raise ValueError(f"variable name {name!r} must start with a letter or _")
        return template


class ConditionParams(Params):
    PORTS = (("then", "one", "path"), ("else", "one", "path"))

    if_: Expression = Field(alias="if")
    then: BlockId | None = None
    else_: BlockId | None = Field(default=None, alias="else")


class RouterParams(Params):
    PORTS = (("routes", "map", "path"), ("default", "one", "path"))

    value: Expression
    routes: dict[str, BlockId]
    default: BlockId | None = None


class RepeatParams(Params):
    PORTS = (("body", "one", "body"),)

    body: BlockId
    while_: Expression = Field(alias="while")
    max_iterations: int | None = Field(default=None, ge=1)


def _loop_name(name: str) -> str:
    if name in RESERVED_NAMES or name == "index":
        raise ValueError(f"a loop variable may not be named {name!r}")
    return name


class ForEachParams(Params):
    PORTS = (("body", "one", "body"),)

    items: Expression
    as_: Annotated[VarName, AfterValidator(_loop_name)] = Field(default="item", alias="as")
    body: BlockId
    concurrency: int = Field(default=1, ge=1, le=10_000)


class BreakParams(Params):
    pass


class ParallelParams(Params):
    PORTS = (("branches", "list", "branch"),)

    branches: list[BlockId] = Field(min_length=1)


class WaitParams(Params):
    seconds: Template


class LogParams(Params):
    message: Template
    level: Literal["debug", "info", "warning", "error"] = "info"


class HttpParams(Params):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    url: Template
    headers: Template | None = None
    body: Template | None = None
    result: VarName | None = None


class CallFlowParams(Params):
    flow: FlowName
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    inputs: Template = Field(default_factory=lambda: Template({}))
    wait: bool = True
    result: VarName | None = None
    identity: Literal["caller", "anonymous"] = "caller"
    cancel_with_parent: bool = False


class ReturnParams(Params):
    value: Template | None = None


class FailParams(Params):
    code: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] = "fail"
    message: Template = Field(default_factory=lambda: Template("failed"))


def run_set(ctx: BlockContext, params: SetParams) -> None:
    values = params.values
    ctx.vars.update(values.scalar_object or ctx.evaluate(values))


def bind_set(params: SetParams) -> Callable[[BlockContext], None]:
    """``run_set`` for one block: literal values are handed to ``dict.update`` as they are."""
    values = params.values
    constant = values.scalar_object
    if constant is not None:

        def set_constant(ctx: BlockContext) -> None:
            ctx.vars.update(constant)

        return set_constant

    def set_values(ctx: BlockContext) -> None:
        ctx.vars.update(ctx.evaluate(values))

    return set_values


async def run_wait(ctx: BlockContext, params: WaitParams) -> None:
    seconds = ctx.evaluate(params.seconds)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise BlockError("wait", f"seconds must be a number, got {seconds!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise BlockError("wait", f"seconds must be a finite number >= 0, got {seconds!r}")
    await anyio.sleep(seconds)


def run_log(ctx: BlockContext, params: LogParams) -> None:
    message = ctx.evaluate(params.message)
    ctx.log(params.level, message if isinstance(message, str) else json.dumps(message))


async def run_http(ctx: BlockContext, params: HttpParams) -> None:
    url = ctx.evaluate(params.url)
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise BlockError("http", f"url must be an http(s) URL string, got {url!r}")
    headers = ctx.evaluate(params.headers) if params.headers is not None else {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise BlockError("http", "headers must be an object of strings")
    headers = {"Idempotency-Key": ctx.idempotency_key, **headers}
    request: dict[str, Any] = {"headers": headers}
    if params.body is not None:
        body = ctx.evaluate(params.body)
        if isinstance(body, str | bytes):
            request["content"] = body
        else:
            request["json"] = body
    import httpx  # loaded by the first request, not by every program that has blocks

    try:
        response = await ctx.http.request(params.method, url, **request)
    except httpx.HTTPError as exc:
        raise BlockError(
            "http", f"{params.method} {url} failed: {exc or type(exc).__name__}"
        ) from exc
    if response.is_error:
        raise BlockError("http", f"{params.method} {url} answered {response.status_code}")
    if params.result is not None:
        ctx.vars[params.result] = {
            "status": response.status_code,
            "headers": dict(response.headers),
            "body": _decode(response),
        }


def _decode(response: httpx.Response) -> Any:
    if "json" in response.headers.get("content-type", ""):
        try:
            return response.json()
        except ValueError:
            pass
    return response.text


def run_fail(ctx: BlockContext, params: FailParams) -> None:
    message = ctx.evaluate(params.message)
    raise BlockError(params.code, message if isinstance(message, str) else json.dumps(message))


async def run_call_flow(ctx: BlockContext, params: CallFlowParams) -> None:
    result = await ctx.call_flow(
        params.flow,
        ctx.evaluate(params.inputs),
        version=params.version,
        wait=params.wait,
        anonymous=params.identity == "anonymous",
        cancel_with_parent=params.cancel_with_parent,
    )
    if params.result is not None:
        ctx.vars[params.result] = result


def _structural(name: str, params: type[Params], *ports: str) -> BlockDefinition:
    return BlockDefinition(name=name, params=params, kind="structural", ports=ports)


BUILTINS: tuple[BlockDefinition, ...] = (
    BlockDefinition("set", SetParams, run_set, bind=bind_set),
    _structural("condition", ConditionParams, "then", "else"),
    _structural("router", RouterParams),
    _structural("repeat", RepeatParams),
    _structural("for_each", ForEachParams),
    _structural("break", BreakParams),
    _structural("parallel", ParallelParams),
    BlockDefinition("wait", WaitParams, run_wait),
    BlockDefinition("log", LogParams, run_log),
    BlockDefinition("http", HttpParams, run_http),
    BlockDefinition("call_flow", CallFlowParams, run_call_flow),
    _structural("return", ReturnParams),
    BlockDefinition("fail", FailParams, run_fail),
)
