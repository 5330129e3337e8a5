"""The run directory, metrics logging, progress bar and non-finite guard shared by both trainers.

One layout for every run::

    RUN_DIR/config.yaml      the resolved recipe (every default filled in); a resume must match it
    RUN_DIR/checkpoints/     step_XXXXXXX/ directories (:mod:`open_magvit2.train.checkpoint`)
    RUN_DIR/metrics.jsonl    one JSON object per logged step: {"step": ..., "loss/...": ..., ...}
    RUN_DIR/samples/         reconstruction or sample grids, step_XXXXXXX.png
    RUN_DIR/tensorboard/     the same scalars, when TensorBoard is installed

Only rank 0 writes files.
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
from open_magvit2.train.config import dump_yaml

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
# Keys that may change when a run is resumed without changing what the next step computes.
RESUMABLE_CHANGES = ("run.max_steps", "run.epochs", "run.save_every", "run.log_every", "run.sample_every",
                     "run.keep_last", "run.timeout_s", "data.num_workers", "init.checkpoint", "init.inflate_from")


class RunDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_NAME

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def is_empty(self) -> bool:
        return not self.root.exists() or not any(self.root.iterdir())

    def check_fresh_start(self) -> None:
        """Refuse to start a new run over an existing one."""
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"--output {self.root} is a file; give a directory for the run")
        if not self.is_empty():
            raise ValueError(
                f"--output {self.root} is not empty; pass --resume auto to continue that run, or choose a new directory"
            )

    def write_config(self, config: Mapping[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.config, lambda p: p.write_text(dump_yaml(config)))

    def check_resume_config(self, config: Mapping[str, Any]) -> list[str]:
        """Compare the recipe of a resumed run with the stored one: differences outside :data:`RESUMABLE_CHANGES`
        raise ``ValueError`` naming them (they would break exact resumption); returns the allowed changes."""
        if not self.config.is_file():
            return []
        import yaml

        old = _flatten(yaml.safe_load(self.config.read_text()) or {})
        new = _flatten(json.loads(json.dumps(dict(config))))
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        bad = [k for k in changed if k not in RESUMABLE_CHANGES]
        if bad:
            details = ", ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in bad[:4])
            raise ValueError(
                f"the recipe differs from the run's {self.config} in {details}; resuming would not continue the "
                "same run. Restore those values, or start a new run in another --output directory"
            )
        return changed


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


class MetricsLog:
    """JSONL metrics (always) and TensorBoard scalars (when installed), rank 0 only.

    On resume from step s, lines logged after s by the interrupted run are dropped first, so the file holds
    exactly one history.
    """

    def __init__(self, run: RunDir, *, enabled: bool, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = run.metrics
        self._tb = None
        if not enabled:
            return
        run.root.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.is_file():
            kept = [ln for ln in self.path.read_text().splitlines() if ln.strip() and
                    json.loads(ln).get("step", 0) <= resume_step]
            atomic_write(self.path, lambda p: p.write_text("".join(f"{ln}\n" for ln in kept)))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run.tensorboard), purge_step=resume_step)
        except ImportError:  # TensorBoard is optional
            self._tb = None
        self._file = open(self.path, "a")  # noqa: SIM115 - kept open for the whole run, closed in close()

    def log(self, step: int, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v))) for k, v in values.items()}
        self._file.write(json.dumps({"step": step, **clean}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, float(v), step)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            if self._tb is not None:
                self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (non-finite values come back as strings such as ``"nan"``)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {METRICS_NAME} at {path}; is this a training run directory?")
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


class Progress:
    """A tqdm bar over optimiser steps (rank 0), showing loss, lr and throughput."""

    def __init__(self, *, total: int, initial: int, enabled: bool, unit: str) -> None:
        self.bar = tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
                        file=sys.stderr, desc="train")
        self.unit = unit
        self._t0, self._n = time.perf_counter(), 0

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


class NonFiniteError(RuntimeError):
    """Raised when too many consecutive steps had a non-finite loss or gradient."""


class NonFiniteGuard:
    """Counts steps skipped because of a non-finite loss or gradient; too many in a row stop the run.

    The decision must be the same on every rank: base it on all-reduced values (the loss average, or the global
    gradient norm after DDP's all-reduce), never on a rank's local loss alone.
    """

    def __init__(self, max_consecutive: int = 5) -> None:
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.skipped = 0
        self.last_bad_step: int | None = None

    def check(self, step: int, finite: bool, what: str) -> bool:
        """True: take the step. False: skip it (counted). Raises :class:`NonFiniteError` after too many."""
        if finite:
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.skipped += 1
        self.last_bad_step = step
        print(f"step {step}: non-finite {what}; step skipped ({self.consecutive} in a row, {self.skipped} in all)",
              file=sys.stderr)
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteError(
                f"{self.consecutive} consecutive steps with non-finite {what} (last at step {step}); the run stops "
                "here and the last checkpoint is intact. Lower the learning rate, use fp32/bf16 instead of fp16, or "
                "check the data"
            )
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"consecutive": self.consecutive, "skipped": self.skipped, "last_bad_step": self.last_bad_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.consecutive, self.skipped, self.last_bad_step = (state["consecutive"], state["skipped"],
                                                              state["last_bad_step"])
