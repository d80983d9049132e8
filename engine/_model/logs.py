"""The project's loggers: structlog's, imported on the first event that is not dropped.

Every module logs through ``get_logger(name)``, which returns a :class:`Logger`: a
proxy that resolves to ``structlog.get_logger(name)`` (bound to its context, if it has
one) the first time it emits, and delegates every event to it from then on. Importing
the engine therefore imports no structlog (nor the rich console structlog loads
whenever rich is installed).

The CLI configures structlog through :func:`configured`. When structlog is already
imported (an application, or a test with ``structlog.testing.capture_logs``), the
configuration is applied at once, exactly as ``structlog.configure`` would. Otherwise it
is kept with its level: an event below that level is dropped without importing
structlog, and the first event at or above it (or any event once something else has
imported structlog) imports structlog, applies the configuration, and is logged. Either
way the configuration that was there before is restored at the end.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Logger", "configured", "get_logger", "keeps_loggers"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _Deferred:
    """A configuration not applied yet, its level, and what it replaced once applied."""

    def __init__(self, level: int, configure: Callable[[], None]) -> None:
        self.level = level
        self.configure = configure
        self.saved: dict[str, Any] | None = None

    def drops(self, level: int) -> bool:
        return level < self.level and "structlog" not in sys.modules

    def apply(self) -> None:
        global _deferred
        import structlog

        _deferred = None
        self.saved = structlog.get_config()
        self.configure()


_deferred: _Deferred | None = None


@contextmanager
def configured(level: int, configure: Callable[[], None]) -> Iterator[None]:
    """structlog configured by ``configure`` (whose loggers drop events below ``level``)
    for the block's duration, and as it was before afterwards."""
    global _deferred
    pending = _Deferred(level, configure)
    if "structlog" in sys.modules:
        pending.apply()
    else:
        _deferred = pending
    try:
        yield
    finally:
        if _deferred is pending:
            _deferred = None
        if pending.saved is not None:
            import structlog

            structlog.configure(**pending.saved)


def settle() -> None:
    """Apply a pending configuration now if something has imported structlog: code that
    logs with structlog directly (a block plugin, say) then sees the configured one."""
    pending = _deferred
    if pending is not None and "structlog" in sys.modules:
        pending.apply()


def keeps_loggers() -> bool:
    """Whether structlog keeps a logger once bound (``cache_logger_on_first_use``)."""
    return bool(_structlog().get_config()["cache_logger_on_first_use"])


def get_logger(name: str) -> Logger:
    """The logger ``name``: structlog's ``get_logger(name)``, imported on first use."""
    return Logger(name, {})


def _structlog() -> Any:
    """structlog, imported, with a pending configuration applied."""
    pending = _deferred
    if pending is not None:
        pending.apply()
    import structlog

    return structlog


class Logger:
    """A structlog logger resolved on its first event that a pending configuration does
    not drop; :meth:`bind` adds context without resolving."""

    __slots__ = ("_context", "_logger", "_name")

    def __init__(self, name: str, context: dict[str, Any]) -> None:
        self._name = name
        self._context = context
        self._logger: Any = None

    def bind(self, **values: Any) -> Logger:
        return Logger(self._name, {**self._context, **values})

    def emits(self, level: int) -> bool:
        """False when an event of ``level`` would be dropped without structlog."""
        pending = _deferred
        return pending is None or not pending.drops(level)

    def resolve(self) -> Any:
        """The structlog logger itself (structlog's lazy proxy when there is no context,
        which follows configuration changes; bound once, like ``bind``, when there is)."""
        logger = self._logger
        if logger is None:
            logger = _structlog().get_logger(self._name)
            if self._context:
                logger = logger.bind(**self._context)
            self._logger = logger
        return logger

    def _emit(self, method: str, event: str, fields: dict[str, Any]) -> Any:
        if not self.emits(_LEVELS[method]):
            return None
        return getattr(self.resolve(), method)(event, **fields)

    def debug(self, event: str, **fields: Any) -> Any:
        return self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> Any:
        return self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> Any:
        return self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> Any:
        return self._emit("error", event, fields)

    def exception(self, event: str, **fields: Any) -> Any:
        return self._emit("exception", event, fields)

    def critical(self, event: str, **fields: Any) -> Any:
        return self._emit("critical", event, fields)
