"""Custom blocks: the decorator, registries handed to the engine, entry points."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from blocks import (
    ENTRY_POINT_GROUP,
    BlockContext,
    BlockDefinition,
    BlockError,
    BlockRegistry,
    Expression,
    Params,
    Template,
    block,
)
from engine import Engine, Identity, RunResult, RunStatus, VersionStatus
from engine.testing import deploy


class GreetParams(Params):
    name: Template
    times: int = 1


@block("greet", params=GreetParams)
async def greet(ctx: BlockContext, params: GreetParams) -> None:
    """Store a greeting in ``vars.greeting``."""
    name = ctx.evaluate(params.name)
    ctx.vars["greeting"] = " ".join([f"hello {name}"] * params.times)


class CheckParams(Params):
    test: Expression


@block("check", params=CheckParams, description="raises when the test is false")
async def check(ctx: BlockContext, params: CheckParams) -> None:
    if not ctx.evaluate(params.test):
        raise BlockError("check_failed", f"{params.test.source} is false")


class NoParams(Params):
    pass


@block("explode", params=NoParams)
async def explode(ctx: BlockContext, params: NoParams) -> None:
    raise RuntimeError("kaboom")


@block("whoami", params=NoParams)
async def whoami(ctx: BlockContext, params: NoParams) -> None:
    info = ctx.run
    ctx.vars["me"] = {
        "block": ctx.block_id,
        "id": info.id,
        "flow": info.flow,
        "version": info.version,
        "depth": info.depth,
        "user_id": info.user_id,
        "roles": list(info.roles),
        "is_context": isinstance(ctx, BlockContext),
    }


@block("flaky", params=NoParams)
async def flaky(ctx: BlockContext, params: NoParams) -> None:
    ctx.vars.setdefault("attempts", []).append(ctx.attempt)
    if ctx.attempt < 3:
        raise BlockError("flaky", f"attempt {ctx.attempt} failed")


class SleepParams(Params):
    seconds: float


@block("nap", params=SleepParams)
async def nap(ctx: BlockContext, params: SleepParams) -> None:
    await anyio.sleep(params.seconds)
    ctx.vars["woke"] = True


class Counter:
    """A block written as a class: state lives in the run, never on the instance."""

    async def run(self, ctx: BlockContext, params: NoParams) -> None:
        ctx.vars["count"] = ctx.vars.get("count", 0) + 1
        ctx.log("info", "counted", count=ctx.vars["count"])


counter = BlockDefinition("count", NoParams, Counter().run)


@block("tally", params=NoParams)
class Tally:
    """A class registered with the decorator, as the block contract allows."""

    async def run(self, ctx: BlockContext, params: NoParams) -> None:
        ctx.vars["tally"] = ctx.vars.get("tally", 0) + 1


REGISTRY = BlockRegistry([greet, check, explode, whoami, flaky, nap, counter, Tally])  # type: ignore[list-item]


@pytest.fixture
def registry() -> BlockRegistry:
    return REGISTRY


async def run(
    engine: Engine,
    blocks: Mapping[str, Any],
    inputs: Mapping[str, Any] | None = None,
    identity: Identity | None = None,
) -> RunResult:
    await deploy(engine, blocks, flow="custom")
    if identity is None:
        return await engine.call_flow("custom", inputs)
    return await engine.call_flow("custom", inputs, identity=identity)


def test_decorator_makes_a_block_definition() -> None:
    assert isinstance(greet, BlockDefinition)
    assert greet.name == "greet"
    assert greet.params is GreetParams
    assert greet.kind == "action"
    assert greet.description == "Store a greeting in ``vars.greeting``."
    assert check.description == "raises when the test is false"


def test_registry_holds_builtins_and_the_given_blocks() -> None:
    assert {
        "set",
        "condition",
        "router",
        "repeat",
        "for_each",
        "break",
        "parallel",
        "wait",
        "log",
        "http",
        "call_flow",
        "return",
        "fail",
    } <= set(REGISTRY)
    assert "greet" in REGISTRY
    assert REGISTRY.get("greet") is greet
    assert REGISTRY.get("nope") is None
    assert len(REGISTRY) == 13 + 8


def test_registry_without_builtins() -> None:
    registry = BlockRegistry([greet], builtins=False)

    assert list(registry) == ["greet"]


def test_registry_refuses_a_name_twice_including_builtin_names() -> None:
    with pytest.raises(ValueError, match="'greet' is registered twice"):
        BlockRegistry([greet, greet])
    shadow = BlockDefinition("set", NoParams, explode.run)
    with pytest.raises(ValueError, match="'set' is registered twice"):
        BlockRegistry([shadow])


def test_registry_refuses_what_is_not_a_block_definition() -> None:
    with pytest.raises(TypeError, match="not a block definition"):
        BlockRegistry([greet.run])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="has no run function"):
        BlockRegistry([BlockDefinition("empty", NoParams)])


def test_with_blocks_returns_a_new_registry() -> None:
    base = BlockRegistry([greet])
    extended = base.with_blocks(check)

    assert "check" in extended and "greet" in extended and "set" in extended
    assert "check" not in base


async def test_custom_block_runs_with_validated_params(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "hi": {"type": "greet", "name": "=inputs.who", "times": 2, "next": "done"},
            "done": {"type": "return", "value": "=vars.greeting"},
        },
        {"who": "Ada"},
    )

    assert result.status is RunStatus.COMPLETED, result.error
    assert result.output == "hello Ada hello Ada"
    assert [(e.block, e.type, e.outcome) for e in result.trace] == [
        ("hi", "greet", "ok"),
        ("done", "return", "ok"),
    ]


async def test_class_based_block_runs_and_logs(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "a": {"type": "count", "next": "b"},
            "b": {"type": "count", "next": "done"},
            "done": {"type": "return", "value": "=vars.count"},
        },
    )

    assert result.output == 2
    assert [(e["block"], e["message"], e["count"]) for e in result.log] == [
        ("a", "counted", 1),
        ("b", "counted", 2),
    ]


async def test_class_decorated_as_a_block_runs(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "a": {"type": "tally", "next": "b"},
            "b": {"type": "tally", "next": "done"},
            "done": {"type": "return", "value": "=vars.tally"},
        },
    )

    assert result.status is RunStatus.COMPLETED, result.error
    assert result.output == 2


async def test_custom_block_sees_its_run(engine: Engine) -> None:
    result = await run(
        engine,
        {"me": {"type": "whoami", "next": "done"}, "done": {"type": "return", "value": "=vars.me"}},
        identity=Identity(user_id="alice", roles={"Manager", "Auditor"}),
    )

    assert result.output == {
        "block": "me",
        "id": result.run_id,
        "flow": "custom",
        "version": 1,
        "depth": 0,
        "user_id": "alice",
        "roles": ["Auditor", "Manager"],
        "is_context": True,
    }


async def test_custom_block_error_keeps_its_code_and_names_the_block(engine: Engine) -> None:
    result = await run(engine, {"c": {"type": "check", "test": "inputs.n > 3"}}, {"n": 1})

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.code == "check_failed"
    assert result.error.message == "inputs.n > 3 is false"
    assert result.error.block == "c"


async def test_exception_in_a_custom_block_is_error_code_error_naming_the_block(
    engine: Engine,
) -> None:
    result = await run(engine, {"boom": {"type": "explode"}})

    assert result.status is RunStatus.FAILED
    assert result.error is not None
    assert result.error.code == "error"
    assert result.error.block == "boom"
    assert "'boom'" in result.error.message
    assert "explode" in result.error.message
    assert "RuntimeError: kaboom" in result.error.message
    assert result.trace[0].outcome == "error"


async def test_exception_in_a_custom_block_with_retry_is_still_code_error(
    engine: Engine,
) -> None:
    result = await run(
        engine, {"boom": {"type": "explode", "retry": {"max_attempts": 2}, "timeout": 5}}
    )

    assert result.error is not None
    assert (result.error.code, result.error.block) == ("error", "boom")
    assert [e.outcome for e in result.trace] == ["error", "error"]


async def test_exception_in_a_custom_block_can_be_handled(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "boom": {"type": "explode", "on_error": "handled"},
            "handled": {"type": "return", "value": "=vars.error"},
        },
    )

    assert result.status is RunStatus.COMPLETED
    assert result.has_errors
    assert result.output["code"] == "error"
    assert result.output["block"] == "boom"


async def test_custom_block_attempt_counts_retries(engine: Engine) -> None:
    result = await run(
        engine,
        {
            "f": {"type": "flaky", "retry": {"max_attempts": 3}, "next": "done"},
            "done": {"type": "return", "value": "=vars.attempts"},
        },
    )

    assert result.output == [1, 2, 3]
    assert [e.outcome for e in result.trace if e.block == "f"] == ["flaky", "flaky", "ok"]


async def test_custom_block_honours_block_timeout(engine: Engine) -> None:
    result = await run(engine, {"z": {"type": "nap", "seconds": 10, "timeout": 0.1}})

    assert result.error is not None
    assert (result.error.code, result.error.block) == ("timeout", "z")


async def test_custom_block_params_are_validated_like_builtins(engine: Engine) -> None:
    version = await engine.add_version(
        {
            "flow": "custom",
            "start": "a",
            "blocks": {
                "a": {"type": "greet", "name": "x", "times": "many", "next": "b"},
                "b": {"type": "greet", "next": "c"},
                "c": {"type": "greet", "name": "y", "volume": 11, "next": "d"},
                "d": {"type": "check", "test": "1 +"},
            },
        }
    )

    info = await engine.get_version("custom", version)
    assert info.status is VersionStatus.INVALID
    found = {(p.block, p.field): p.message for p in info.problems}
    assert set(found) == {("a", "times"), ("b", "name"), ("c", "volume"), ("d", "test")}
    assert found[("b", "name")] == "required field is missing"
    assert found[("c", "volume")] == "unknown field"
    assert "does not compile" in found[("d", "test")]


async def test_custom_block_type_is_unknown_to_an_engine_without_it() -> None:
    async with Engine() as plain:
        version = await plain.add_version(
            {"flow": "custom", "start": "a", "blocks": {"a": {"type": "greet", "name": "x"}}}
        )
        info = await plain.get_version("custom", version)

    assert info.status is VersionStatus.INVALID
    [problem] = info.problems
    assert (problem.block, problem.field) == ("a", "type")
    assert "unknown block type 'greet'" in problem.message


# -- entry points --------------------------------------------------------------------------


def _install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, entries: str) -> None:
    """Lay out an installed distribution publishing ``entries`` under the block group."""
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            from blocks import BlockContext, Params, block


            class ShoutParams(Params):
                word: str


            @block("shout", params=ShoutParams)
            async def shout(ctx: BlockContext, params: ShoutParams) -> None:
                ctx.vars["shouted"] = params.word.upper()


            class EchoParams(Params):
                text: str


            @block("echo", params=EchoParams)
            async def echo(ctx: BlockContext, params: EchoParams) -> None:
                ctx.vars["echoed"] = params.text


            @block("whisper", params=EchoParams)
            async def whisper(ctx: BlockContext, params: EchoParams) -> None:
                ctx.vars["whispered"] = params.text.lower()


            BOTH = [echo, whisper]
            """
        )
    )
    dist = tmp_path / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entries}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)


def test_entry_point_group_name() -> None:
    assert ENTRY_POINT_GROUP == "flowwarden.blocks"


async def test_blocks_published_through_entry_points_are_loaded_and_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "fw_published_blocks"
    _install(tmp_path, monkeypatch, module, f"shout = {module}:shout\npair = {module}:BOTH")
    try:
        registry = BlockRegistry.from_entry_points([greet])
    finally:
        sys.modules.pop(module, None)

    assert {"shout", "echo", "whisper", "greet", "set"} <= set(registry)
    async with Engine(registry=registry) as engine:
        result = await run(
            engine,
            {
                "a": {"type": "shout", "word": "hey", "next": "b"},
                "b": {"type": "whisper", "text": "QUIET", "next": "c"},
                "c": {"type": "greet", "name": "Bo", "next": "done"},
                "done": {"type": "return", "value": "=vars"},
            },
        )
        bad = await engine.add_version(
            {"flow": "custom", "start": "a", "blocks": {"a": {"type": "shout", "word": 1}}}
        )
        problems = (await engine.get_version("custom", bad)).problems

    assert result.output == {"shouted": "HEY", "whispered": "quiet", "greeting": "hello Bo"}
    assert [(p.block, p.field) for p in problems] == [("a", "word")]


async def test_without_published_blocks_from_entry_points_has_only_builtins() -> None:
    registry = BlockRegistry.from_entry_points()

    assert set(registry) == set(BlockRegistry())
