"""A long-lived process settles its heap once start-up is over: what start-up left
in reference cycles is collected, and what stays is frozen out of the collector's
full passes, which then walk only what the process made since."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from engine._runtime.heap import settle_heap


class _Node:
    """An object that refers to itself: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def thawed() -> Iterator[None]:
    """Give this test process's frozen objects back to the collector afterwards."""
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("thawed")
def test_settling_collects_start_ups_cycles_and_freezes_what_stays() -> None:
    left = _Node()
    collected = weakref.ref(left)
    del left  # garbage now, but in a cycle
    kept = _Node()
    assert collected() is not None
    frozen = gc.get_freeze_count()

    settle_heap()

    assert collected() is None  # collected first, not frozen with the rest
    assert gc.get_freeze_count() > frozen
    assert not any(obj is kept for obj in gc.get_objects())  # no longer walked
    gc.collect()
    assert kept.me is kept  # frozen, still alive


@pytest.mark.usefixtures("thawed")
def test_a_frozen_object_is_still_freed_once_nothing_refers_to_it() -> None:
    leaf = _Leaf()
    freed = weakref.ref(leaf)
    settle_heap()
    assert not any(obj is leaf for obj in gc.get_objects())  # frozen
    del leaf
    assert freed() is None  # reference counting freed it all the same


class _Leaf:
    """An object that nothing but its holder refers to."""
