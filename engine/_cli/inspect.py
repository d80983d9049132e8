"""``flowwarden check``: who may run a flow and every flow it reaches through Call Flow
blocks (``flowwarden validate`` is in its own module)."""

from __future__ import annotations

import argparse
from collections import deque
from dataclasses import dataclass

import networkx as nx

from permissions import ANONYMOUS, Identity

from .._model.errors import (
    ActivationDenied,
    ActivationError,
    FlowNotFound,
    FlowNotLive,
)
from .._model.types import VersionStatus
from .._runtime.engine import Engine
from .._runtime.workspace import load_workspace
from .common import (
    DENIED,
    OK,
    identity_of,
    load_registry,
    notes,
    out,
)

__all__ = ["check"]


# -- check -------------------------------------------------------------------------------


_Node = tuple[str, int | None, bool]  # flow, pinned version, narrowed to anonymous


@dataclass(frozen=True)
class _Reach:
    """One way the chain reaches a flow: as whom, through which callers."""

    flow: str
    version: int | None
    anonymous: bool
    chain: tuple[str, ...]
    refused_at: str | None  # an earlier link that the gate would refuse


async def check(args: argparse.Namespace) -> int:
    identity = identity_of(args)
    async with Engine(registry=load_registry()) as engine:
        notes(await load_workspace(engine, args.workspace), lambda _file: False)
        graph = await _call_graph(engine)
        refused = False
        printed: set[tuple[_Node, str | None, bool]] = set()
        allowed_shown: set[tuple[_Node, bool]] = set()  # an ALLOW line is enough once
        reached_cleanly: set[_Node] = set()
        expanded: set[tuple[_Node, bool]] = set()
        pending = deque([_Reach(args.flow, None, identity.is_anonymous, (), None)])
        while pending:
            reach = pending.popleft()
            node = (reach.flow, reach.version, reach.anonymous)
            clean = reach.refused_at is None
            if not clean and node in reached_cleanly:
                continue  # what a refused chain would reach is reported on a live one
            if clean:
                reached_cleanly.add(node)
            narrowed = reach.anonymous and not identity.is_anonymous
            allowed, line = await _verdict(
                engine, reach, ANONYMOUS if reach.anonymous else identity, narrowed
            )
            caller = reach.chain[-1] if reach.chain else None
            if not (allowed and (node, clean) in allowed_shown) and (
                (node, caller, clean) not in printed
            ):
                printed.add((node, caller, clean))
                if not clean:
                    line += f" [not reached: {reach.refused_at} is refused]"
                out(line)
            if allowed:
                allowed_shown.add((node, clean))
            refused = refused or (clean and not allowed)
            effective = clean and allowed
            if (node, effective) in expanded or reach.flow not in graph:
                continue
            expanded.add((node, effective))
            refused_at = None if effective else reach.refused_at or reach.flow
            for _, target, data in graph.out_edges(reach.flow, data=True):  # document order
                pending.append(
                    _Reach(
                        target,
                        data["version"],
                        reach.anonymous or data["anonymous"],
                        (*reach.chain, reach.flow),
                        refused_at,
                    )
                )
        for cycle in _cycles(graph, args.flow):
            limit = engine.limits.max_depth
            loop = " → ".join([*cycle, cycle[0]])
            out(f"CYCLE {loop}: recursion, stopped at run time by the depth limit ({limit})")
    return DENIED if refused else OK


def _cycles(graph: nx.MultiDiGraph[str], root: str) -> list[list[str]]:
    """Call cycles reachable from ``root``, each starting at its node nearest the root."""
    if root not in graph:
        return []
    distance = nx.single_source_shortest_path_length(graph, root)
    found: list[list[str]] = []
    cycle: list[str]
    for cycle in nx.simple_cycles(nx.DiGraph(graph.subgraph(distance))):
        start = min(range(len(cycle)), key=lambda i: (distance[cycle[i]], cycle[i]))
        found.append(cycle[start:] + cycle[:start])
    return sorted(found, key=lambda cycle: (len(cycle), cycle))


async def _call_graph(engine: Engine) -> nx.MultiDiGraph[str]:
    """Flows (LIVE versions) and their call_flow blocks as edges."""
    graph: nx.MultiDiGraph[str] = nx.MultiDiGraph()
    for flow in await engine.list_flows():
        for info in await engine.list_versions(flow):
            if info.status is not VersionStatus.LIVE:
                continue
            graph.add_node(flow)
            for block_id, block in info.document.get("blocks", {}).items():
                if isinstance(block, dict) and block.get("type") == "call_flow":
                    graph.add_edge(
                        flow,
                        block["flow"],
                        block=str(block_id),
                        version=block.get("version"),
                        anonymous=block.get("identity") == "anonymous",
                    )
    return graph


async def _verdict(
    engine: Engine, reach: _Reach, identity: Identity, narrowed: bool
) -> tuple[bool, str]:
    """The gate's checks for one reach, in the gate's order, as a line."""
    flow = reach.flow
    caller = reach.chain[-1] if reach.chain else None
    name = flow if reach.version is None else f"{flow} v{reach.version}"
    via = f" via {' → '.join(reach.chain)}" if reach.chain else ""
    who = " as anonymous" if narrowed else ""
    caller_depth = len(reach.chain)
    answer = await engine.examine(
        flow, identity, version=reach.version, caller=caller, depth=caller_depth
    )
    if isinstance(answer, FlowNotFound):
        missing = f"flow {flow!r} does not exist"
        if reach.version is not None:
            missing = f"flow {flow!r} has no version {reach.version}"
        return False, f"NOT-FOUND {name}{who}{via}: {missing}"
    if isinstance(answer, FlowNotLive):
        return False, f"NOT-LIVE {name}{who}{via}: version {answer.version} is {answer.status}"
    if isinstance(answer, ActivationDenied) and answer.reason == "callable_by":
        info = await engine.get_version(flow, answer.version or 0)
        callers = ", ".join(info.document.get("callable_by") or [])
        allowed_callers = callers or "no flow (external activation only)"
        return False, f"DENY {name} (callable_by){who}{via}: callable only by {allowed_callers}"
    if isinstance(answer, ActivationDenied) and answer.reason == "depth_limit":
        limit = engine.limits.max_depth
        return False, f"DENY {name} (depth limit){who}{via}: deeper than {limit}"
    if isinstance(answer, ActivationError):
        decision = answer.decision if isinstance(answer, ActivationDenied) else None
        layer = f"(layer {decision.layer})" if decision is not None else "(layer error)"
        reason = decision.reason if decision is not None else str(answer)
        return False, f"DENY {name} {layer}{who}{via}: {reason}"
    layer = f"(layer {answer.decision.layer})"
    return True, f"ALLOW {name} {layer}{who}{via}: {answer.decision.reason}"
