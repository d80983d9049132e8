"""Run ids: 24 hex digits, the millisecond then the system's random source, never
handed out twice, and ordered by the millisecond they were made in."""

from __future__ import annotations

import multiprocessing
import re
import time

from engine._runtime.runs import new_run_id


def test_run_ids_are_24_hex_digits_and_unique() -> None:
    ids = [new_run_id() for _ in range(5_000)]

    assert all(re.fullmatch(r"[0-9a-f]{24}", run_id) for run_id in ids)
    assert len(set(ids)) == len(ids)


def test_an_id_made_in_a_later_millisecond_sorts_after() -> None:
    made = []
    for _ in range(20):
        made.append(new_run_id())
        time.sleep(0.002)

    assert made == sorted(made)
    assert len({run_id[:11] for run_id in made}) == len(made)  # each its own millisecond
    assert int(made[0][:11], 16) <= time.time() * 1000 < int(made[0][:11], 16) + 60_000


def test_ids_of_one_millisecond_differ_in_their_random_part() -> None:
    ids = [new_run_id() for _ in range(1_000)]
    by_millisecond: dict[str, set[str]] = {}
    for run_id in ids:
        by_millisecond.setdefault(run_id[:11], set()).add(run_id[11:])

    assert sum(len(tails) for tails in by_millisecond.values()) == len(ids)
    assert max(len(tails) for tails in by_millisecond.values()) > 1  # many in one


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
