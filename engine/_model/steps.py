"""A run's steps: the variables after each block, as the durable stores keep them.

A durable store checkpoints a run after every block; besides the state it resumes
from, it keeps a *step* for each checkpoint: the block that had just ended, where that
block is in the run's trace, and the variables as they stood then. Steps are kept until
the run is pruned, within three bounds, so that a long run or a large state cannot
grow the database without limit:

- :data:`STEPS_KEPT`: only the blocks among the first 1,000 entries of a run's trace
  have steps (a 100,000-step run keeps its first 1,000);
- :data:`STEP_BYTES`: a step whose variables take more than 64 KiB of JSON keeps its
  block and size but not the variables;
- :data:`RUN_STEP_BYTES`: once a run's kept variables add up to 4 MiB, its later steps
  keep their block and size only.

So one run keeps at most about 4 MiB of variables and 1,000 small rows. The block that
ends a run (a ``return``, or a failure nothing handles) has no checkpoint after it, and
so no step: the run's output or error says what it left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["RUN_STEP_BYTES", "STEPS_KEPT", "STEP_BYTES", "RunStep"]

STEPS_KEPT = 1000
"""Steps are kept for the blocks among the first this many entries of a run's trace."""

STEP_BYTES = 64 * 1024
"""A step keeps its variables only if their JSON takes at most this many bytes."""

RUN_STEP_BYTES = 4 * 1024 * 1024
"""The variables kept for one run's steps take at most this many bytes of JSON."""


@dataclass(frozen=True, slots=True)
class RunStep:
    """The state of a run after one of its blocks.

    ``trace_index`` is the position of that block's entry in the run's trace (from 0);
    ``variables`` are the run's variables after it, or ``None`` when they were too
    large to keep (``size`` is their size as JSON, in bytes, either way).
    """

    trace_index: int
    block: str
    size: int
    variables: dict[str, Any] | None

    @property
    def kept(self) -> bool:
        """Whether this step's variables were kept."""
        return self.variables is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "trace_index": self.trace_index,
            "block": self.block,
            "size": self.size,
            "kept": self.kept,
            "variables": self.variables,
        }
