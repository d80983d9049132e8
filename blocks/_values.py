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
from functools import lru_cache
from typing import Any

from cel_expr_python import cel
from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from ._select import MISS, select, selected_fields, selection

__all__ = ["CelTypes", "Expression", "ExpressionError", "Template"]

Scope = Mapping[str, Any]

#: The most list elements (in all) or map entries (in one map) the data handed to one
#: evaluation may hold when the expression builds lists with ``map`` or ``filter``. The
#: runtime builds those lists by copying the accumulator on every iteration, so their
#: cost grows with the square of the range: 1,000 elements take about 25 ms, 3,000 about
#: 250 ms. Every other comprehension is bounded by the runtime's own budget of 10,000
#: iterations, which it reaches in a few milliseconds.
MAX_LIST_BUILDING_ELEMENTS = 1_000
COST_LIMIT = "cost limit reached"


class ExpressionError(Exception):
    """An expression failed while it was evaluated; names the expression."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"expression {source!r} failed: {detail}")
        self.source = source
        self.detail = detail


class CelTypes:
    """Declared CEL types of the names expressions read, for :meth:`Expression.check`.

    Keys are names, top-level (``inputs``) or qualified (``inputs.price``); values are
    ``int``, ``double``, ``string``, ``bool``, ``list``, ``map`` or ``dyn``. A name that is
    not declared is dynamic, so ``vars``, ``run`` and loop variables need no entry.
    """

    __slots__ = ("declared",)

    def __init__(self, declared: Mapping[str, str] | None = None) -> None:
        for name, kind in (declared or {}).items():
            if kind not in _TYPES:
                raise ValueError(f"unknown CEL type {kind!r} for {name!r}")
        self.declared: tuple[tuple[str, str], ...] = tuple(sorted((declared or {}).items()))

    @classmethod
    def from_inputs_schema(cls, schema: Mapping[str, Any] | None) -> CelTypes:
        """The types an ``inputs`` JSON Schema gives: ``integer`` → int, ``number`` →
        double, ``string``, ``boolean`` → bool, ``array`` → list, ``object`` → map, with
        the properties of objects declared as ``inputs.name``, at any depth. A property
        of several or no types, or whose name is not a CEL identifier, stays dynamic."""
        declared: dict[str, str] = {}
        if schema:
            _declare(schema, "inputs", declared)
        return cls(declared)

    def __repr__(self) -> str:
        return f"CelTypes({dict(self.declared)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CelTypes) and other.declared == self.declared

    def __hash__(self) -> int:
        return hash(self.declared)


_SCHEMA_TYPES = {
    "integer": "int",
    "number": "double",
    "string": "string",
    "boolean": "bool",
    "array": "list",
    "object": "map",
}

#: CEL's reserved words, which cannot be selected as ``inputs.word``
_RESERVED = frozenset(
    {
        *("as", "break", "const", "continue", "else", "false", "for", "function", "if"),
        *("import", "in", "let", "loop", "namespace", "null", "package", "return", "true"),
        *("var", "void", "while"),
    }
)
_TYPES = {
    "int": cel.Type.INT,
    "double": cel.Type.DOUBLE,
    "string": cel.Type.STRING,
    "bool": cel.Type.BOOL,
    "list": cel.Type.List(cel.Type.DYN),
    "map": cel.Type.Map(cel.Type.STRING, cel.Type.DYN),
    "dyn": cel.Type.DYN,
}


def _declare(schema: Mapping[str, Any], name: str, declared: dict[str, str]) -> None:
    given = schema.get("type") if isinstance(schema, Mapping) else None
    kind = _SCHEMA_TYPES.get(given) if isinstance(given, str) else None
    if kind is None:
        return
    declared[name] = kind
    properties = schema.get("properties")
    if kind == "map" and isinstance(properties, Mapping):
        for field, subschema in properties.items():
            if _IDENTIFIER.fullmatch(field) and field not in _RESERVED:
                _declare(subschema, f"{name}.{field}", declared)


@lru_cache(maxsize=256)
def _environment(variables: tuple[tuple[str, str], ...]) -> Any:
    return cel.NewEnv(variables={name: _TYPES[kind] for name, kind in variables})


_MIXED_COMPARISON = re.compile(
    r"no matching overload for '_(?:==|!=|<|<=|>|>=|\?_:)_' applied to "
    r"'\((?:bool, )?(?:int|uint|double), (?:int|uint|double)\)'"
)
_UNDECLARED = re.compile(r"undeclared reference to '([^']+)'")
_PROBLEM = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*)")


def _problems(exc: Exception) -> list[str]:
    """The checker's messages, one per problem, without the echoed source."""
    found = [f"column {column}: {text}" for _, column, text in _PROBLEM.findall(str(exc))]
    return found or [_describe(str(exc))]


class Expression:
    """A compiled CEL expression.

    Only the top-level names the expression references are handed to CEL, so the
    cost of an evaluation does not grow with unrelated variables in scope.
    """

    __slots__ = ("_builds_lists", "_fields", "_names", "_program", "_select", "source")

    def __init__(self, source: str) -> None:
        if not isinstance(source, str):
            raise TypeError(f"an expression must be a string, not {type(source).__name__}")
        if not source.strip():
            raise ValueError("an expression may not be empty")
        self.source = source
        self._names = _referenced_names(source)
        declared = tuple((name, "dyn") for name in self._names)
        try:
            self._program = _environment(declared).compile(source)
        except RuntimeError:
            # A type problem even with every name dynamic (``1 + 2.5``) fails when it is
            # evaluated, as before; :meth:`check` reports it at validation.
            self._program = _environment(declared).compile(source, disable_check=True)
        self._builds_lists = _BUILDS_LISTS.search(source) is not None
        # For ``vars`` and ``inputs``: the fields the expression reads, when it only
        # ever reads them as ``vars.name``. CEL converts every value it is handed, so
        # handing it just those fields keeps an evaluation's cost independent of how
        # many variables the run holds.
        self._fields = {
            name: fields
            for name in ("vars", "inputs")
            if name in self._names and (fields := selected_fields(source, name)) is not None
        }
        # ``vars.x``: read with dict look-ups when the answer is certain to be CEL's
        self._select = selection(source, self._names)

    @property
    def names(self) -> tuple[str, ...]:
        """Top-level names the expression references."""
        return self._names

    def check(self, types: CelTypes) -> str | None:
        """Type-check with ``types`` declared (every other name dynamic): None when the
        expression type-checks, else a problem naming the expression and the fix."""
        declared = dict(types.declared)
        variables = {name: "dyn" for name in self._names} | declared
        source = self.source
        if any(name.startswith("inputs.") for name in declared):
            # ``has(inputs.a)`` would be typed as ``inputs.a`` itself once qualified
            # names are declared; the same-length alias keeps columns right.
            source = _HAS_INPUTS.sub(r"\1_nputs", source)
            variables["_nputs"] = "map"
        try:
            _environment(tuple(sorted(variables.items()))).compile(source)
        except RuntimeError as exc:
            # the runtime compares an int with a double (``inputs.amount > 1000``); only
            # arithmetic that mixes them fails, so only that is a problem
            found = [p for p in _problems(exc) if not _MIXED_COMPARISON.search(p)]
            if not found:
                return None
            problems = "; ".join(found)
            hint = ""
            if "overload" in problems and "int" in problems and "double" in problems:
                hint = " (an int and a double do not mix: write 2.0 or double(…))"
            return f"expression {self.source!r} does not type-check: {problems}{hint}"
        return None

    def evaluate(self, scope: Scope) -> Any:
        """Evaluate in ``scope``; any failure becomes an :class:`ExpressionError`."""
        if self._select is not None and (value := select(scope, self._select)) is not MISS:
            return value
        context = {name: scope[name] for name in self._names if name in scope}
        for name, fields in self._fields.items():
            value = context.get(name)
            if type(value) is dict:
                context[name] = {field: value[field] for field in fields if field in value}
        if self._builds_lists and _exceeds(context, MAX_LIST_BUILDING_ELEMENTS):
            raise ExpressionError(
                self.source,
                f"{COST_LIMIT}: map() and filter() may range over at most "
                f"{MAX_LIST_BUILDING_ELEMENTS:,} list elements in one evaluation",
            )
        try:
            result = self._program.eval(data=context)
            if type(value := result.plain_value()) is str and result.type() == _ERROR:  # slow
                raise ExpressionError(self.source, _describe(str(result.value())))
            return value
        except ExpressionError:
            raise
        except Exception as exc:
            raise ExpressionError(self.source, _describe(str(exc) or type(exc).__name__)) from exc

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
            # CEL text; YAML reads ``if: true`` or ``while: 1`` as a scalar, taken as CEL too
            json_schema_input_schema=core_schema.union_schema([kind() for kind in _SCALAR_TEXT]),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda e: e.source),
        )


_ERROR = cel.Type.ERROR  # asked of a result only when its value is a string (an error's is)
_SCALAR_TEXT = (core_schema.str_schema, core_schema.bool_schema, core_schema.float_schema)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


_STATUS = re.compile(r"^[A-Z_]+: |\s*\[[A-Z_]+\]$")
_BUILDS_LISTS = re.compile(r"\.\s*(?:map|filter)\s*\(")
_HAS_INPUTS = re.compile(r"((?<![A-Za-z0-9_.])has\s*\(\s*)inputs(?![A-Za-z0-9_])")
_WORDING = {
    "divide by zero": "division by zero",
    "Iteration budget exceeded": f"{COST_LIMIT}: more than 10,000 comprehension iterations",
}


def _describe(text: str) -> str:
    """The runtime's message without its status code, in the words tests and docs use."""
    text = _STATUS.sub("", text.strip().splitlines()[0] if text.strip() else "")
    for theirs, ours in _WORDING.items():
        text = text.replace(theirs, ours)
    return text or "evaluation failed"


def _referenced_names(source: str) -> tuple[str, ...]:
    """Top-level names ``source`` reads, as the checker finds them with none declared;
    a syntax error is a :class:`ValueError` naming the expression."""
    environment = _environment(())
    try:
        environment.compile(source, disable_check=True)  # parses, expands macros
    except RuntimeError as exc:
        detail = _problems(exc)[0]
        raise ValueError(f"expression {source!r} does not compile: {detail}") from exc
    try:
        environment.compile(source)
    except RuntimeError as exc:
        names = (match.split(".")[0] for match in _UNDECLARED.findall(str(exc)))
        return tuple(dict.fromkeys(names))
    return ()


def _exceeds(value: Any, budget: int) -> bool:
    """Whether the lists in ``value`` hold more than ``budget`` elements in all (lists
    can be concatenated into one range), or one map more than ``budget`` entries."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            budget -= len(item)
            if budget < 0:
                return True
            pending.extend(item)
        elif isinstance(item, dict):
            if len(item) > budget:
                return True
            pending.extend(item.values())
    return False


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

    def check(self, types: CelTypes) -> tuple[str, ...]:
        """The problems :meth:`Expression.check` finds in the template's expressions."""
        return tuple(
            problem for expression in self.expressions if (problem := expression.check(types))
        )

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
