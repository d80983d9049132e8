"""Gate benchmark: what an authorization decision and a Call Flow activation cost.

Run by hand from the repository root (under a minute on an idle machine)::

    python bench/gate.py
    python bench/gate.py --quick     # smoke run: fewer decisions and repetitions

Everything runs in one process with the in-memory store, structlog filtering out
everything below WARNING so the gate's log events cost nothing.

1. **Decisions.** A large configuration -- 100,000 users, 10,000 roles, 10,000 flows,
   settings both app-wide and spread over the flows -- and a small one (10 users, 10
   roles, 10 flows), each built directly as a :class:`permissions.Settings` snapshot and
   installed into an engine's :class:`MemoryStore`. For identities holding 1, 10 and 100
   custom roles (one in ten anonymous), time

   - ``resolve``: the permission step alone, ``permissions.resolve`` called directly;
   - ``admit``: the whole gate, ``Gate.admit`` on the engine's store (permission,
     existence, LIVE, depth, inputs; flows LIVE with no inputs schema), denials included
     (a refusal raises, as it does for callers).

   Median over several repetitions of µs per decision and decisions per second, and the
   ratio large/small: near 1 means the cost does not grow with what is configured.

2. **Call Flow.** In the same run, per block: a parent of N ``call_flow`` blocks (each
   calling a child whose only block is ``return``) against a parent of N ``set`` blocks.
   The activation itself -- the gate plus creating and registering the child's run, what
   the block does before the child runs -- is timed apart (and the gate alone within
   it); the rest of a call_flow block is the child's own run and its end.

Targets: a decision (median, large configuration) under 5 µs; large/small under 1.5;
a Call Flow activation under 5x a plain ``set`` block.
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
from contextlib import suppress
from pathlib import Path
from typing import Any

import anyio
import structlog

# Runnable from a checkout, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import ActivationDenied, Engine, MemoryStore
from engine._gate import Activation, Gate
from engine._interpreter import RunState
from permissions import (
    AUTHENTICATED,
    NON_AUTHENTICATED,
    Identity,
    Level,
    Permission,
    Settings,
    resolve,
)

structlog.configure(  # as in production: filtered by level, loggers bound once
    wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    cache_logger_on_first_use=True,
)

GRANT, DENY = Permission.GRANT, Permission.DENY
ROLE_COUNTS = (1, 10, 100)
LIVE_FLOWS = 100  # flows of each configuration given a LIVE version for the admit path
DECISION_TARGET_US = 5.0
RATIO_TARGET = 1.5
CALL_FLOW_TARGET = 5.0

Case = tuple[str, Identity]


class Config:
    """A settings snapshot and the names it was built from."""

    def __init__(self, users: int, roles: int, flows: int, seed: int) -> None:
        rng = self.rng = random.Random(seed)
        self.users = [f"user-{i:06d}" for i in range(users)]
        self.roles = [f"role-{i:05d}" for i in range(roles)]
        # Names that are never configured, so that some decisions walk every layer.
        self.strangers = [f"nobody-{i:06d}" for i in range(users)]
        self.outsider_roles = [f"unset-{i:05d}" for i in range(roles)]
        self.flows = [f"flow-{i:05d}" for i in range(flows)]

        def some() -> Permission:
            return DENY if rng.random() < 0.2 else GRANT

        half = users // 2
        app = Level(
            users={user: some() for user in self.users[:half]},
            roles={role: some() for role in self.roles[: roles // 2]} | {NON_AUTHENTICATED: DENY},
        )
        flow_users = self.users[half:]
        per_flow = max(1, len(flow_users) // flows)
        levels = {}
        for index, flow in enumerate(self.flows):
            chosen = flow_users[index * per_flow : (index + 1) * per_flow]
            role_settings = {role: some() for role in rng.sample(self.roles, min(10, roles))}
            if index % 3 == 0:
                role_settings[AUTHENTICATED] = some()
            levels[flow] = Level(users={user: some() for user in chosen}, roles=role_settings)
        self.settings = Settings(app=app, flows=levels)
        self.size = (
            f"{sum(len(level.users) for level in [app, *levels.values()]):,} user settings, "
            f"{sum(len(level.roles) for level in [app, *levels.values()]):,} role settings "
            f"over {roles:,} roles, {len(levels):,} flows"
        )

    def cases(self, roles: int, count: int, flows: list[str]) -> list[Case]:
        """Random activations: users set or not (one in ten anonymous), random roles."""
        rng = self.rng
        cases = []
        pool = [*self.roles, *self.outsider_roles]
        for _ in range(count):
            draw = rng.random()
            if draw < 0.1:
                user = None
            elif draw < 0.55:
                user = rng.choice(self.users)
            else:
                user = rng.choice(self.strangers)
            names = rng.sample(pool, min(roles, len(pool)))
            names += [f"extra-{i}" for i in range(roles - len(names))]
            cases.append((rng.choice(flows), Identity(user, names)))
        return cases


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def resolve_pass(settings: Settings, cases: list[Case]) -> float:
    """Microseconds per decision over one pass through ``cases``."""
    start = time.perf_counter()
    for flow, identity in cases:
        resolve(settings, flow, identity)
    return (time.perf_counter() - start) / len(cases) * 1e6


async def admit_pass(gate: Gate, activations: list[Activation]) -> float:
    """Microseconds per activation through the whole gate (refusals raise and count)."""
    admit = gate.admit
    start = time.perf_counter()
    for activation in activations:
        with suppress(ActivationDenied):
            await admit(activation)
    return (time.perf_counter() - start) / len(activations) * 1e6


async def gate_on(config: Config) -> tuple[Engine, Gate, list[str]]:
    """An engine whose store holds ``config``'s settings and LIVE versions of some flows."""
    store = MemoryStore()
    store._settings = config.settings
    engine = Engine(store)
    live = config.flows[:LIVE_FLOWS]
    for flow in live:
        document = {"flow": flow, "start": "done", "blocks": {"done": {"type": "return"}}}
        await engine.start(flow, await engine.add_version(document))
    return engine, Gate(store, engine.program, engine.limits), live


async def decisions(
    large: Config, small: Config, count: int, repetitions: int
) -> list[tuple[str, int, float, float, float]]:
    """Rows ``(path, roles, large µs, small µs, denied share)``; passes alternate between
    the configurations so that load from elsewhere falls on both alike."""
    (large_engine, large_gate, large_live), (small_engine, small_gate, small_live) = (
        await gate_on(large),
        await gate_on(small),
    )
    rows = []
    async with large_engine, small_engine:
        for roles in ROLE_COUNTS:
            resolve_cases = (
                large.cases(roles, count, large.flows),
                small.cases(roles, count, small.flows),
            )
            denied = sum(not resolve(large.settings, f, i).allowed for f, i in resolve_cases[0])
            samples: tuple[list[float], list[float]] = ([], [])
            for _ in range(repetitions):
                samples[0].append(resolve_pass(large.settings, resolve_cases[0]))
                samples[1].append(resolve_pass(small.settings, resolve_cases[1]))
            rows.append(("resolve", roles, *map(median, samples), denied / count))

            admit_cases = [
                [
                    Activation(flow, None, identity, "api")
                    for flow, identity in config.cases(roles, count, live)
                ]
                for config, live in ((large, large_live), (small, small_live))
            ]
            denied = sum(
                not resolve(large.settings, a.flow, a.identity).allowed for a in admit_cases[0]
            )
            samples = ([], [])
            for _ in range(repetitions):
                samples[0].append(await admit_pass(large_gate, admit_cases[0]))
                samples[1].append(await admit_pass(small_gate, admit_cases[1]))
            rows.append(("admit", roles, *map(median, samples), denied / count))
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
        parent = RunState(
            run_id="parent", flow="calls", version=1, identity=who, inputs={}, root_run_id="parent"
        )
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
                engine._active.pop(active.state.run_id)

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
    count, repetitions, blocks = (2_000, 2, 200) if options.quick else (10_000, 7, 500)

    started = time.perf_counter()
    large = Config(users=100_000, roles=10_000, flows=10_000, seed=1)
    small = Config(users=10, roles=10, flows=10, seed=2)
    built = time.perf_counter() - started
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"large: {large.size}")
    print(f"small: {small.size}")
    print(f"settings built in {built:.1f} s; {os.cpu_count()} processors, load average {load}")
    print("(load from other processes inflates the figures, the large configuration's most)")
    print(f"median of {repetitions} passes over {count:,} decisions each")
    print()

    rows = anyio.run(decisions, large, small, count, repetitions)
    print(
        f"{'path':<9}{'roles':>6}{'denied':>8}{'large µs':>10}{'decisions/s':>13}"
        f"{'small µs':>10}{'ratio':>7}"
    )
    for path, roles, large_us, small_us, denied in rows:
        print(
            f"{path:<9}{roles:>6}{denied:>8.0%}{large_us:>10.2f}{1e6 / large_us:>13,.0f}"
            f"{small_us:>10.2f}{large_us / small_us:>7.2f}"
        )

    costs = anyio.run(call_flow_costs, blocks, repetitions)
    print()
    print(f"per block, chains of {blocks:,} blocks (median of {repetitions}):")
    print(f"  set block                                  {costs['set']:8.2f} µs")
    print(f"  call_flow block (child: one return block)  {costs['call_flow']:8.2f} µs")
    print(f"  Call Flow activation (gate + run start)    {costs['activation']:8.2f} µs")
    print(f"    of which the gate (Gate.admit)           {costs['gate']:8.2f} µs")
    print(f"  the rest: the child's run and its end      {costs['child_run']:8.2f} µs")

    worst_resolve = max(row[2] for row in rows if row[0] == "resolve")
    worst_ratio = max(row[2] / row[3] for row in rows if row[0] == "resolve")
    worst_admit_ratio = max(row[2] / row[3] for row in rows if row[0] == "admit")
    activation_ratio = costs["activation"] / costs["set"]
    whole_ratio = costs["call_flow"] / costs["set"]
    checks = [
        ("resolve µs per decision (worst roles count)", worst_resolve, DECISION_TARGET_US),
        ("resolve large/small (worst roles count)", worst_ratio, RATIO_TARGET),
        ("admit large/small (worst roles count)", worst_admit_ratio, RATIO_TARGET),
        ("Call Flow activation / set block", activation_ratio, CALL_FLOW_TARGET),
        ("call_flow block incl. child run / set block", whole_ratio, CALL_FLOW_TARGET),
    ]
    print()
    print(f"{'figure':<46}{'value':>8}{'target':>9}  result")
    for name, value, target in checks:
        print(f"{name:<46}{value:>8.2f}{'< ' + format(target, 'g'):>9}  {verdict(value < target)}")
    print(f"\ntotal run time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
