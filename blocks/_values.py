"""CEL expressions and value templates, compiled once when a document is validated.

A field that *is* an expression (``if``, ``while``, ``items``, a router's ``value``)
holds CEL text and becomes an :class:`Expression`. A value field (``set.values``,
``return.value``, ``http.url`` …) takes any JSON and becomes a :class:`Template`: every
string in it that begins with ``=``, at any depth, is evaluated as CEL; a string that
begins with ``==`` is the literal string with one ``=`` removed. A template with no
expression in it renders to its literal value without any work.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

import cel
from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

__all__ = ["Expression", "ExpressionError", "Template"]

Scope = Mapping[str, Any]


class ExpressionError(Exception):
    """An expression failed while it was evaluated; names the expression."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"expression {source!r} failed: {detail}")
        self.source = source
        self.detail = detail


class Expression:
    """A compiled CEL expression.

    Only the top-level names the expression references are handed to CEL, so the
    cost of an evaluation does not grow with unrelated variables in scope.
    """

    __slots__ = ("_fields", "_names", "_program", "source")

    def __init__(self, source: str) -> None:
        if not isinstance(source, str):
            raise TypeError(f"an expression must be a string, not {type(source).__name__}")
        if not source.strip():
            raise ValueError("an expression may not be empty")
        try:
            program = cel.compile(source)
        except Exception as exc:  # the CEL parser reports every failure as an exception
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"expression {source!r} does not compile: {detail}") from exc
        self.source = source
        self._program = program
        self._names = tuple(program.variables())
        # For ``vars`` and ``inputs``: the fields the expression reads, when it only
        # ever reads them as ``vars.name``. CEL converts every value it is handed, so
        # handing it just those fields keeps an evaluation's cost independent of how
        # many variables the run holds.
        self._fields = {
            name: fields
            for name in ("vars", "inputs")
            if name in self._names and (fields := _selected_fields(source, name)) is not None
        }

    @property
    def names(self) -> tuple[str, ...]:
        """Top-level names the expression references (including comprehension names)."""
        return self._names

    def evaluate(self, scope: Scope) -> Any:
        """Evaluate in ``scope``; any failure becomes an :class:`ExpressionError`."""
        context = {name: scope[name] for name in self._names if name in scope}
        for name, fields in self._fields.items():
            value = context.get(name)
            if type(value) is dict:
                context[name] = {field: value[field] for field in fields if field in value}
        try:
            return self._program.execute(context)
        except Exception as exc:
            raise ExpressionError(self.source, _describe(exc)) from exc

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source_type: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(value: Any) -> Expression:
            if isinstance(value, Expression):
                return value
            if isinstance(value, bool | int | float):
                value = str(value).lower() if isinstance(value, bool) else str(value)
            if not isinstance(value, str):
                raise ValueError(f"expected CEL text, got {type(value).__name__}")
            # ``=`` never starts valid CEL, so "=x" in an expression field means "x"
            return Expression(value[1:] if value.startswith("=") else value)

        return core_schema.no_info_plain_validator_function(
            validate,
            json_schema_input_schema=core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda e: e.source),
        )


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _selected_fields(source: str, name: str) -> tuple[str, ...] | None:
    """The fields ``name.field`` the source selects, or None if ``name`` is used in any
    other way (indexed, passed whole, …) anywhere; then nothing may be left out."""
    fields: list[str] = []
    for match in re.finditer(rf"(?<![A-Za-z0-9_.]){name}(?![A-Za-z0-9_])", source):
        rest = source[match.end() :].lstrip()
        if not rest.startswith("."):
            return None
        field = _IDENTIFIER.match(rest[1:].lstrip())
        if field is None:
            return None
        fields.append(field.group())
    return tuple(dict.fromkeys(fields))


def _describe(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no such key: {exc.args[0]!r}" if exc.args else "no such key"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or type(exc).__name__


class Template:
    """A JSON value in which strings beginning with ``=`` are CEL expressions."""

    __slots__ = ("evaluate", "expressions", "is_constant", "raw", "render", "scalar_object")

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        expressions: list[Expression] = []
        render = _compile(raw, expressions)
        self.expressions: tuple[Expression, ...] = tuple(expressions)
        self.is_constant = not expressions
        literal = _literal(raw) if self.is_constant else None
        # a constant object of scalars, which ``dict.update`` can take as it is
        self.scalar_object: dict[str, Any] | None = (
            literal
            if isinstance(literal, dict)
            and all(isinstance(item, _SCALARS) for item in literal.values())
            else None
        )
        #: ``render(scope)``: the value, with every expression evaluated in ``scope``
        #: (``evaluate`` is the same function, so templates and expressions are alike).
        self.render: Callable[[Scope], Any] = _constant(literal) if self.is_constant else render
        self.evaluate: Callable[[Scope], Any] = self.render

    def __repr__(self) -> str:
        return f"Template({self.raw!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(repr(self.raw))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source_type: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def validate(value: Any) -> Template:
            return value if isinstance(value, Template) else Template(value)

        return core_schema.no_info_plain_validator_function(
            validate,
            json_schema_input_schema=core_schema.any_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda t: t.raw),
        )


_SCALARS = (str, int, float, bool, type(None))


def _constant(value: Any) -> Callable[[Scope], Any]:
    """A renderer handing out a fresh copy of a literal, as cheaply as it can be made."""
    if isinstance(value, dict):
        if all(isinstance(item, _SCALARS) for item in value.values()):
            return lambda _scope: dict(value)
        return lambda _scope: copy.deepcopy(value)
    if isinstance(value, list):
        if all(isinstance(item, _SCALARS) for item in value):
            return lambda _scope: list(value)
        return lambda _scope: copy.deepcopy(value)
    return lambda _scope: value


def _literal(raw: Any) -> Any:
    if isinstance(raw, str):
        return raw[1:] if raw.startswith("==") else raw
    if isinstance(raw, dict):
        return {key: _literal(value) for key, value in raw.items()}
    if isinstance(raw, list):
        return [_literal(value) for value in raw]
    return raw


def _compile(raw: Any, found: list[Expression]) -> Callable[[Scope], Any]:
    if isinstance(raw, str) and raw.startswith("=") and not raw.startswith("=="):
        expression = Expression(raw[1:])
        found.append(expression)
        return expression.evaluate
    if isinstance(raw, dict):
        for key in raw:
            if not isinstance(key, str):
                raise ValueError(f"object keys must be strings, got {key!r}")
        parts = [(key, _compile(value, found)) for key, value in raw.items()]
        return lambda scope: {key: part(scope) for key, part in parts}
    if isinstance(raw, list):
        items = [_compile(value, found) for value in raw]
        return lambda scope: [item(scope) for item in items]
    if raw is None or isinstance(raw, bool | int | float | str):
        value = _literal(raw)
        return lambda _scope: value
    raise ValueError(f"not a JSON value: {type(raw).__name__}")
