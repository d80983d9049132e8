"""The heap of a long-lived process: a server or a worker.

What such a process builds before it serves (modules, models, compiled flows, its
app) lives as long as it does, yet each of the collector's full passes walks all of
it again, with the event loop paused meanwhile. Once start-up is over,
:func:`settle_heap` collects what start-up left behind and moves what stays out of
the collector's reach (:func:`gc.freeze`); full passes then walk only what the
process made since. Reference counting still frees a frozen object once nothing
refers to it: only a cycle among them is never collected, and start-up's cycles were
collected just before.
"""

from __future__ import annotations

import gc

__all__ = ["settle_heap"]


def settle_heap() -> None:
    """Collect what start-up left behind, then freeze what stays."""
    gc.collect()
    gc.freeze()
