"""Selections read without the CEL runtime: ``vars.x``, ``inputs.order.id``.

An expression that is nothing but a selection path on ``vars`` or ``inputs`` is the
commonest there is (``return: {total: "=vars.total"}``), and handing it to CEL costs a
few microseconds of conversion both ways. :func:`select` reads such a path with plain
dict look-ups, but only where the result is certain to be exactly CEL's: every step a
key found in a ``dict``, the value a plain JSON scalar, and whatever CEL would have been
handed (the selected field, which for a deeper path is a whole object) plain JSON too.
Anything else — a missing key, a list on the way, a big integer, a value of another
type — answers :data:`MISS`, and the caller asks CEL, for its exact value or error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["MISS", "select", "selected_fields", "selection"]

MISS: Final[Any] = object()
"""What :func:`select` answers when CEL must decide."""

_PATH = re.compile(r"(vars|inputs)((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
_INT64 = (-(1 << 63), (1 << 63) - 1)
_SCALARS = (str, float, bool, type(None))
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CHECKED_NODES = 64  # a deeper path's first field is checked plain JSON up to this size


def selection(source: str, names: tuple[str, ...]) -> tuple[str, ...] | None:
    """The keys of ``source`` when it is only a selection path on ``vars`` or
    ``inputs`` (``("vars", "x")`` for ``vars.x``), else None."""
    match = _PATH.fullmatch(source.strip())
    if match is None or names != (match.group(1),):
        return None
    return (match.group(1), *match.group(2)[1:].split("."))


def _scalar(value: Any) -> bool:
    kind = type(value)
    if kind is int:
        return bool(_INT64[0] <= value <= _INT64[1])
    return kind in _SCALARS


def _plain(value: Any) -> bool:
    """Whether ``value`` is small plain JSON (str keys, lists, JSON scalars) that CEL
    converts as it is."""
    pending = [value]
    budget = _CHECKED_NODES
    while pending:
        item = pending.pop()
        budget -= 1
        if budget < 0:
            return False
        kind = type(item)
        if kind is dict:
            if any(type(key) is not str for key in item):
                return False
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
        elif not _scalar(item):
            return False
    return True


def select(scope: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` in ``scope`` as CEL would give it, or :data:`MISS`."""
    value = scope.get(path[0], MISS)
    if type(value) is not dict:
        return MISS
    value = value.get(path[1], MISS)
    if len(path) > 2:
        # CEL would convert this whole field: it must be plain for the answers to agree
        if value is MISS or not _plain(value):
            return MISS
        for key in path[2:]:
            if type(value) is not dict:
                return MISS
            value = value.get(key, MISS)
    if value is MISS or not _scalar(value):
        return MISS
    return value


def selected_fields(source: str, name: str) -> tuple[str, ...] | None:
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
