"""Flow documents: parsing YAML/JSON, validating everything at once, frozen models.

:func:`parse_document` turns a dict, YAML/JSON text or a path into a mapping, raising
:class:`InvalidFlow` only when there is no usable document at all (it does not parse,
or has no valid ``flow`` name). :func:`validate_document` then reports *every* other
problem at once — unknown fields, unknown block types, bad parameters, expressions that
do not compile, unknown targets, unreachable blocks, ``break`` outside a loop, an
``inputs`` that is not a JSON Schema — each naming its block and field.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import jsonschema
import networkx as nx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from blocks import FLOW_NAME_PATTERN, BlockRegistry, Params, is_flow_name

from .errors import InvalidFlow, Problem
from .limits import MAX_DOCUMENT_BYTES, MAX_DOCUMENT_NODES, MAX_NESTING, check_value, load_yaml

__all__ = [
    "BlockSpec",
    "FlowDocument",
    "RetryPolicy",
    "parse_document",
    "validate_document",
]

_COMMON_FIELDS = frozenset({"type", "next", "on_error", "timeout", "retry", "description"})
_TOP_FIELDS = ("flow", "description", "status", "callable_by", "inputs", "start", "blocks")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetryPolicy(_Frozen):
    """Retry a failed block: up to ``max_attempts`` in all, sleeping ``backoff`` seconds
    before the first retry and multiplying the pause by ``multiplier`` each time."""

    max_attempts: int = Field(default=3, ge=1, le=100)
    backoff: float = Field(default=0.0, ge=0, le=3600)
    multiplier: float = Field(default=2.0, ge=1, le=100)


class BlockSpec(_Frozen):
    """One block of a document: its common fields and its validated parameters."""

    id: str
    type: str
    params: Params
    next: str | None = None
    on_error: str | None = None
    timeout: float | None = Field(default=None, gt=0)
    retry: RetryPolicy | None = None
    description: str | None = None

    def targets(self) -> list[tuple[str, str]]:
        """``(field, target id)`` for every block this one can lead to, bodies included."""
        edges = [("next", self.next), ("on_error", self.on_error)]
        edges += [(port.field, port.target) for port in self.params.ports()]
        return [(name, target) for name, target in edges if target is not None]

    def bodies(self) -> list[tuple[str, str]]:
        """The entry blocks of loop bodies and parallel branches, with their context."""
        kinds = {"body": "loop", "branch": "branch"}
        return [
            (kinds[port.role], port.target)
            for port in self.params.ports()
            if port.role in kinds and port.target is not None
        ]


class FlowDocument(_Frozen):
    """A validated flow document. Immutable: to change a flow, add a version."""

    flow: str
    description: str | None = None
    status: Literal["READY", "LIVE", "PAUSED"] | None = None
    callable_by: tuple[str, ...] | None = None
    inputs: dict[str, Any] | None = None
    start: str
    blocks: Mapping[str, BlockSpec]


class _Header(_Frozen):
    flow: str = Field(pattern=FLOW_NAME_PATTERN)
    description: str | None = None
    status: Literal["READY", "LIVE", "PAUSED"] | None = None
    callable_by: list[str] | None = None
    inputs: dict[str, Any] | None = None
    start: str = Field(min_length=1)
    blocks: dict[str, Any] = Field(min_length=1)


def parse_document(
    source: Mapping[str, Any] | str | bytes | Path,
    *,
    max_nesting: int = MAX_NESTING,
    max_nodes: int = MAX_DOCUMENT_NODES,
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> dict[str, Any]:
    """Read a document from a mapping, YAML/JSON text or a file path.

    Raises :class:`InvalidFlow` when it does not parse, is over a limit (nesting
    ``max_nesting``; ``max_nodes`` nodes and ``max_bytes`` bytes after YAML aliases
    are expanded) or has no valid ``flow`` name.
    """
    file = str(source) if isinstance(source, Path) else None
    if isinstance(source, Path):
        try:
            source = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidFlow([Problem(f"cannot read the document: {exc}", file=file)]) from exc
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidFlow([Problem("the document is not UTF-8 text", file=file)]) from exc
    if isinstance(source, str):
        try:
            loaded = load_yaml(
                source, max_nesting=max_nesting, max_nodes=max_nodes, max_bytes=max_bytes
            )
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            detail = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            problem = Problem(f"the document does not parse{where}: {detail}", file=file)
            raise InvalidFlow([problem]) from exc
    else:
        loaded = source
        try:
            check_value(loaded, max_nesting=max_nesting, max_nodes=max_nodes)
        except ValueError as exc:
            raise InvalidFlow([Problem(f"the document is over a limit: {exc}", file=file)]) from exc
    if not isinstance(loaded, Mapping):
        kind = type(loaded).__name__
        raise InvalidFlow([Problem(f"a flow document is a mapping, not {kind}", file=file)])
    name = loaded.get("flow")
    if not is_flow_name(name):
        message = f"'flow' must be a name matching {FLOW_NAME_PATTERN}, got {name!r}"
        raise InvalidFlow([Problem(message, field="flow", file=file)])
    return copy.deepcopy(dict(loaded))  # the version owns its document


def validate_document(
    raw: Mapping[str, Any], registry: BlockRegistry
) -> tuple[FlowDocument | None, list[Problem]]:
    """Validate a parsed document; returns the frozen document (when usable) and problems.

    The document is ``None`` only when a problem makes it impossible to build (a
    missing ``start``, no ``blocks``); otherwise problems make the version INVALID.
    """
    problems: list[Problem] = []
    header_raw = {key: raw[key] for key in _TOP_FIELDS if key in raw}
    for key in raw:
        if key not in _TOP_FIELDS:
            problems.append(Problem("unknown field", field=str(key)))
    try:
        header = _Header.model_validate(header_raw)
    except ValidationError as exc:
        problems.extend(_problems(exc))
        header = None
    blocks_raw = raw.get("blocks")
    specs: dict[str, BlockSpec] = {}
    if isinstance(blocks_raw, Mapping):
        for block_id, body in blocks_raw.items():
            spec = _validate_block(str(block_id), body, registry, problems)
            if spec is not None:
                specs[str(block_id)] = spec
    if header is not None and header.inputs is not None:
        problems.extend(_schema_problems(header.inputs))
    if header is not None and header.callable_by is not None:
        for name in header.callable_by:
            if not is_flow_name(name):
                problems.append(Problem(f"{name!r} is not a flow name", field="callable_by"))
    start = raw.get("start") if isinstance(raw.get("start"), str) else None
    if isinstance(blocks_raw, Mapping):
        problems.extend(_graph_problems(start, blocks_raw, specs, registry))
    if header is None or len(specs) != len(blocks_raw or {}):
        return None, problems
    document = FlowDocument(
        flow=header.flow,
        description=header.description,
        status=header.status,
        callable_by=tuple(header.callable_by) if header.callable_by is not None else None,
        inputs=header.inputs,
        start=header.start,
        blocks=specs,
    )
    return document, problems


def _validate_block(
    block_id: str, body: Any, registry: BlockRegistry, problems: list[Problem]
) -> BlockSpec | None:
    if not isinstance(body, Mapping):
        problems.append(Problem(f"a block is a mapping, not {type(body).__name__}", block_id))
        return None
    kind = body.get("type")
    if not isinstance(kind, str):
        problems.append(Problem("missing or non-string 'type'", block_id, "type"))
        return None
    definition = registry.get(kind)
    if definition is None:
        known = ", ".join(sorted(registry))
        problems.append(Problem(f"unknown block type {kind!r} (known: {known})", block_id, "type"))
        return None
    params_raw = {k: v for k, v in body.items() if k not in _COMMON_FIELDS}
    before = len(problems)
    try:
        params = definition.params.model_validate(params_raw)
    except ValidationError as exc:
        problems.extend(_problems(exc, block_id))
        params = None
    common = {k: v for k, v in body.items() if k in _COMMON_FIELDS and k != "type"}
    try:
        if params is None:
            raise _Skip
        return BlockSpec(id=block_id, type=kind, params=params, **common)
    except ValidationError as exc:
        problems.extend(_problems(exc, block_id))
    except _Skip:
        try:  # still report problems in the common fields
            BlockSpec(id=block_id, type=kind, params=definition.params.model_construct(), **common)
        except ValidationError as exc:
            problems.extend(_problems(exc, block_id))
    assert len(problems) > before
    return None


class _Skip(Exception):
    pass


def _problems(exc: ValidationError, block: str | None = None) -> list[Problem]:
    found = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or None
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "required field is missing"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        found.append(Problem(message, block, field))
    return found


def _schema_problems(schema: dict[str, Any]) -> list[Problem]:
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path)
        return [Problem(f"not a valid JSON Schema at '{where}': {exc.message}", field="inputs")]
    return [
        Problem(f"$ref {ref!r} is not local to the schema (only '#…' refs)", field=f"inputs.{at}")
        for at, ref in _outside_refs(schema)
    ]


# Keywords whose values are data, not schemas: a "$ref" key in them is not a reference;
# and those whose keys are names (of properties, definitions), never keywords.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
_NAMED_SCHEMAS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
_REF_KEYWORDS = frozenset({"$ref", "$dynamicRef", "$recursiveRef"})


def _outside_refs(schema: Any) -> list[tuple[str, Any]]:
    """``(where, ref)`` of every reference that names something outside the schema:
    only a fragment of this very schema (``#…``) may be referred to."""
    found: list[tuple[str, Any]] = []
    pending: list[tuple[str, Any, bool]] = [("", schema, False)]
    while pending:
        where, value, names = pending.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                at = f"{where}.{key}" if where else str(key)
                if names:
                    pending.append((at, item, False))
                elif key in _REF_KEYWORDS:
                    if not (isinstance(item, str) and item.startswith("#")):
                        found.append((at, item))
                elif key not in _DATA_KEYWORDS:
                    pending.append((at, item, key in _NAMED_SCHEMAS))
        elif isinstance(value, list):
            pending.extend((f"{where}[{i}]", item, False) for i, item in enumerate(value))
    return sorted(found, key=lambda pair: pair[0])


def _graph_problems(
    start: str | None,
    blocks_raw: Mapping[str, Any],
    specs: Mapping[str, BlockSpec],
    registry: BlockRegistry,
) -> list[Problem]:
    problems: list[Problem] = []
    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_nodes_from(str(block_id) for block_id in blocks_raw)
    for spec in specs.values():
        for field, target in spec.targets():
            if target not in graph:
                problems.append(Problem(f"unknown target block {target!r}", spec.id, field))
            else:
                graph.add_edge(spec.id, target)
    for block_id, body in blocks_raw.items():
        if str(block_id) in specs:
            continue
        for field, target in _raw_targets(
            body, registry
        ):  # an invalid block: check what still reads
            if target in graph:
                graph.add_edge(str(block_id), target)
            else:
                problems.append(Problem(f"unknown target block {target!r}", str(block_id), field))
    if start is None:
        return problems
    if start not in graph:
        problems.append(Problem(f"start block {start!r} does not exist", field="start"))
        return problems
    reachable = nx.descendants(graph, start) | {start}
    for block_id in graph.nodes:
        if block_id not in reachable:
            problems.append(Problem("unreachable from the start block", block_id))
    problems.extend(_break_problems(start, specs))
    return problems


def _raw_targets(body: Any, registry: BlockRegistry) -> list[tuple[str, str]]:
    """``(field, target)`` of a block that did not validate, as far as its fields read:
    ``next``, ``on_error`` and whatever port any registered block type declares."""
    if not isinstance(body, Mapping):
        return []
    found: dict[str, Any] = {key: body.get(key) for key in ("next", "on_error")}
    for name in registry:
        definition = registry.get(name)
        if definition is not None:
            found.update((port.field, port.target) for port in definition.params.raw_ports(body))
    return [(field, target) for field, target in found.items() if isinstance(target, str)]


def _break_problems(start: str, specs: Mapping[str, BlockSpec]) -> list[Problem]:
    """``break`` must sit on a loop body's path, not past a parallel branch's entry."""
    seen: set[tuple[str, str]] = set()
    pending = [(start, "main")]
    problems: dict[str, Problem] = {}
    while pending:
        block_id, context = pending.pop()
        spec = specs.get(block_id)
        if spec is None or (block_id, context) in seen:
            continue
        seen.add((block_id, context))
        if spec.type == "break" and context != "loop":
            message = (
                "'break' may not cross a parallel branch"
                if context == "branch"
                else "'break' outside a loop"
            )
            problems.setdefault(block_id, Problem(message, block_id))
        bodies = spec.bodies()
        body_targets = {target for _, target in bodies}
        for _, target in spec.targets():
            if target not in body_targets:
                pending.append((target, context))
        pending.extend((target, body_context) for body_context, target in bodies)
    return list(problems.values())
