"""Gate benchmark: what an authorization decision and a Call Flow activation cost.

Run by hand from the repository root (under a minute on an idle machine)::

    python bench/gate.py
    python bench/gate.py --quick     # smoke run: fewer decisions and repetitions

Everything runs in one process with the in-memory store, structlog filtering out
everything below WARNING so the gate's log events cost nothing.

1. **Decisions.** The configurations of ``bench/resolver.py`` (large: 100,000 user
   settings, 10,000 roles, 10,000 flows; small: 10 of each), installed into an engine's
   :class:`MemoryStore`, and its cold-regime ``mixed`` activations: 10,000 distinct ones
   drawn from the large configuration's names, the same for both configurations, with
   identities holding 1, 10 and 100 custom roles (one in ten anonymous). Each decision
   is timed on its own (the timer's cost taken off):

   - ``resolve``: the permission step alone, ``permissions.resolve`` called directly;
   - ``admit``: the whole gate, ``Gate.admit`` on the engine's store (permission,
     existence, LIVE, depth, inputs; the same users and roles on flows LIVE with no
     inputs schema), denials included (a refusal raises, as it does for callers).

   Median µs per decision, decisions per second (from the mean), and the ratio
   large/small. ``bench/resolver.py`` breaks the resolver's figures down further (hot,
   warm and cold caches, a plain-Python baseline).

2. **Call Flow.** In the same run, per block: a parent of N ``call_flow`` blocks (each
   calling a child whose only block is ``return``) against a parent of N ``set`` blocks.
   The activation itself -- the gate plus creating and registering the child's run, what
   the block does before the child runs -- is timed apart (and the gate alone within
   it); the rest of a call_flow block is the child's own run and its end.

Targets: a decision (median, large configuration) under 5 µs; ``Gate.admit`` at most
3 µs more than ``resolve`` alone (medians, same roles count and configuration, in the same
run); a Call Flow activation under 5x a plain ``set`` block. The large/small ratios are
printed for information only: a flat ratio is not a target, since plain dictionary and
set look-ups show the same ratio (the processor's caches; see ``bench/resolver.py``).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import structlog

# Runnable from a checkout, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resolver import Config, mixed, time_resolver, timer_cost

from engine import ActivationDenied, Engine, MemoryStore
from engine._model.records import RunHeader
from engine._runtime.gate import Activation, Gate
from engine._runtime.interpreter import RunState
from permissions import Identity, resolve

structlog.configure(  # as in production: filtered by level, loggers bound once
    wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    cache_logger_on_first_use=True,
)

ROLE_COUNTS = (1, 10, 100)
LIVE_FLOWS = 100  # flows of each configuration given a LIVE version for the admit path
DECISION_TARGET_US = 5.0
GATE_EXTRA_TARGET_US = 3.0  # admit minus resolve
CALL_FLOW_TARGET = 5.0


def median(samples: list[float]) -> float:
    return statistics.median(samples)


async def admit_samples(gate: Gate, stream: list[Activation], overhead: float) -> list[float]:
    """µs of each activation through the whole gate (refusals raise and count).

    Each activation is built, its identity included, untimed just before it is admitted,
    as ``time_resolver`` builds each identity just before it is resolved: a request's
    identity is made when the request arrives. Built all ahead instead, 10,000 identities
    of 100 roles would be out of the processor's caches by the time they are admitted,
    and the gate would be charged cache misses ``resolve`` is not. A refusal is caught with
    ``try``/``except``, the cheapest way a caller has: a ``contextlib.suppress`` block
    costs about 0.3 µs itself, which is not the gate's."""
    admit = gate.admit
    samples = []
    for flow, _, identity, via, *_ in stream:
        activation = Activation(flow, None, Identity(identity.user_id, identity.roles), via)
        start = time.perf_counter_ns()
        try:  # noqa: SIM105 -- suppress() would be timed too
            await admit(activation)
        except ActivationDenied:
            pass
        samples.append((time.perf_counter_ns() - start - overhead) / 1000)
    return samples


async def gate_on(config: Config, live: list[str]) -> tuple[Engine, Gate]:
    """An engine whose store holds ``config``'s settings and LIVE versions of ``live``."""
    store = MemoryStore()
    store._settings = config.settings
    engine = Engine(store)
    for flow in live:
        document = {"flow": flow, "start": "done", "blocks": {"done": {"type": "return"}}}
        await engine.start(flow, await engine.add_version(document))
    return engine, Gate(store, engine.program, engine.limits)


class Row(NamedTuple):
    path: str
    roles: int
    large: float  # median µs per decision
    small: float
    per_second: float  # large configuration, from the mean
    denied: float


async def decisions(large: Config, small: Config, count: int, rounds: int) -> list[Row]:
    """The cold-regime activations of ``bench/resolver.py`` (10,000 distinct activations
    drawn from the large configuration's names, identities built per activation) through
    ``resolve`` and through ``Gate.admit``; the same activations go to both configurations,
    in rounds that alternate between them so that load from elsewhere falls on both alike."""
    rng = random.Random(4)
    overhead = timer_cost()
    live = large.flows[:LIVE_FLOWS]  # the same LIVE flows in both engines
    (large_engine, large_gate), (small_engine, small_gate) = (
        await gate_on(large, live),
        await gate_on(small, live),
    )
    rows = []
    async with large_engine, small_engine:
        for roles in ROLE_COUNTS:
            stream = mixed(large, roles, count, rng)
            denied = sum(
                not resolve(large.settings, a.flow, Identity(a.user, a.roles)).allowed
                for a in stream
            )
            samples: tuple[list[float], list[float]] = ([], [])
            for _ in range(rounds):
                samples[0].extend(time_resolver(large.settings, stream, overhead))
                samples[1].extend(time_resolver(small.settings, stream, overhead))
            rows.append(
                Row(
                    "resolve",
                    roles,
                    *map(median, samples),
                    1e6 / statistics.fmean(samples[0]),
                    denied / count,
                )
            )
            # the admit path needs LIVE flows: the same users and roles, on the LIVE ones
            activations = [
                Activation(rng.choice(live), None, Identity(a.user, a.roles), "api") for a in stream
            ]
            denied = sum(
                not resolve(large.settings, a.flow, a.identity).allowed for a in activations
            )
            samples = ([], [])
            for _ in range(rounds):
                samples[0].extend(await admit_samples(large_gate, activations, overhead))
                samples[1].extend(await admit_samples(small_gate, activations, overhead))
            rows.append(
                Row(
                    "admit",
                    roles,
                    *map(median, samples),
                    1e6 / statistics.fmean(samples[0]),
                    denied / count,
                )
            )
    return rows


# -- Call Flow against set ---------------------------------------------------------------------


def chain(flow: str, count: int, block: dict[str, Any]) -> dict[str, Any]:
    blocks = {f"b{i}": {**block, "next": f"b{i + 1}"} for i in range(count - 1)}
    blocks[f"b{count - 1}"] = dict(block)
    return {"flow": flow, "start": "b0", "blocks": blocks}


async def timed(run: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await run()
    return time.perf_counter() - start


async def call_flow_costs(blocks: int, repetitions: int) -> dict[str, float]:
    """Per-block µs of a chain of set blocks and of call_flow blocks, and the parts of a
    call_flow block: the activation (gate plus child run start) and the gate alone."""
    who = Identity("bench", {"Bench"})
    samples: dict[str, list[float]] = {"set": [], "call_flow": [], "activation": [], "gate": []}
    async with Engine() as engine:
        store = engine.store
        assert isinstance(store, MemoryStore)
        documents = [
            {"flow": "child", "start": "done", "blocks": {"done": {"type": "return"}}},
            chain("sets", blocks, {"type": "set", "values": {"x": 1}}),
            chain("calls", blocks, {"type": "call_flow", "flow": "child"}),
        ]
        for document in documents:
            await engine.start(document["flow"], await engine.add_version(document))
        gate = Gate(store, engine.program, engine.limits)
        # what a call_flow block of a running "calls" parent hands the gate
        parent = RunState(RunHeader("parent", "calls", 1, who, {}, root_run_id="parent"))
        child = Activation("child", {}, who, "call_flow", None, parent)

        async def sets() -> None:
            await engine.call_flow("sets", identity=who)

        async def calls() -> None:
            result = await engine.call_flow("calls", identity=who)
            assert result.status == "COMPLETED", result.error

        async def activations() -> None:
            # the gate, then the child's run state created and registered, as the block
            # does before it runs the child; the run is dropped again, never executed
            for _ in range(blocks):
                active = await engine._activate(child)
                engine._active.pop(active.state.header.run_id)

        async def admissions() -> None:
            for _ in range(blocks):
                await gate.admit(child)

        await sets()
        await calls()  # warm up: programs compiled, caches filled
        for _ in range(repetitions):
            for name, run in (
                ("set", sets),
                ("call_flow", calls),
                ("activation", activations),
                ("gate", admissions),
            ):
                store._runs.clear()
                samples[name].append(await timed(run) / blocks * 1e6)
        store._runs.clear()
    costs = {name: median(values) for name, values in samples.items()}
    costs["child_run"] = costs["call_flow"] - costs["activation"]
    return costs


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 2 repetitions")
    options = parser.parse_args()
    count, repetitions, blocks = (2_000, 2, 200) if options.quick else (10_000, 3, 500)

    started = time.perf_counter()
    large = Config(users=100_000, roles=10_000, flows=10_000, seed=1)
    small = Config(users=10, roles=10, flows=10, seed=2)
    built = time.perf_counter() - started
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"large: {large.size}")
    print(f"small: {small.size}")
    print(f"settings built in {built:.1f} s; {os.cpu_count()} processors, load average {load}")
    print("(load from other processes inflates the figures, the large configuration's most)")
    print(f"medians over {repetitions} passes through {count:,} activations")
    print()

    rows = anyio.run(decisions, large, small, count, repetitions)
    print(
        f"{'path':<9}{'roles':>6}{'denied':>8}{'large µs':>10}{'decisions/s':>13}"
        f"{'small µs':>10}{'ratio':>7}"
    )
    for row in rows:
        print(
            f"{row.path:<9}{row.roles:>6}{row.denied:>8.0%}{row.large:>10.2f}"
            f"{row.per_second:>13,.0f}{row.small:>10.2f}{row.large / row.small:>7.2f}"
        )

    costs = anyio.run(call_flow_costs, blocks, repetitions)
    print()
    print(f"per block, chains of {blocks:,} blocks (median of {repetitions}):")
    print(f"  set block                                  {costs['set']:8.2f} µs")
    print(f"  call_flow block (child: one return block)  {costs['call_flow']:8.2f} µs")
    print(f"  Call Flow activation (gate + run start)    {costs['activation']:8.2f} µs")
    print(f"    of which the gate (Gate.admit)           {costs['gate']:8.2f} µs")
    print(f"  the rest: the child's run and its end      {costs['child_run']:8.2f} µs")

    worst_resolve = max(row.large for row in rows if row.path == "resolve")
    resolved = {row.roles: row for row in rows if row.path == "resolve"}
    extra = max(
        max(row.large - resolved[row.roles].large, row.small - resolved[row.roles].small)
        for row in rows
        if row.path == "admit"
    )
    activation_ratio = costs["activation"] / costs["set"]
    checks = [
        ("resolve µs per decision (worst roles count)", worst_resolve, DECISION_TARGET_US),
        ("admit minus resolve, µs (worst roles count)", extra, GATE_EXTRA_TARGET_US),
        ("Call Flow activation / set block", activation_ratio, CALL_FLOW_TARGET),
    ]
    print()
    print(f"{'figure':<46}{'value':>8}{'target':>9}  result")
    for name, value, target in checks:
        print(f"{name:<46}{value:>8.2f}{'< ' + format(target, 'g'):>9}  {verdict(value < target)}")
    print(f"\ntotal run time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
