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
import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from blocks import (
    FLOW_NAME_PATTERN,
    BlockRegistry,
    CelTypes,
    Expression,
    Params,
    Template,
    is_flow_name,
)

from .errors import InvalidFlow, Problem, suggestion
from .graph import graph_problems
from .inputs import schema_problems
from .limits import (
    MAX_DOCUMENT_BYTES,
    MAX_DOCUMENT_NODES,
    MAX_NESTING,
    Marks,
    check_value,
    load_yaml_marked,
)

__all__ = [
    "BlockSpec",
    "FlowDocument",
    "RetryPolicy",
    "locate",
    "parse_document",
    "read_document",
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
    return read_document(source, max_nesting=max_nesting, max_nodes=max_nodes, max_bytes=max_bytes)[
        0
    ]


def read_document(
    source: Mapping[str, Any] | str | bytes | Path,
    *,
    max_nesting: int = MAX_NESTING,
    max_nodes: int = MAX_DOCUMENT_NODES,
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> tuple[dict[str, Any], Marks | None]:
    """:func:`parse_document`, also returning where each value is in the text (None
    for a document given as a mapping), for :func:`validate_document`'s ``marks``."""
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
    marks: Marks | None = None
    if isinstance(source, str):
        try:
            loaded, marks = _load_marked(source, max_nesting, max_nodes, max_bytes)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            detail = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            problem = Problem(f"the document does not parse{where}: {detail}", file=file)
            if mark is not None:
                problem = problem.at(mark.line + 1, mark.column + 1)
            raise InvalidFlow([problem]) from exc
    else:
        loaded = source
        try:
            check_value(loaded, max_nesting=max_nesting, max_nodes=max_nodes)
        except ValueError as exc:
            raise InvalidFlow([Problem(f"the document is over a limit: {exc}", file=file)]) from exc
    if not isinstance(loaded, Mapping):
        kind = type(loaded).__name__
        problem = Problem(f"a flow document is a mapping, not {kind}", file=file)
        raise InvalidFlow([locate(problem, marks)])
    name = loaded.get("flow")
    if not is_flow_name(name):
        message = f"'flow' must be a name matching {FLOW_NAME_PATTERN}, got {name!r}"
        raise InvalidFlow([locate(Problem(message, field="flow", file=file), marks)])
    if marks is not None:
        marks = dict(marks)  # the caller's own, like the document
    return copy.deepcopy(dict(loaded)), marks  # the version owns its document


@functools.lru_cache(maxsize=1)
def _load_marked(text: str, max_nesting: int, max_nodes: int, max_bytes: int) -> tuple[Any, Marks]:
    """The last text read, kept: a workspace reads each document's name, then adds the
    same text as a version, and YAML is the slowest part of both. What is kept is never
    handed out (:func:`read_document` copies it); a text that does not parse is not kept."""
    return load_yaml_marked(text, max_nesting=max_nesting, max_nodes=max_nodes, max_bytes=max_bytes)


def validate_document(
    raw: Mapping[str, Any], registry: BlockRegistry, *, marks: Marks | None = None
) -> tuple[FlowDocument | None, list[Problem]]:
    """Validate a parsed document; returns the frozen document (when usable) and problems.

    The document is ``None`` only when a problem makes it impossible to build (a
    missing ``start``, no ``blocks``); otherwise problems make the version INVALID.
    With the ``marks`` of :func:`read_document`, each problem has its line and column.
    """
    document, problems = _validate(raw, registry)
    return document, [locate(problem, marks) for problem in problems]


def _validate(
    raw: Mapping[str, Any], registry: BlockRegistry
) -> tuple[FlowDocument | None, list[Problem]]:
    problems: list[Problem] = []
    header_raw = {key: raw[key] for key in _TOP_FIELDS if key in raw}
    for key in raw:
        if key not in _TOP_FIELDS:
            message = f"unknown field{suggestion(str(key), _TOP_FIELDS)}"
            problems.append(Problem(message, field=str(key)))
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
        wrong = schema_problems(header.inputs)
        problems.extend(wrong)
        if not wrong:
            problems.extend(_type_problems(specs, CelTypes.from_inputs_schema(header.inputs)))
    if header is not None and header.callable_by is not None:
        for name in header.callable_by:
            if not is_flow_name(name):
                problems.append(Problem(f"{name!r} is not a flow name", field="callable_by"))
    start = raw.get("start") if isinstance(raw.get("start"), str) else None
    if isinstance(blocks_raw, Mapping):
        problems.extend(graph_problems(start, blocks_raw, specs, registry))
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
        hint = suggestion(kind, registry) or f" (known: {', '.join(sorted(registry))})"
        problems.append(Problem(f"unknown block type {kind!r}{hint}", block_id, "type"))
        return None
    params_raw = {k: v for k, v in body.items() if k not in _COMMON_FIELDS}
    before = len(problems)
    try:
        params = definition.params.model_validate(params_raw)
    except ValidationError as exc:
        problems.extend(_problems(exc, block_id, _fields(definition.params) | _COMMON_FIELDS))
        params = None
    common = {k: v for k, v in body.items() if k in _COMMON_FIELDS and k != "type"}
    try:
        if params is None:
            raise _Skip
        return BlockSpec(id=block_id, type=kind, params=params, **common)
    except ValidationError as exc:
        problems.extend(_problems(exc, block_id, _COMMON_FIELDS))
    except _Skip:
        try:  # still report problems in the common fields
            BlockSpec(id=block_id, type=kind, params=definition.params.model_construct(), **common)
        except ValidationError as exc:
            problems.extend(_problems(exc, block_id, _COMMON_FIELDS))
    assert len(problems) > before
    return None


class _Skip(Exception):
    pass


def _fields(model: type[BaseModel]) -> frozenset[str]:
    return frozenset((info.alias or name) for name, info in model.model_fields.items())


def _problems(
    exc: ValidationError, block: str | None = None, known: frozenset[str] = frozenset()
) -> list[Problem]:
    """Problems of a pydantic error; an unknown field names the closest of ``known``
    (at the top of the model) or of the retry policy's fields."""
    found = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        field = ".".join(str(part) for part in loc) or None
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            near = known if len(loc) == 1 else frozenset()
            if len(loc) == 2 and loc[0] == "retry":
                near = _fields(RetryPolicy)
            message = f"unknown field{suggestion(str(loc[-1]), near)}"
        elif error["type"] == "missing":
            message = "required field is missing"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        found.append(Problem(message, block, field))
    return found


def _type_problems(specs: Mapping[str, BlockSpec], types: CelTypes) -> list[Problem]:
    """Every expression and template parameter type-checked with the ``inputs`` types."""
    if not types.declared:
        return []
    problems: list[Problem] = []
    for spec in specs.values():
        fields = type(spec.params).model_fields
        for name, info in fields.items():
            field = info.alias or name
            pending: list[Any] = [getattr(spec.params, name)]
            while pending:
                value = pending.pop()
                if isinstance(value, Expression):
                    found: tuple[str, ...] = tuple(filter(None, [value.check(types)]))
                elif isinstance(value, Template):
                    found = value.check(types)
                else:
                    if isinstance(value, list | tuple):
                        pending.extend(reversed(value))
                    elif isinstance(value, Mapping):
                        pending.extend(reversed(list(value.values())))
                    continue
                problems.extend(Problem(message, spec.id, field) for message in found)
    return problems


_PARTS = re.compile(r"[^.\[\]]+")


def locate(problem: Problem, marks: Marks | None) -> Problem:
    """The problem at the line and column of its key or value: the value of its field,
    the key of an unknown field, of a block without a field, or of the nearest
    enclosing key of a field that is missing (the document's start for a missing
    top-level one)."""
    if marks is None:
        return problem
    path: tuple[str, ...] = ("blocks", problem.block) if problem.block is not None else ()
    if problem.field:
        path += tuple(_PARTS.findall(problem.field))
    key = problem.field is None or problem.message.startswith("unknown field")
    for length in range(len(path), -1, -1):
        entry = marks.get(path[:length])
        if entry is None:
            continue
        key_mark, value_mark = entry
        mark = value_mark if (length == len(path) and not key) or key_mark is None else key_mark
        return problem.at(*mark)
    return problem
