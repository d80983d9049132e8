"""A flow's ``inputs`` JSON Schema: checked when the document is validated, and the
inputs of every activation validated against it.

jsonschema decides, and it is the only source of error messages; but it is not free to
import, and most ``inputs`` schemas only use a handful of keywords (``type``,
``properties``, ``required``, ``enum``, bounds). For a schema written only with those,
:func:`plain` says it is valid as it is (no need to check it against the metaschema)
and :class:`InputsValidator` first runs a plain check that can only say "valid": any
input it cannot vouch for, and any schema using another keyword, goes to jsonschema.
So a ``flowwarden run`` of such a flow never loads jsonschema, and whatever jsonschema
would refuse is still refused with jsonschema's own words.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import Problem

if TYPE_CHECKING:
    import jsonschema
    import jsonschema.protocols

__all__ = ["InputsValidator", "plain", "schema_problems"]

_SIMPLE_TYPES = frozenset({"array", "boolean", "integer", "null", "number", "object", "string"})
_SCALARS = (str, int, float, bool, type(None))
_VALUES = frozenset({*_SCALARS, dict, list})  # exact types: a subclass goes to jsonschema
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems")
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_PLAIN_KEYWORDS = frozenset(
    {"type", "properties", "required", "additionalProperties", "items", "enum", "const"}
    | {"title", "description", "default", *_COUNTS, *_BOUNDS}
)


def plain(schema: Any) -> bool:
    """Whether ``schema`` uses only the plain keywords, each with a value of the kind the
    metaschema requires: such a schema is valid, and has no ``$ref`` (nor ``$schema``:
    it is read as the 2020-12 draft, jsonschema's default)."""
    if isinstance(schema, bool):
        return True
    if type(schema) is not dict or not schema.keys() <= _PLAIN_KEYWORDS:
        return False
    if "type" in schema:
        kinds = schema["type"] if type(schema["type"]) is list else [schema["type"]]
        if not kinds or not all(type(k) is str and k in _SIMPLE_TYPES for k in kinds):
            return False
        if len(set(kinds)) != len(kinds):
            return False
    properties = schema.get("properties", {})
    if type(properties) is not dict or not all(type(name) is str for name in properties):
        return False
    if not all(plain(sub) for sub in properties.values()):
        return False
    required = schema.get("required", [])
    if type(required) is not list or not all(type(name) is str for name in required):
        return False
    if len(set(required)) != len(required):
        return False
    if not all(plain(schema[key]) for key in ("additionalProperties", "items") if key in schema):
        return False
    if type(schema.get("enum", [])) is not list:
        return False
    if not all(type(schema.get(key, "")) is str for key in ("title", "description")):
        return False
    counts = [schema[key] for key in _COUNTS if key in schema]
    bounds = [schema[key] for key in _BOUNDS if key in schema]
    return all(type(n) is int and n >= 0 for n in counts) and all(
        type(n) in (int, float) for n in bounds
    )


def _conforms(value: Any, schema: Any) -> bool:
    """``True`` only when ``value`` is valid under the plain ``schema``, with the same
    comparisons jsonschema makes; ``False`` means "not sure": jsonschema will tell."""
    if schema is True:
        return True
    kind = type(value)
    if schema is False or kind not in _VALUES:
        return False
    if "type" in schema:
        kinds = schema["type"]
        if not any(_is(value, k) for k in (kinds if type(kinds) is list else [kinds])):
            return False
    for key in ("enum", "const"):
        if key in schema:
            choices = schema[key] if key == "enum" else [schema[key]]
            if not any(type(c) is kind and kind in _SCALARS and c == value for c in choices):
                return False
    if kind is str:
        length = len(value)
        return bool(schema.get("minLength", 0) <= length <= schema.get("maxLength", length))
    if kind in (int, float):
        return not (
            value < schema.get("minimum", value)
            or value > schema.get("maximum", value)
            or ("exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"])
            or ("exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"])
        )
    if kind is list:
        size = len(value)
        if size < schema.get("minItems", 0) or size > schema.get("maxItems", size):
            return False
        items = schema.get("items", True)
        return all(_conforms(item, items) for item in value)
    if kind is dict:
        if not all(name in value for name in schema.get("required", ())):
            return False
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        return all(
            type(name) is str and _conforms(item, properties.get(name, extra))
            for name, item in value.items()
        )
    return True


def _is(value: Any, kind: str) -> bool:
    """jsonschema's type checks, for the plain Python values parsed JSON is made of."""
    if kind == "integer":
        return type(value) is int or (type(value) is float and value.is_integer())
    if kind == "number":
        return type(value) in (int, float)
    expected = {"string": str, "object": dict, "array": list, "boolean": bool}.get(kind)
    return value is None if expected is None else type(value) is expected


class InputsValidator:
    """Validates inputs against one ``inputs`` schema; ``iter_errors`` as jsonschema's."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._plain = plain(schema)
        self._full: jsonschema.protocols.Validator | None = None
        if not self._plain:  # built with the program, as jsonschema alone always was
            self.full()

    def iter_errors(self, instance: Any) -> Iterator[jsonschema.ValidationError]:
        """Nothing for inputs the plain check vouches for; else jsonschema's errors."""
        if self._plain and _conforms(instance, self.schema):
            return iter(())
        return self.full().iter_errors(instance)

    def full(self) -> jsonschema.protocols.Validator:
        """jsonschema's validator of the schema, built on first use."""
        if self._full is None:
            import jsonschema
            import referencing

            cls = jsonschema.validators.validator_for(
                self.schema, default=jsonschema.Draft202012Validator
            )
            # an empty registry: a reference resolves inside the schema or not at all, so
            # no activation ever fetches anything
            self._full = cls(self.schema, registry=referencing.Registry())
        return self._full


def schema_problems(schema: dict[str, Any]) -> list[Problem]:
    """What is wrong with an ``inputs`` schema: not a JSON Schema, or a ``$ref`` to
    anything outside itself (nothing is fetched at activation)."""
    if not plain(schema):
        import jsonschema

        validator = jsonschema.validators.validator_for(
            schema, default=jsonschema.Draft202012Validator
        )
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
