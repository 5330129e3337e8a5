"""What a run reports while it trains: ``metrics.jsonl`` (+ TensorBoard when installed) and the progress bar.

``metrics.jsonl`` holds one JSON object per logged step, ``{"step": s, "loss/l1": ..., ...}``, and one per
resume that changed a setting, ``{"step": s, "event": "resume", "changed": {"optim.lr": [old, new]}}``. Only rank
0 writes. A run killed mid-write can leave a truncated last line: readers skip it, and a resume drops it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from open_magvit2.fileio import atomic_write

METRICS_NAME = "metrics.jsonl"


def _parse(path: Path, text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if n == len(lines) and not text.endswith("\n"):  # cut off by a kill mid-write: not a record yet
                print(f"{path}: ignoring the unfinished last line {n}", file=sys.stderr)
                continue
            raise ValueError(f"{path}, line {n}: not a JSON record ({line[:60]!r}); was the file edited?") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ValueError(f"{path}, line {n}: a record needs an integer \"step\"")
        out.append(record)
    return out


def read_metrics(path: str | Path, *, events: bool = False) -> list[dict[str, Any]]:
    """The measurements of a run's ``metrics.jsonl`` (non-finite values come back as strings such as ``"nan"``);
    with ``events=True`` also the event records (resumes that changed settings), in file order."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {METRICS_NAME} at {path}; is this a training run directory?")
    return [r for r in _parse(path, path.read_text()) if events or "event" not in r]


class MetricsLog:
    """JSONL metrics (always) and TensorBoard scalars (when installed), rank 0 only.

    On resume from step s, lines logged after s by the interrupted run are dropped first, so the file holds
    exactly one history.
    """

    def __init__(self, path: Path, tensorboard: Path, *, enabled: bool, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = path
        self._tb = None
        if not enabled:
            return
        if resume_step is not None and path.is_file():
            kept = [r for r in _parse(path, path.read_text()) if r["step"] <= resume_step]
            atomic_write(path, lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in kept)))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(tensorboard), purge_step=resume_step)
        except ImportError:  # TensorBoard is optional
            self._tb = None
        self._file = open(path, "a")  # noqa: SIM115 - kept open for the whole run, closed in close()

    def _write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def log(self, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self._write({"step": step, **{k: (float(v) if math.isfinite(float(v)) else str(float(v)))
                                      for k, v in values.items()}})
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, float(v), step)

    def event(self, step: int, event: str, **fields: Any) -> None:
        """A record that is not a measurement (e.g. a resume that changed settings)."""
        if self.enabled:
            self._write({"step": step, "event": event, **fields})

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            if self._tb is not None:
                self._tb.close()


class Progress:
    """A tqdm bar over optimiser steps (rank 0), showing the values it is given and the throughput."""

    def __init__(self, *, total: int, initial: int, enabled: bool, unit: str) -> None:
        self.bar = tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
                        file=sys.stderr, desc="train")
        self.unit = unit
        self._t0 = time.perf_counter()

    def update(self, items: int, postfix: Mapping[str, float]) -> float:
        """Advance one step that processed ``items`` images/tokens; returns items/s since the last call."""
        now = time.perf_counter()
        rate = items / max(now - self._t0, 1e-9)
        self._t0 = now
        self.bar.set_postfix({**{k: f"{v:.4g}" for k, v in postfix.items()}, f"{self.unit}/s": f"{rate:.3g}"},
                             refresh=False)
        self.bar.update(1)
        return rate

    def close(self) -> None:
        self.bar.close()
