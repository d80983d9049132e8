"""JSON text going out — log lines and HTTP answers — written by orjson where it can.

orjson writes the same JSON as the standard library for the values these carry, in a
fraction of the time, which a server pays at every request (two log lines and an
answer). Where it refuses a value the standard library would write (an integer over
64 bits, a lone surrogate in a string), the standard library writes it, so nothing
that was written before fails now. Dataclasses and datetimes are handed to
``default`` as the standard library hands them, not written out field by field.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["dumps_bytes", "log_bytes", "log_line"]

_OPTIONS = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
)


def log_bytes(value: Any, *, default: Callable[[Any], Any], **_: Any) -> bytes:
    """structlog's ``JSONRenderer`` serializer: one event as a line of JSON, in UTF-8
    bytes for its ``BytesLogger``, which writes them as they are."""
    try:
        return orjson.dumps(value, default=default, option=_OPTIONS)
    except TypeError:  # orjson's refusal (JSONEncodeError is one)
        return json.dumps(value, default=default).encode()


def log_line(value: Any, *, default: Callable[[Any], Any], **_: Any) -> str:
    """:func:`log_bytes` as text, for a logger that writes to a text stream."""
    return log_bytes(value, default=default).decode()


def dumps_bytes(value: Any) -> bytes | None:
    """``value`` as compact UTF-8 JSON, non-finite numbers written ``null``; None when
    orjson refuses it (the caller then writes it as before)."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except TypeError:
        return None
