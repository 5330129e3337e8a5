"""The run directory: one layout for both trainers, checked before anything is written, created atomically.

::

    RUN_DIR/config.yaml      the resolved recipe (every default filled in); a resume must match it
    RUN_DIR/checkpoints/     step_XXXXXXX/ directories (open_magvit2.train.checkpoint)
    RUN_DIR/metrics.jsonl    one JSON record per logged step (open_magvit2.train.metrics)
    RUN_DIR/samples/         reconstruction or sample grids, step_XXXXXXX.png
    RUN_DIR/tensorboard/     the same scalars, when TensorBoard is installed
    RUN_DIR/classes.json     class names, when the data names them
    RUN_DIR/tokenizer/       generator runs: the frozen tokenizer that made the tokens (save_pretrained)

Check first, then create: :func:`check_output` only reads; the trainer then validates its data, models and init
weights; only then does :meth:`RunDir.create` build the directory under a temporary name beside it and rename it
into place. A run that fails before its first checkpoint is removed again (:meth:`RunDir.discard`), so fixing
the mistake and rerunning the same command just works. Only rank 0 writes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from open_magvit2.data.tokens import TOKENIZER_DIR
from open_magvit2.fileio import atomic_write, atomic_write_dir, check_output_dir
from open_magvit2.train.checkpoint import list_checkpoints
from open_magvit2.train.config import dump_yaml
from open_magvit2.train.metrics import METRICS_NAME

RUN_CONFIG = "config.yaml"
# Keys that may change on resume. The first group does not change what the next step computes; the second
# (learning rate, schedule, guard) does, on purpose: it is how a run recovers from a blow-up, and the change is
# recorded in metrics.jsonl.
RESUMABLE_CHANGES = (
    "run.max_steps", "run.epochs", "run.save_every", "run.log_every", "run.sample_every", "run.keep_last",
    "run.timeout_s", "data.num_workers", "init.checkpoint", "init.inflate_from", "init.weights",
    "optim.lr", "optim.disc_lr", "run.max_nonfinite",
)
RESUMABLE_PREFIXES = ("schedule.", "samples.")


def resumable(key: str) -> bool:
    return key in RESUMABLE_CHANGES or key.startswith(RESUMABLE_PREFIXES)


class RunDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    config = property(lambda self: self.root / RUN_CONFIG)
    checkpoints = property(lambda self: self.root / "checkpoints")
    metrics = property(lambda self: self.root / METRICS_NAME)
    samples = property(lambda self: self.root / "samples")
    tensorboard = property(lambda self: self.root / "tensorboard")
    tokenizer = property(lambda self: self.root / TOKENIZER_DIR)

    def sample_path(self, step: int) -> Path:
        return self.samples / f"step_{step:07d}.png"

    def has_checkpoint(self) -> bool:
        return bool(list_checkpoints(self.checkpoints))

    def check_fresh(self) -> None:
        """A new run needs a missing or empty directory that can be created (nothing is written)."""
        check_output_dir(self.root, "--output")
        if self.root.is_dir() and any(self.root.iterdir()):
            hint = ("it holds a run that never reached its first checkpoint; pass --resume auto to start it again"
                    if self.config.is_file() and not self.has_checkpoint() else
                    "pass --resume auto to continue that run, or choose a new directory")
            raise ValueError(f"--output {self.root} is not empty; {hint}")

    def check_recipe(self, config: Mapping[str, Any]) -> dict[str, list[Any]]:
        """Compare a resumed run's recipe with the stored one. A difference in a key that is not
        :func:`resumable` raises ``ValueError`` naming it; returns the allowed changes as {key: [old, new]}."""
        if not self.config.is_file():
            return {}
        import yaml

        try:
            stored = yaml.safe_load(self.config.read_text()) or {}
        except yaml.YAMLError:
            raise ValueError(f"{self.config}: damaged (not YAML); restore it from the checkpoint's recipe") from None
        old, new = _flatten(stored), _flatten(json.loads(json.dumps(dict(config))))
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        bad = [k for k in changed if not resumable(k)]
        if bad:
            details = ", ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in bad[:4])
            raise ValueError(
                f"the recipe differs from the run's {self.config} in {details}; resuming would not continue the "
                "same run. Restore those values, or start a new run in another --output directory (on resume only "
                "the learning rate, schedule, guard, length, logging and save cadence may change)"
            )
        return {k: [old.get(k), new.get(k)] for k in changed}

    def create(self, config: Mapping[str, Any], writers: Sequence[Callable[[Path], Any]] = ()) -> None:
        """Write ``config.yaml``, then call each of ``writers`` with a temporary sibling directory, then rename it
        into place (an existing empty directory is replaced): the run directory appears complete or not at all."""
        def write(tmp: Path) -> None:
            (tmp / RUN_CONFIG).write_text(dump_yaml(config))
            for w in writers:
                w(tmp)

        atomic_write_dir(self.root, write)

    def update_config(self, config: Mapping[str, Any]) -> None:
        """On a resume with allowed changes: the stored recipe becomes the one now in force."""
        atomic_write(self.config, lambda p: p.write_text(dump_yaml(config)))

    def discard(self) -> None:
        """Remove a run that this process created and that never reached a checkpoint."""
        if self.root.is_dir() and not self.has_checkpoint():
            shutil.rmtree(self.root, ignore_errors=True)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out
