"""Traces: a run is a ``flow.run`` span, each block a ``flow.block`` span under it, a Call
Flow child's run under the calling block's span, an HTTP caller's trace continued.

Spans go to the OpenTelemetry SDK's in-memory exporter through a provider given to the
engine (the global provider can be set once per process, so only a subprocess sets it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import SpanKind, StatusCode

from engine import Engine, Identity, RunStatus
from engine._http.app import create_app
from engine._http.auth import TokenFileAuthenticator
from engine.testing import capture_logs, deploy
from permissions import Role

ROOT = Path(__file__).resolve().parents[2]

PARENT = {
    "check": {"type": "condition", "if": "inputs.n > 1", "then": "ask", "else": "done"},
    "ask": {
        "type": "call_flow",
        "flow": "child",
        "inputs": {"n": "=inputs.n"},
        "result": "answer",
        "next": "done",
    },
    "done": {"type": "return", "value": {"answer": "=vars.answer"}},
}
CHILD = {
    "double": {"type": "set", "values": {"twice": "=inputs.n * 2"}, "next": "back"},
    "back": {"type": "return", "value": "=vars.twice"},
}


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def engine(exporter: InMemorySpanExporter) -> AsyncIterator[Engine]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with Engine(tracer_provider=provider) as running:
        yield running


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_call_flow_child_run_is_a_span_under_the_calling_block_in_one_trace(
    engine: Engine, exporter: InMemorySpanExporter
) -> None:
    await deploy(engine, PARENT, flow="parent")
    await deploy(engine, CHILD, flow="child")
    result = await engine.call_flow("parent", {"n": 21}, identity=Identity(user_id="ada"))
    assert result.status is RunStatus.COMPLETED and result.output == {"answer": 42}

    spans = exporter.get_finished_spans()
    assert len({span.context.trace_id for span in spans}) == 1  # one trace
    runs = {span.attributes["flowwarden.flow"]: span for span in by_name(spans, "flow.run")}
    assert set(runs) == {"parent", "child"}
    parent, child = runs["parent"], runs["child"]
    assert parent.parent is None
    assert dict(parent.attributes) == {
        "flowwarden.flow": "parent",
        "flowwarden.version": 1,
        "flowwarden.run_id": result.run_id,
        "flowwarden.via": "api",
        "flowwarden.status": "COMPLETED",
        "enduser.id": "ada",
    }
    assert child.attributes["flowwarden.via"] == "call_flow"
    assert child.attributes["enduser.id"] == "ada"  # the child runs as its caller
    assert child.attributes["flowwarden.status"] == "COMPLETED"

    blocks = {span.attributes["flowwarden.block.id"]: span for span in by_name(spans, "flow.block")}
    assert set(blocks) == {"check", "ask", "done", "double", "back"}
    for name in ("check", "ask", "done"):
        assert parent_of(blocks[name]) == parent.context.span_id
    for name in ("double", "back"):
        assert parent_of(blocks[name]) == child.context.span_id
    # the child's run span hangs under the block that called it
    assert parent_of(child) == blocks["ask"].context.span_id
    assert blocks["ask"].attributes["flowwarden.block.type"] == "call_flow"
    assert blocks["ask"].attributes["flowwarden.block.outcome"] == "ok"
    assert blocks["check"].attributes["flowwarden.block.outcome"] == "then"
    assert blocks["double"].attributes["flowwarden.block.type"] == "set"
    assert all(span.status.status_code is StatusCode.UNSET for span in spans)


async def test_every_block_of_a_parallel_branch_is_a_span_of_its_own(
    engine: Engine, exporter: InMemorySpanExporter
) -> None:
    blocks = {
        "par": {"type": "parallel", "branches": ["a", "b"], "next": "done"},
        "a": {"type": "set", "values": {"a": 1}, "next": "a2"},
        "a2": {"type": "set", "values": {"a": 2}},
        "b": {"type": "set", "values": {"b": 1}},
        "done": {"type": "return", "value": "=vars"},
    }
    await deploy(engine, blocks, flow="branches")
    result = await engine.call_flow("branches")
    assert result.output == {"a": 2, "b": 1}
    spans = exporter.get_finished_spans()
    (run,) = by_name(spans, "flow.run")
    named = {span.attributes["flowwarden.block.id"]: span for span in by_name(spans, "flow.block")}
    assert set(named) == {"par", "a", "a2", "b", "done"}
    for name in ("par", "done"):
        assert parent_of(named[name]) == run.context.span_id
    for name in ("a", "a2", "b"):  # the branches' blocks hang under the parallel block
        assert parent_of(named[name]) == named["par"].context.span_id


async def test_a_failed_block_and_run_carry_the_error_code(
    engine: Engine, exporter: InMemorySpanExporter
) -> None:
    blocks = {"boom": {"type": "fail", "code": "nope", "message": "no"}}
    await deploy(engine, blocks, flow="failing")
    result = await engine.call_flow("failing")
    assert result.status is RunStatus.FAILED

    spans = exporter.get_finished_spans()
    (block,) = by_name(spans, "flow.block")
    assert block.attributes["flowwarden.block.outcome"] == "nope"
    assert block.status.status_code is StatusCode.ERROR
    (run,) = by_name(spans, "flow.run")
    assert run.attributes["flowwarden.status"] == "FAILED"
    assert "enduser.id" not in run.attributes  # anonymous: no end user
    assert run.status.status_code is StatusCode.ERROR


async def test_a_denied_child_activation_is_an_event_on_the_calling_block_span(
    engine: Engine, exporter: InMemorySpanExporter
) -> None:
    ask = {**PARENT["ask"], "on_error": "done"}
    await deploy(engine, {**PARENT, "ask": ask}, flow="parent")
    await deploy(engine, CHILD, flow="child")
    await engine.permissions.deny(Role("NonAuthenticatedUser"), flow="child")
    result = await engine.call_flow("parent", {"n": 2})
    assert result.has_errors

    spans = exporter.get_finished_spans()
    assert [span.attributes["flowwarden.flow"] for span in by_name(spans, "flow.run")] == ["parent"]
    (ask_span,) = [s for s in spans if s.attributes.get("flowwarden.block.id") == "ask"]
    assert ask_span.attributes["flowwarden.block.outcome"] == "activation_denied"
    (event,) = ask_span.events
    assert event.name == "activation.denied"
    assert event.attributes is not None
    assert event.attributes["flowwarden.flow"] == "child"
    assert "NonAuthenticatedUser" in str(event.attributes["flowwarden.reason"])


async def test_an_http_activation_with_a_traceparent_continues_the_callers_trace(
    engine: Engine, exporter: InMemorySpanExporter, tmp_path: Path
) -> None:
    await deploy(engine, CHILD, flow="child")
    app = create_app(engine, TokenFileAuthenticator(tmp_path / "tokens.yaml"))
    caller = TracerProvider()
    caller.add_span_processor(SimpleSpanProcessor(exporter))
    with caller.get_tracer("caller").start_as_current_span("client", kind=SpanKind.CLIENT):
        from opentelemetry import propagate

        headers: dict[str, str] = {"Content-Type": "application/json"}
        propagate.inject(headers)
    assert "traceparent" in headers
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(
            "/api/flows/child/activate-blocking", json={"n": 1}, headers=headers
        )
    assert response.status_code == 200, response.text

    spans = exporter.get_finished_spans()
    (client_span,) = by_name(spans, "client")
    (run,) = by_name(spans, "flow.run")
    assert run.context.trace_id == client_span.context.trace_id
    assert parent_of(run) == client_span.context.span_id
    assert run.attributes["flowwarden.via"] == "http"
    assert {span.context.trace_id for span in spans} == {client_span.context.trace_id}


class BlocksOnly(Sampler):
    """Records ``flow.block`` spans whatever their parent, drops everything else."""

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, *args: Any, **kw: Any
    ) -> SamplingResult:
        decision = Decision.RECORD_AND_SAMPLE if name == "flow.block" else Decision.DROP
        return SamplingResult(decision)

    def get_description(self) -> str:
        return "BlocksOnly"


async def test_a_run_whose_span_does_not_record_makes_no_block_spans(
    exporter: InMemorySpanExporter,
) -> None:
    provider = TracerProvider(sampler=BlocksOnly())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with Engine(tracer_provider=provider) as engine:
        await deploy(engine, CHILD, flow="child")
        result = await engine.call_flow("child", {"n": 1})
    assert result.output == 2
    assert exporter.get_finished_spans() == ()  # the sampler would have kept block spans


async def test_with_the_default_no_op_provider_runs_are_untraced() -> None:
    async with Engine() as engine:  # the global provider: OpenTelemetry's no-op default
        await deploy(engine, CHILD, flow="child")
        run_id = await engine.call_flow("child", {"n": 1}, wait=False)
        active = engine.local_run(run_id)
        assert active is not None
        assert engine.telemetry.start_run(active.state).tracer is None  # blocks: no spans
        assert (await engine.wait_for(run_id)).output == 2


def test_a_tracer_provider_set_after_import_engine_is_used() -> None:
    script = """
import json, anyio
import engine
from engine import Engine
from engine.testing import capture_logs, deploy
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))

async def main():
    async with Engine() as running:
        await deploy(running, {"x": {"type": "set", "values": {"a": 1}}}, flow="f")
        trace.set_tracer_provider(provider)  # after the import and the engine
        await running.call_flow("f")
    print(json.dumps(sorted(span.name for span in exporter.get_finished_spans())))

anyio.run(main)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == ["flow.block", "flow.run"]  # logs above


async def test_every_log_event_of_a_run_names_the_run_and_its_block(engine: Engine) -> None:
    blocks = {
        "say": {"type": "log", "message": "hello", "next": "flaky"},
        "flaky": {
            "type": "fail",
            "code": "flaky",
            "message": "not now",
            "retry": {"max_attempts": 2, "backoff": 0},
            "on_error": "end",
        },
        "end": {"type": "fail", "code": "final", "message": "over"},
    }
    await deploy(engine, blocks, flow="noisy")
    with capture_logs() as events:
        result = await engine.call_flow("noisy")
    assert result.status is RunStatus.FAILED

    mine = [event for event in events if event.get("run_id") == result.run_id]
    names = [event["event"] for event in mine]
    assert names == ["flow.log", "block.retry", "block.error_handled", "run.failed"]
    for event in mine:
        assert event["flow"] == "noisy" and event["version"] == 1, event
    assert [event.get("block") for event in mine[:3]] == ["say", "flaky", "flaky"]
