"""Run ids: 24 hex digits from the system's random source, never handed out twice."""

from __future__ import annotations

import multiprocessing
import re

from engine._runtime.runs import new_run_id


def test_run_ids_are_24_hex_digits_and_unique() -> None:
    ids = [new_run_id() for _ in range(5_000)]

    assert all(re.fullmatch(r"[0-9a-f]{24}", run_id) for run_id in ids)
    assert len(set(ids)) == len(ids)


def _child_id(queue: multiprocessing.Queue[str]) -> None:
    queue.put(new_run_id())


def test_a_forked_process_does_not_reuse_its_parents_ids() -> None:
    new_run_id()  # the parent holds ids drawn but not yet handed out
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = context.Queue()
    child = context.Process(target=_child_id, args=(queue,))
    child.start()
    from_child = queue.get(timeout=30)
    child.join(timeout=30)

    assert from_child not in {new_run_id() for _ in range(256)}
