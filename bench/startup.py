"""Start-up benchmark: how long a command takes from nothing, next to a bare interpreter.

Run by hand from the repository root, with the project's virtual environment::

    .venv/bin/python bench/startup.py            # 10 runs of each command
    .venv/bin/python bench/startup.py --runs 20

Every command is a whole new process, started in turn (floor, subject, floor, …) so
that a machine that slows down slows both; the figures are medians of wall time, and
the ratio is the median of the pairs' ratios. The floor is the same virtual
environment's ``python -c "import json"``: a bare interpreter start.

Commands run as an installed package does, from bytecode: the warm-up run writes it,
so a ``PYTHONDONTWRITEBYTECODE`` in the environment is left out of the commands' own
(with it, every run would compile the project's modules from source again).

The commands import the checkout this script is in (its root goes first on
``PYTHONPATH``): the ``flowwarden`` script of an editable install would otherwise import
the checkout the package was installed from, so that two checkouts sharing one
environment could not be compared. The script prints which one they import.

Target (issue "Hot paths near the floor"): ``flowwarden run examples/hello hello
--store memory:`` within 10x the floor. Also printed: ``import engine`` alone, the
library user's cost, and ``import asyncio, pydantic.main``: what any command of an
async engine with pydantic models pays before a line of its own, the part of the ratio
the project cannot remove.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FLOOR = [sys.executable, "-c", "import json"]
SUBJECTS = {
    "flowwarden run examples/hello hello --store memory:": [
        str(BIN / "flowwarden"),
        "run",
        "examples/hello",
        "hello",
        "--store",
        "memory:",
        "-q",
    ],
    'python -c "import engine"': [sys.executable, "-c", "import engine"],
    'python -c "import asyncio, pydantic.main"': [
        sys.executable,
        "-c",
        "import asyncio, pydantic.main",
    ],
}
TARGET = 10.0  # the run command, times the floor
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
ENV["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), ENV.get("PYTHONPATH")]))


def wall(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=ENV, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each command")
    args = parser.parse_args()
    for command in (FLOOR, *SUBJECTS.values()):
        wall(command)  # warm the file cache and the bytecode
    where = subprocess.run(
        [sys.executable, "-c", "import engine; print(engine.__file__)"],
        cwd=ROOT,
        env=ENV,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"engine imported from {Path(where).parent.parent}")
    print(f"median wall time of {args.runs} runs each, floor: python -c 'import json'")
    print(f"{'command':58} {'median s':>9} {'floor s':>8} {'ratio':>6}")
    for name, command in SUBJECTS.items():
        floors, subjects = [], []
        for _ in range(args.runs):
            floors.append(wall(FLOOR))
            subjects.append(wall(command))
        ratio = statistics.median(s / f for s, f in zip(subjects, floors, strict=True))
        verdict = ""
        if name.startswith("flowwarden run"):
            verdict = f"{'PASS' if ratio <= TARGET else 'FAIL'} (target <= {TARGET:g}x)"
        floor, subject = statistics.median(floors), statistics.median(subjects)
        print(f"{name:58} {subject:9.3f} {floor:8.3f} {ratio:6.1f} {verdict}")


if __name__ == "__main__":
    main()
