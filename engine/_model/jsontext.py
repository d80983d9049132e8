"""JSON text going out — log lines and HTTP answers — written by orjson where it can.

orjson writes the same JSON as the standard library for the values these carry, in a
fraction of the time, which a server pays at every request (two log lines and an
answer). Where it refuses a value the standard library would write (an integer over
64 bits, a lone surrogate in a string), the standard library writes it, so nothing
that was written before fails now. Dataclasses and datetimes are handed to
``default`` as the standard library hands them, not written out field by field.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import orjson

__all__ = ["UtcStamper", "dumps_bytes", "log_bytes", "log_line"]

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


class UtcStamper:
    """structlog's ``TimeStamper(fmt="iso", utc=True)``, writing the same text in the
    same key, ``timestamp``: the time now in UTC, ``2026-12-03T14:00:07.416528Z`` (no
    fraction at a whole second, as ``datetime.isoformat`` writes it).

    The date and the time of day to the second are written once a second, and only
    the microseconds at each event: a line costs about 1 µs less, and a server writes
    two a request. The clock is the one ``datetime.now`` reads, rounded down to the
    microsecond as it rounds.
    """

    __slots__ = ("_clock", "_second")

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._second: tuple[int, str] = (-1, "")  # one tuple: threads read it whole

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        second, micro = divmod(self._clock() // 1000, 1_000_000)
        seen, text = self._second
        if second != seen:
            text = dt.datetime.fromtimestamp(second, dt.UTC).isoformat()[:-6]
            self._second = (second, text)
        event["timestamp"] = f"{text}.{micro:06d}Z" if micro else f"{text}Z"
        return event
