"""A JSON Schema (draft 2020-12) of flow documents, for editors: the header fields
and, for each registered block type, its common fields and its parameters, taken from
the block's own pydantic model. A document this schema refuses does not validate;
the engine's validation (targets, reachability, expressions) goes further."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from blocks import FLOW_NAME_PATTERN, BlockRegistry

from .document import RetryPolicy

__all__ = ["document_schema"]

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_BLOCK_ID = {"type": "string", "minLength": 1, "maxLength": 128}


def document_schema(registry: BlockRegistry) -> dict[str, Any]:
    """The schema of documents whose blocks are those of ``registry``."""
    names = sorted(registry)
    definitions = [registry.get(name) for name in names]
    models: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (d.params, "validation") for d in definitions if d is not None
    ]
    refs, generated = models_json_schema(
        [*models, (RetryPolicy, "validation")], ref_template="#/$defs/{model}", by_alias=True
    )
    defs: dict[str, Any] = dict(generated.get("$defs", {}))
    common = {
        "next": {**_BLOCK_ID, "description": "the block the path goes on to"},
        "on_error": {**_BLOCK_ID, "description": "where the run goes on when this block fails"},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "seconds"},
        "retry": refs[(RetryPolicy, "validation")],
        "description": {"type": "string"},
    }
    selectors = []
    for name, definition in zip(names, definitions, strict=True):
        if definition is None:
            continue
        params = defs[refs[(definition.params, "validation")]["$ref"].rsplit("/", 1)[-1]]
        block: dict[str, Any] = {
            "type": "object",
            "properties": {
                "type": {"const": name},
                **params.get("properties", {}),
                **common,
            },
            "required": ["type", *params.get("required", [])],
            "additionalProperties": False,
        }
        if definition.description:
            block["description"] = definition.description
        defs[f"block-{name}"] = block
        selectors.append(
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": {"$ref": f"#/$defs/block-{name}"},
            }
        )
    defs["block"] = {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": names}},
        "allOf": selectors,
    }
    return {
        "$schema": _DIALECT,
        "title": "flowwarden flow document",
        "type": "object",
        "required": ["flow", "start", "blocks"],
        "additionalProperties": False,
        "properties": {
            "flow": {"type": "string", "pattern": FLOW_NAME_PATTERN},
            "description": {"type": "string"},
            "status": {"enum": ["READY", "LIVE", "PAUSED"]},
            "callable_by": {
                "type": "array",
                "items": {"type": "string", "pattern": FLOW_NAME_PATTERN},
            },
            "inputs": {"type": "object", "description": "a JSON Schema of the initial data"},
            "start": {"type": "string", "minLength": 1},
            "blocks": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {"$ref": "#/$defs/block"},
            },
        },
        "$defs": defs,
    }
