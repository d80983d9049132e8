"""CEL runtimes side by side: the figures behind the choice in docs/decisions.md.

Run by hand from the repository root, with every candidate installed::

    python bench/cel_runtimes.py

Candidates: ``common-expression-language`` (import ``cel``, Rust), ``cel-expr-python``
(import ``cel_expr_python``, the CEL project's own binding of cel-cpp) and ``cel-python``
(import ``celpy``, pure Python). A candidate that is not installed is reported as such.

For each one, in one process (imports timed in fresh subprocesses):

- import time, median of 3 fresh interpreters;
- compile time of ``inputs.amount > 1000``;
- one evaluation of ``inputs.amount > 1000`` and of ``vars.x + 1`` (µs, median);
- ``inputs.lines.filter(l, l.qty >= 10)`` and ``inputs.lines.map(l, l.qty * 2)`` over
  1,000 and 10,000 items (ms, one evaluation each: the slow ones take seconds);
- ``inputs.lines.all(l, l.qty >= 0)`` over 10,000 items (a comprehension that builds
  no list);
- whether a type checker refuses ``inputs.price * 2`` with ``price`` declared double;
- whether an iteration or cost limit exists, and what it does;
- whether evaluation lets a second thread run (share of its idle rate a counting thread
  keeps during a long evaluation: near 100% means the GIL is released).

It prints a table and asserts nothing.
"""

from __future__ import annotations

import importlib.metadata
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

_perf = time.perf_counter
SMALL = "inputs.amount > 1000"
VARS = "vars.x + 1"
FILTER = "inputs.lines.filter(l, l.qty >= 10)"
MAP = "inputs.lines.map(l, l.qty * 2)"
ALL = "inputs.lines.all(l, l.qty >= 0)"
NESTED = "inputs.lines.map(a, inputs.lines.map(b, 1)).size()"
TYPED = "inputs.price * 2"


def lines(n: int) -> list[dict[str, int]]:
    return [{"qty": i % 20} for i in range(n)]


def median_us(call: Callable[[], Any], repeat: int = 7, number: int = 200) -> float:
    samples = []
    for _ in range(repeat):
        start = _perf()
        for _ in range(number):
            call()
        samples.append((_perf() - start) / number * 1e6)
    return statistics.median(samples)


def once_ms(call: Callable[[], Any]) -> str:
    start = _perf()
    try:
        call()
    except Exception as exc:
        return f"refused after {(_perf() - start) * 1e3:.1f} ms ({first_line(exc)})"
    return f"{(_perf() - start) * 1e3:.1f}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:70]


def import_ms(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout)
        for _ in range(3)
    ]
    return statistics.median(runs) * 1e3


def thread_share(evaluate: Callable[[], Any]) -> str:
    """How much a counting thread keeps running while ``evaluate`` runs."""
    count = 0
    stop = False

    def spin() -> None:
        nonlocal count
        while not stop:
            count += 1

    thread = threading.Thread(target=spin)
    thread.start()
    time.sleep(0.1)
    before, start = count, _perf()
    time.sleep(0.3)
    idle_rate = (count - before) / (_perf() - start)
    before, start = count, _perf()
    try:
        evaluate()
    except Exception as exc:
        stop = True
        thread.join()
        return f"n/a ({first_line(exc)})"
    elapsed = _perf() - start
    advanced = count - before
    stop = True
    thread.join()
    share = advanced / (idle_rate * elapsed)
    verdict = "released" if share > 0.5 else "held"
    return f"{verdict}: other thread ran at {share:.0%} during a {elapsed * 1e3:.0f} ms eval"


class Runtime:
    """One candidate: how to compile and evaluate with it."""

    name = ""
    module = ""
    distribution = ""

    def compile(self, source: str) -> Any:
        raise NotImplementedError

    def evaluate(self, program: Any, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def typed_check(self) -> str:
        raise NotImplementedError

    def limit(self) -> str:
        raise NotImplementedError

    def run(self, source: str, data: dict[str, Any]) -> Any:
        return self.evaluate(self.compile(source), data)


class CommonExpressionLanguage(Runtime):
    name, module, distribution = "common-expression-language", "cel", "common-expression-language"

    def __init__(self) -> None:
        import cel

        self.cel = cel

    def compile(self, source: str) -> Any:
        return self.cel.compile(source)

    def evaluate(self, program: Any, data: dict[str, Any]) -> Any:
        return program.execute(data)

    def typed_check(self) -> str:
        self.compile(TYPED)
        try:
            self.run(TYPED, {"inputs": {"price": 2.5}})
        except Exception as exc:
            return f"no checker; fails only when run: {first_line(exc)}"
        return "no checker; runs"

    def limit(self) -> str:
        return "none exposed: " + once_ms(
            lambda: self.run(NESTED, {"inputs": {"lines": lines(200)}})
        )


class CelExprPython(Runtime):
    name, module, distribution = "cel-expr-python", "cel_expr_python.cel", "cel-expr-python"

    def __init__(self) -> None:
        from cel_expr_python import cel

        self.cel = cel
        self.env = cel.NewEnv(variables={"inputs": cel.Type.DYN, "vars": cel.Type.DYN})

    def compile(self, source: str) -> Any:
        return self.env.compile(source)

    def evaluate(self, program: Any, data: dict[str, Any]) -> Any:
        result = program.eval(data=data)
        if result.type() == self.cel.Type.ERROR:  # evaluation errors come back as values
            raise RuntimeError(result.value())
        return result.plain_value()

    def typed_check(self) -> str:
        cel = self.cel
        types = {"inputs": cel.Type.Map(cel.Type.STRING, cel.Type.DYN)}
        env = cel.NewEnv(variables={**types, "inputs.price": cel.Type.DOUBLE})
        try:
            env.compile(TYPED)
        except Exception as exc:
            detail = str(exc).splitlines()[0].split("ERROR: ", 1)[-1]
            return f"caught at compile: {detail}"
        return "not caught"

    def limit(self) -> str:
        outcome = once_ms(lambda: self.run(NESTED, {"inputs": {"lines": lines(200)}}))
        return f"iteration budget, 200x200 nested map: {outcome}"


class CelPython(Runtime):
    name, module, distribution = "cel-python", "celpy", "cel-python"

    def __init__(self) -> None:
        import celpy

        self.celpy = celpy
        self.env = celpy.Environment()

    def compile(self, source: str) -> Any:
        return self.env.program(self.env.compile(source))

    def evaluate(self, program: Any, data: dict[str, Any]) -> Any:
        return program.evaluate({k: self.celpy.json_to_cel(v) for k, v in data.items()})

    def typed_check(self) -> str:
        types = self.celpy.celtypes
        env = self.celpy.Environment(annotations={"inputs": types.MapType})
        env.program(env.compile(TYPED))
        try:
            self.run(TYPED, {"inputs": {"price": 2.5}})
        except Exception as exc:
            return f"no checker; fails only when run: {first_line(exc)}"
        return "no static checker (annotations are runtime hints); runs"

    def limit(self) -> str:
        return "none exposed: " + once_ms(
            lambda: self.run(NESTED, {"inputs": {"lines": lines(200)}})
        )


def measure(kind: type[Runtime]) -> dict[str, str]:
    try:
        version = importlib.metadata.version(kind.distribution)
        runtime = kind()
    except Exception as exc:  # not installed, or does not load here
        return {"runtime": kind.name, "status": f"unavailable: {first_line(exc)}"}
    small = runtime.compile(SMALL)
    increment = runtime.compile(VARS)
    one = {"inputs": {"amount": 5}}
    variables = {"vars": {"x": 1}}
    row = {
        "runtime": f"{kind.name} {version}",
        "import (ms)": f"{import_ms(kind.module):.0f}",
        "compile small (µs)": f"{median_us(lambda: runtime.compile(SMALL), number=50):.1f}",
        f"eval {SMALL} (µs)": f"{median_us(lambda: runtime.evaluate(small, one)):.1f}",
        f"eval {VARS} (µs)": f"{median_us(lambda: runtime.evaluate(increment, variables)):.1f}",
    }
    for source in (FILTER, MAP):
        program = runtime.compile(source)
        for n in (1_000, 10_000):
            data = {"inputs": {"lines": lines(n)}}
            row[f"{source} x{n:,} (ms)"] = once_ms(lambda p=program, d=data: runtime.evaluate(p, d))
    every = runtime.compile(ALL)
    data = {"inputs": {"lines": lines(10_000)}}
    row[f"{ALL} x10,000 (ms)"] = once_ms(lambda: runtime.evaluate(every, data))
    row[f"type check {TYPED}, price double"] = runtime.typed_check()
    row["iteration/cost limit"] = runtime.limit()
    mapped = runtime.compile(MAP)
    data = {"inputs": {"lines": lines(3_000)}}
    row["GIL during eval (map x3,000)"] = thread_share(lambda: runtime.evaluate(mapped, data))
    return row


def main() -> None:
    print(f"Python {sys.version.split()[0]} on {sys.platform}")
    rows = [measure(kind) for kind in (CommonExpressionLanguage, CelExprPython, CelPython)]
    keys = list(dict.fromkeys(key for row in rows for key in row))
    width = max(len(key) for key in keys)
    for key in keys:
        print(f"{key:<{width}}")
        for row in rows:
            print(f"    {row.get('runtime', '?').split()[0]:<28} {row.get(key, '-')}")


if __name__ == "__main__":
    main()
