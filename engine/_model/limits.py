"""The one place outside data is read: JSON and YAML within the limits of section 11.

Every reader of data from outside — HTTP bodies, CLI inputs, flow documents,
``permissions.yaml``, ``tokens.yaml`` — goes through :func:`loads_json` or
:func:`load_yaml`, which refuse a value *before* anything recursive touches it:

* nesting deeper than ``max_nesting`` (64): JSON text is pre-scanned for bracket depth
  outside strings; YAML is counted while it is composed, aliases included;
* a YAML document that expands (aliases followed) to more than ``max_nodes`` nodes or
  ``max_bytes`` of scalar text; an alias to a collection still being composed (a
  recursive structure) is refused too;
* in JSON, ``NaN``, ``Infinity`` and numbers that overflow to infinity, which are not
  JSON.

The refusals are :class:`JSONLimitError` (a :class:`ValueError`, like any JSON parse
error) and :class:`YAMLLimitError` (a :class:`yaml.YAMLError` with the position), so
each entry point maps them to its own typed error with the handler it already has.
:func:`check_value` walks a Python value without recursion, for values handed over
already parsed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, Protocol, TypeVar

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import Node
from yaml.resolver import Resolver

_T = TypeVar("_T")

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_DOCUMENT_NODES",
    "MAX_NESTING",
    "JSONLimitError",
    "Marks",
    "NestingTooDeep",
    "YAMLLimitError",
    "check_value",
    "load_yaml",
    "load_yaml_marked",
    "loads_json",
]

MAX_NESTING = 64
"""How deep any JSON or YAML value from outside may nest."""

MAX_DOCUMENT_BYTES = 1_048_576
"""The largest document, as text and as scalar text after YAML aliases are expanded."""

MAX_DOCUMENT_NODES = 100_000
"""The most nodes (scalars and collections) a document may hold after aliases expand."""

# A string (with its escapes) or one bracket; brackets inside strings are skipped.
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


class JSONLimitError(ValueError):
    """JSON text that is not JSON (``NaN``, ``Infinity``) or nests too deep."""


class NestingTooDeep(JSONLimitError):
    """A value that nests deeper than the limit."""


class YAMLLimitError(yaml.MarkedYAMLError):
    """A YAML text that nests too deep, expands too far or refers to itself."""


def loads_json(text: str | bytes | bytearray, *, max_nesting: int = MAX_NESTING) -> Any:
    """``json.loads`` for outside data: strict JSON, nesting at most ``max_nesting``.

    Raises :class:`ValueError` (:class:`JSONLimitError` for a refused value,
    :class:`json.JSONDecodeError` or :class:`UnicodeDecodeError` for text that does
    not parse).
    """
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8")
    _check_json_nesting(text, max_nesting)
    if text.startswith("\ufeff"):  # as json.loads refuses it
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _DECODER.decode(text)


def _check_json_nesting(text: str, max_nesting: int) -> None:
    if text.count("[") + text.count("{") <= max_nesting:
        return  # cannot nest deeper than it has brackets
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > max_nesting:
                raise NestingTooDeep(
                    f"the value nests deeper than {max_nesting} levels "
                    f"(at character {match.start()})"
                )
        elif token in "]}":
            depth -= 1


def _no_constant(name: str) -> Any:
    raise JSONLimitError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise JSONLimitError(f"the number {text[:40]} is too large")
    return number


# One decoder for every call: ``json.loads`` with hooks builds a decoder and its
# scanner each time, which costs more than parsing a small body (it keeps no state
# between calls).
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def check_value(
    value: Any, *, max_nesting: int = MAX_NESTING, max_nodes: int | None = None
) -> None:
    """Refuse (:class:`JSONLimitError`) a parsed value nesting deeper than
    ``max_nesting`` or, when given, holding more than ``max_nodes`` values. Iterative,
    so a value built to be deep (or one that contains itself) cannot exhaust the stack.
    """
    pending: list[tuple[Any, int]] = [(value, 0)]
    seen = 0
    while pending:
        item, depth = pending.pop()
        seen += 1
        if max_nodes is not None and seen > max_nodes:
            raise JSONLimitError(f"the value holds more than {max_nodes} items")
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth >= max_nesting:
            raise NestingTooDeep(f"the value nests deeper than {max_nesting} levels")
        pending.extend((child, depth + 1) for child in children)


def load_yaml(
    text: str,
    *,
    max_nesting: int = MAX_NESTING,
    max_nodes: int = MAX_DOCUMENT_NODES,
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> Any:
    """``yaml.safe_load`` for outside data, within the limits (see the module).

    Raises :class:`yaml.YAMLError`: :class:`YAMLLimitError` for a refused text.
    """
    if len(text) > max_bytes:
        raise YAMLLimitError(problem=f"the text is over the limit of {max_bytes} bytes")
    return _read(text, (max_nesting, max_nodes, max_bytes), lambda loader: loader.get_single_data())


Mark = tuple[int, int]
Marks = dict[tuple[str, ...], tuple[Mark | None, Mark]]
"""Where each value of a document is: path (mapping keys as written, list indices as
digits) → 1-based (line, column) of its key (None for list items and the root) and of
its value."""


def load_yaml_marked(
    text: str,
    *,
    max_nesting: int = MAX_NESTING,
    max_nodes: int = MAX_DOCUMENT_NODES,
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> tuple[Any, Marks]:
    """:func:`load_yaml`, also returning the :data:`Marks` of every value, taken from
    the nodes the same bounded reader composed (JSON text is read as YAML here, so its
    positions come from the same place)."""
    if len(text) > max_bytes:
        raise YAMLLimitError(problem=f"the text is over the limit of {max_bytes} bytes")

    def read(loader: _Loading) -> tuple[Any, Marks]:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        return loader.construct_document(node), _marks(node)

    return _read(text, (max_nesting, max_nodes, max_bytes), read)


def _read(text: str, bounds: tuple[int, int, int], read: Callable[[_Loading], _T]) -> _T:
    """``read`` done with libyaml's parser when PyYAML has it (several times faster than
    the pure one), else with the pure parser. A text libyaml refuses, or that does not
    build, is read again by the pure parser, whose messages and positions are the ones a
    refusal reports; the nodes either composes are the same, with the same marks."""
    if _LibYAMLLoader is not None:
        try:
            fast = _LibYAMLLoader(text, *bounds)
            try:
                return read(fast)
            finally:
                fast.dispose()
        except (yaml.YAMLError, ValueError, OverflowError):
            pass  # read again below
    loader = _BoundedLoader(text, *bounds)
    try:
        return read(loader)
    except (ValueError, OverflowError) as exc:  # a scalar PyYAML cannot build (huge int, date)
        raise YAMLLimitError(problem=f"a value cannot be read: {exc}") from exc
    finally:
        loader.dispose()


class _Loading(Protocol):
    """What :func:`_read` asks of a loader, whichever parser it has."""

    def get_single_data(self) -> Any: ...

    def get_single_node(self) -> Node | None: ...

    def construct_document(self, node: Node) -> Any: ...

    def dispose(self) -> None: ...


def _mark(node: Node) -> Mark:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _marks(root: Node) -> Marks:
    """Every path's marks, walked without recursion; the walk is bounded by the node
    count the loader already allowed (aliases included)."""
    marks: Marks = {(): (None, _mark(root))}
    pending: list[tuple[Node, tuple[str, ...]]] = [(root, ())]
    while pending:
        node, path = pending.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                marks.setdefault((*path, name), (_mark(key), _mark(value)))
                pending.append((value, (*path, name)))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                marks.setdefault((*path, str(index)), (None, _mark(item)))
                pending.append((item, (*path, str(index))))
    return marks


class _Bounds(Composer):
    """PyYAML's composer, counting depth, nodes and scalar bytes while it composes the
    events of whichever parser it is combined with.

    An alias counts as the whole subtree it names, so an alias bomb is refused while
    it is still a few hundred nodes, before anything is built from it.
    """

    peek_event: Callable[[], Any]  # the parser's

    def _bound(self, max_nesting: int, max_nodes: int, max_bytes: int) -> None:
        self._max_nesting = max_nesting
        self._max_nodes = max_nodes
        self._max_bytes = max_bytes
        self._nodes = 0
        self._bytes = 0
        self._open: list[int] = []  # per collection being composed: its children's height
        self._sizes: dict[Node, tuple[int, int, int]] = {}  # nodes, bytes, height

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # (an unknown alias is the composer's own error)
                size = self._sizes.get(target)
                if size is None:
                    self._refuse("an alias inside the collection it names", event)
                self._grow(*size, event)
            return super().compose_node(parent, index)
        collection = isinstance(event, yaml.CollectionStartEvent)
        if collection:
            if len(self._open) >= self._max_nesting:
                self._refuse(f"the value nests deeper than {self._max_nesting} levels", event)
            self._open.append(0)
        nodes_before, bytes_before = self._nodes, self._bytes
        node = super().compose_node(parent, index)
        assert node is not None
        if collection:
            height = self._open.pop() + 1
            own_bytes = 2
        else:
            height = 0
            own_bytes = len(node.value) + 1
        self._grow(1, own_bytes, height, event)
        self._sizes[node] = (self._nodes - nodes_before, self._bytes - bytes_before, height)
        return node

    def _grow(self, nodes: int, scalar_bytes: int, height: int, event: Any) -> None:
        """Count ``nodes`` more nodes of ``scalar_bytes``, ``height`` levels deep here."""
        self._nodes += nodes
        self._bytes += scalar_bytes
        if len(self._open) + height > self._max_nesting:
            self._refuse(f"the value nests deeper than {self._max_nesting} levels", event)
        if self._nodes > self._max_nodes:
            self._refuse(f"the document expands to more than {self._max_nodes} nodes", event)
        if self._bytes > self._max_bytes:
            self._refuse(f"the document expands to more than {self._max_bytes} bytes", event)
        if self._open:
            self._open[-1] = max(self._open[-1], height)

    def _refuse(self, problem: str, event: Any) -> NoReturn:
        raise YAMLLimitError(problem=problem, problem_mark=event.start_mark)


class _BoundedLoader(_Bounds, yaml.SafeLoader):
    """The safe loader, bounded, with PyYAML's pure parser."""

    def __init__(self, text: str, max_nesting: int, max_nodes: int, max_bytes: int) -> None:
        yaml.SafeLoader.__init__(self, text)
        self._bound(max_nesting, max_nodes, max_bytes)


_LibYAMLLoader: Callable[[str, int, int, int], _Loading] | None = None
if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _CBoundedLoader(_Bounds, CParser, SafeConstructor, Resolver):
        """The safe loader, bounded, with libyaml's parser (the composer stays PyYAML's,
        which counts as it composes)."""

        def __init__(self, text: str, max_nesting: int, max_nodes: int, max_bytes: int) -> None:
            CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self._bound(max_nesting, max_nodes, max_bytes)

    _LibYAMLLoader = _CBoundedLoader
