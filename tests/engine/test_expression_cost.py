"""One caller cannot stop the server with an expensive expression: a comprehension over
10,000 items from the HTTP inputs finishes within the bound or fails as an
``expression`` error, while cheap requests to the same server keep being answered."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
from serve_process import ServeProcess

FILTER = """\
flow: big-filter
status: LIVE
inputs:
  type: object
  required: [lines]
  properties: {lines: {type: array, items: {type: object}}}
start: pick
blocks:
  pick: {type: set, values: {big: "=inputs.lines.filter(l, l.qty >= 10)"}, next: done}
  done: {type: return, value: "=size(vars.big)"}
"""


def test_a_10000_item_comprehension_from_http_leaves_the_server_answering(
    tmp_path: Path,
) -> None:
    (tmp_path / "filter.yaml").write_text(FILTER)
    lines = [{"qty": n % 20} for n in range(10_000)]
    answers: dict[str, Any] = {}
    with ServeProcess(str(tmp_path), "--store", "memory:") as server:

        def activate() -> None:
            started = time.perf_counter()
            answers["response"] = httpx.post(
                f"{server.url}/api/flows/big-filter/activate-blocking?timeout=60",
                json={"lines": lines},
                timeout=90,
            )
            answers["seconds"] = time.perf_counter() - started

        caller = threading.Thread(target=activate)
        caller.start()
        health: list[float] = []
        while caller.is_alive() or len(health) < 5:
            started = time.perf_counter()
            assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
            health.append(time.perf_counter() - started)
        caller.join(90)

    response = answers["response"]
    assert response.status_code == 200, response.text
    result = response.json()
    if result["status"] == "COMPLETED":
        assert result["output"] == 5_000
    else:
        assert result["status"] == "FAILED"
        assert result["error"]["code"] == "expression"
        assert "cost limit" in result["error"]["message"]
    assert max(health) < 0.2, health
