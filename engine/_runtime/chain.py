"""Who may run a flow and every flow it reaches through Call Flow blocks: one analysis
for ``flowwarden check`` (its lines and ``--json``) and the HTTP check endpoint.

The chain is walked breadth first from the root over the LIVE versions' ``call_flow``
blocks; each flow reached is put to the gate as it would be now (``Engine.examine``:
permission, existence, LIVE, ``callable_by``, depth), as the identity that would reach
it (narrowed to anonymous by ``identity: anonymous``). A flow reached only through a
refused link is still examined and marked as not reached; call cycles are reported
once each, since the depth limit stops them at run time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import networkx as nx

from permissions import ANONYMOUS, Identity

from .._model.errors import ActivationDenied, ActivationError, FlowNotFound, FlowNotLive
from .._model.types import VersionStatus
from .engine import Engine

__all__ = ["ChainEntry", "ChainReport", "Problem", "analyse_chain"]

Problem = Literal["not_found", "not_live", "callable_by", "depth", "cycle"]


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """One flow reached (or one cycle): what the gate would decide, and why."""

    flow: str
    called_from: str | None
    allowed: bool
    layer: str | None
    reason: str
    problem: Problem | None = None
    version: int | None = None
    via: tuple[str, ...] = ()
    as_anonymous: bool = False
    """Reached as anonymous from an identified root (``identity: anonymous``)."""
    not_reached_because: str | None = None
    """An earlier link of the chain the gate refuses: this one would never be asked."""
    cycle: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "called_from": self.called_from,
            "allowed": self.allowed,
            "layer": self.layer,
            "reason": self.reason,
            "problem": self.problem,
        }

    def line(self) -> str:
        """The entry as ``flowwarden check`` prints it."""
        if self.problem == "cycle":
            return f"CYCLE {' → '.join([*self.cycle, self.cycle[0]])}: {self.reason}"
        name = self.flow if self.version is None else f"{self.flow} v{self.version}"
        who = " as anonymous" if self.as_anonymous else ""
        via = f" via {' → '.join(self.via)}" if self.via else ""
        if self.problem == "not_found":
            head = f"NOT-FOUND {name}"
        elif self.problem == "not_live":
            head = f"NOT-LIVE {name}"
        elif self.problem == "callable_by":
            head = f"DENY {name} (callable_by)"
        elif self.problem == "depth":
            head = f"DENY {name} (depth limit)"
        else:
            head = f"{'ALLOW' if self.allowed else 'DENY'} {name} (layer {self.layer})"
        line = f"{head}{who}{via}: {self.reason}"
        if self.not_reached_because is not None:
            line += f" [not reached: {self.not_reached_because} is refused]"
        return line


@dataclass
class ChainReport:
    """The whole chain: allowed when every link reached would be admitted."""

    flow: str
    allowed: bool = True
    chain: list[ChainEntry] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "chain": [entry.to_json() for entry in self.chain]}


_Node = tuple[str, int | None, bool]  # flow, pinned version, narrowed to anonymous


@dataclass(frozen=True)
class _Reach:
    """One way the chain reaches a flow: as whom, through which callers."""

    flow: str
    version: int | None
    anonymous: bool
    chain: tuple[str, ...]
    refused_at: str | None  # an earlier link that the gate would refuse


async def analyse_chain(engine: Engine, flow: str, identity: Identity) -> ChainReport:
    """The gate's answer now for ``flow`` and every flow it can reach, in the order a
    reader follows them (breadth first, blocks in document order), then the cycles."""
    report = ChainReport(flow)
    graph = await _call_graph(engine)
    printed: set[tuple[_Node, str | None, bool]] = set()
    allowed_shown: set[tuple[_Node, bool]] = set()  # an ALLOW entry is enough once
    reached_cleanly: set[_Node] = set()
    expanded: set[tuple[_Node, bool]] = set()
    pending = deque([_Reach(flow, None, identity.is_anonymous, (), None)])
    while pending:
        reach = pending.popleft()
        node = (reach.flow, reach.version, reach.anonymous)
        clean = reach.refused_at is None
        if not clean and node in reached_cleanly:
            continue  # what a refused chain would reach is reported on a live one
        if clean:
            reached_cleanly.add(node)
        narrowed = reach.anonymous and not identity.is_anonymous
        entry = await _verdict(engine, reach, ANONYMOUS if reach.anonymous else identity)
        caller = reach.chain[-1] if reach.chain else None
        if not (entry.allowed and (node, clean) in allowed_shown) and (
            (node, caller, clean) not in printed
        ):
            printed.add((node, caller, clean))
            report.chain.append(
                replace(entry, as_anonymous=narrowed, not_reached_because=reach.refused_at)
            )
        if entry.allowed:
            allowed_shown.add((node, clean))
        if clean and not entry.allowed:
            report.allowed = False
        effective = clean and entry.allowed
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
    limit = engine.limits.max_depth
    for cycle in _cycles(graph, flow):
        reason = f"recursion, stopped at run time by the depth limit ({limit})"
        report.chain.append(
            ChainEntry(cycle[0], cycle[-1], True, None, reason, "cycle", cycle=tuple(cycle))
        )
    return report


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


async def _verdict(engine: Engine, reach: _Reach, identity: Identity) -> ChainEntry:
    """The gate's checks for one reach, in the gate's order."""
    flow = reach.flow
    caller = reach.chain[-1] if reach.chain else None
    answer = await engine.examine(
        flow, identity, version=reach.version, caller=caller, depth=len(reach.chain)
    )

    def entry(allowed: bool, layer: str | None, reason: str, problem: Problem | None) -> ChainEntry:
        return ChainEntry(flow, caller, allowed, layer, reason, problem, reach.version, reach.chain)

    if isinstance(answer, FlowNotFound):
        missing = f"flow {flow!r} does not exist"
        if reach.version is not None:
            missing = f"flow {flow!r} has no version {reach.version}"
        return entry(False, None, missing, "not_found")
    if isinstance(answer, FlowNotLive):
        return entry(False, None, f"version {answer.version} is {answer.status}", "not_live")
    decision = answer.decision if isinstance(answer, ActivationDenied) else None
    layer = decision.layer if decision is not None else None
    if isinstance(answer, ActivationDenied) and answer.reason == "callable_by":
        info = await engine.get_version(flow, answer.version or 0)
        callers = ", ".join(info.document.get("callable_by") or [])
        allowed_callers = callers or "no flow (external activation only)"
        return entry(False, layer, f"callable only by {allowed_callers}", "callable_by")
    if isinstance(answer, ActivationDenied) and answer.reason == "depth_limit":
        return entry(False, layer, f"deeper than {engine.limits.max_depth}", "depth")
    if isinstance(answer, ActivationError):
        reason = decision.reason if decision is not None else str(answer)
        return entry(False, layer or "error", reason, None)
    return entry(True, answer.decision.layer, answer.decision.reason, None)
