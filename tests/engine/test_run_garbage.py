"""A run that has ended is freed when its last reference goes, not left in reference
cycles for the garbage collector: with thousands of runs a second, the collector's
passes would cost more than the runs' own bookkeeping."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from engine import Engine, RunStatus
from engine.testing import deploy

FLOWS: dict[str, dict[str, Any]] = {
    "completes": {
        "a": {"type": "set", "values": {"x": 1}, "next": "b"},
        "b": {"type": "set", "values": {"y": "=vars.x + 1"}, "next": "c"},
        "c": {"type": "return", "value": {"y": "=vars.y"}},
    },
    "fails": {"a": {"type": "set", "values": {"x": "=1 / vars.zero"}}},
    "handles": {
        "a": {"type": "set", "values": {"x": "=vars.missing"}, "on_error": "b"},
        "b": {"type": "return", "value": "handled"},
    },
    "waits": {"a": {"type": "wait", "seconds": 0}},
    "branches": {
        "a": {"type": "parallel", "branches": ["b", "c"]},
        "b": {"type": "set", "values": {"x": 1}},
        "c": {"type": "wait", "seconds": 0},
    },
}


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("flow", sorted(FLOWS))
async def test_an_ended_run_leaves_no_cycles(flow: str, collector_off: None) -> None:
    async with Engine() as engine:
        await deploy(engine, FLOWS[flow], flow=flow)
        await engine.call_flow(flow)  # the first run compiles and caches the version
        gc.collect()
        results = [await engine.call_flow(flow) for _ in range(20)]
        left = gc.collect()

    assert {result.status for result in results} <= {RunStatus.COMPLETED, RunStatus.FAILED}
    assert left == 0
