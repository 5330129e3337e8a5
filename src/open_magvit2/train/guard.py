"""The non-finite guard: a step whose loss or gradients are not finite is skipped; a streak of them stops the run.

While a streak is open no checkpoint is written (:meth:`TrainSession.save` asks :attr:`NonFiniteGuard.open`), so
the newest checkpoint always predates the streak, and the error that stops the run names it. Steps are counted
from 1, as in ``metrics.jsonl`` and the checkpoint names.

The decision must be the same on every rank: base it on all-reduced values (the loss average, or the global
gradient norm after DDP's all-reduce), never on a rank's local loss alone.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any


class NonFiniteError(RuntimeError):
    """Raised when too many consecutive steps had a non-finite loss or gradient."""


class NonFiniteGuard:
    """Counts the steps skipped because of a non-finite loss or gradient; ``max_consecutive`` in a row stop."""

    def __init__(self, max_consecutive: int = 5) -> None:
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.skipped = 0
        self.last_bad_step: int | None = None

    @property
    def open(self) -> bool:
        """True while the latest step was skipped: the weights may be on their way to blowing up."""
        return self.consecutive > 0

    def check(self, step: int, finite: bool, what: str) -> bool:
        """Step ``step`` (1-based) had finite values or not. True: take it. False: skip it (counted). Raises
        :class:`NonFiniteError` after ``max_consecutive`` in a row; the caller adds where the run can go on."""
        if finite:
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.skipped += 1
        self.last_bad_step = step
        print(f"step {step}: non-finite {what}; step skipped ({self.consecutive} in a row, {self.skipped} in all)",
              file=sys.stderr)
        if self.consecutive >= self.max_consecutive:
            first = step - self.consecutive + 1
            raise NonFiniteError(f"{self.consecutive} consecutive steps with non-finite {what} (steps {first}–{step})")
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"consecutive": self.consecutive, "skipped": self.skipped, "last_bad_step": self.last_bad_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.consecutive, self.skipped = state["consecutive"], state["skipped"]
        self.last_bad_step = state["last_bad_step"]
