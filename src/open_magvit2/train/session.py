"""The training protocol both trainers follow (torchtitan's checkpoint-manager shape), for one run on this rank.

A trainer:

1. opens a :class:`TrainSession` (the process group; the output and ``--resume`` are checked, nothing written);
2. builds its data, models and init weights; every mistake in them raises now, before the run directory exists;
3. calls :meth:`TrainSession.create` (the run directory appears, complete, or a resume's changed settings are
   recorded);
4. registers its stateful parts once (:meth:`register`, :meth:`register_rank`, :meth:`register_shard`) and the
   values a resume must agree with (:meth:`expect`);
5. calls :meth:`resume` (load, then seed each rank, then restore: the one place this order is written) and
   :meth:`start`;
6. loops over steps, calling :meth:`save` at its cadence.

Leaving the ``with`` block closes the log, the progress bar and the process group. A fresh run that failed before
its first checkpoint is removed; a run stopped by the non-finite guard says which checkpoint to continue from.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from open_magvit2.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    broadcast_object,
    init_distributed,
    shutdown,
)
from open_magvit2.train.checkpoint import (
    Checkpointer,
    Loaded,
    capture_rng,
    list_checkpoints,
    read_checkpoint,
    read_state_file,
    resolve_resume,
    restore_rng,
    shard_name,
)
from open_magvit2.train.config import RunConfig, to_dict
from open_magvit2.train.guard import NonFiniteError, NonFiniteGuard
from open_magvit2.train.metrics import MetricsLog, Progress
from open_magvit2.train.rundir import RunDir
from open_magvit2.train.step import StepContext


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


class TrainSession:
    """One training run on this rank. Use as a context manager; every rank constructs it the same way.

    ``kind`` ("tokenizer" or "generator") is stored in each checkpoint so that ``export`` knows what it holds.
    """

    def __init__(self, kind: str, config: Any, output: str | Path, resume: str | None) -> None:
        self.kind, self.config, self.plain = kind, config, to_dict(config)
        self.run_cfg: RunConfig = config.run
        self.ctx: DistContext = init_distributed(self.run_cfg.device, always=True, timeout_s=self.run_cfg.timeout_s)
        self.step_ctx = StepContext(self.run_cfg.precision, self.ctx)
        self.run = RunDir(output)
        self.guard = NonFiniteGuard(self.run_cfg.max_nonfinite)
        self.checkpointer = Checkpointer(self.run.checkpoints, self.ctx, keep_last=self.run_cfg.keep_last)
        self._main: dict[str, Stateful | None] = {}
        self._rank: dict[str, Stateful] = {}
        self._shard: Stateful | None = None
        self._values: dict[str, Any] = {}
        self._expected: dict[str, tuple[Any, str]] = {}
        self._created = False
        self._checked: Loaded | None = None  # rank 0: the checkpoint read while checking --resume, read once
        self.log: MetricsLog | None = None
        self.progress: Progress | None = None
        try:
            self.resume_from, self.changes, self._new = self._on_main(lambda: self._check_output(resume))
        except BaseException:
            shutdown(self.ctx)
            raise

    # ---- 1. check, then create ------------------------------------------------------------------------------------
    def _on_main(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on rank 0 only and give every rank its result, or raise its user error on every rank."""
        error, result = None, None
        if self.ctx.is_main:
            try:
                result = fn()
            except (ValueError, OSError) as e:
                error = e
        error, result = broadcast_object((error, result), self.ctx)
        if error is not None:
            raise error
        return result

    def _check_output(self, resume: str | None) -> tuple[Path | None, dict[str, list[Any]], bool]:
        """(checkpoint to resume or None, allowed recipe changes, whether the run directory is new)."""
        loaded = resolve_resume(resume, self.run.root)
        if loaded is None:
            if resume is None or not (self.run.config.is_file() and not self.run.has_checkpoint()):
                self.run.check_fresh()
            return None, {}, True  # (--resume auto on a run that never reached a checkpoint: it starts again)
        if loaded.state.get("kind") != self.kind:
            raise ValueError(f"{loaded.path} is a {loaded.state.get('kind')} checkpoint, not a {self.kind} one")
        self._checked = loaded
        if loaded.meta["world_size"] != self.ctx.world_size:
            raise ValueError(f"{loaded.path} was written by {loaded.meta['world_size']} ranks; resume it with the "
                             f"same number (torchrun --nproc-per-node/--nnodes), not {self.ctx.world_size}")
        if self.run.config.is_file():
            return loaded.path, self.run.check_recipe(self.plain), False
        self.run.check_fresh()  # continuing another run's checkpoint in a new directory
        return loaded.path, {}, True

    def create(self, writers: Sequence[Callable[[Path], Any]] = ()) -> None:
        """Make the run directory (``config.yaml``, then ``writers(dir)``), atomically; on resume, record the
        settings that changed in ``config.yaml``. Call after everything has been checked."""

        def make() -> bool:
            if not self._new:
                if self.changes:
                    self.run.update_config(self.plain)
                return False
            if self.run.config.is_file():  # --resume auto over a run that never reached a checkpoint
                self.run.discard()
            self.run.create(self.plain, writers)
            return True

        self._created = self._on_main(make)
        barrier(self.ctx)

    # ---- 2. the state protocol ----------------------------------------------------------------------------------
    def register(self, **parts: Stateful | None) -> None:
        """Parts whose state rank 0 saves and every rank restores (models, EMA, optimisers, scaler, loss state).
        ``None`` stands for a part this run does not have (saved as None, e.g. no EMA)."""
        self._main.update(parts)

    def register_rank(self, **parts: Stateful) -> None:
        """Parts with a state of each rank's own (its data stream); every rank's RNG streams are saved too."""
        self._rank.update(parts)

    def register_shard(self, part: Stateful) -> None:
        """Sharded runs (FSDP2): a part whose state each rank writes to its own file."""
        self._shard = part

    def record(self, **values: Any) -> None:
        """Plain values stored with every checkpoint (e.g. the model config that ``export`` needs)."""
        self._values.update(values)

    def expect(self, key: str, value: Any, message: str) -> None:
        """A value stored with every checkpoint that a resume must find unchanged (else ``ValueError(message)``)."""
        self._expected[key] = (value, message)

    def seed(self, offset: int = 0) -> None:
        """The same seed on every rank, for building the models."""
        torch.manual_seed(self.run_cfg.seed + offset)

    def _seed_per_rank(self) -> None:
        s = self.run_cfg.seed * self.ctx.world_size + self.ctx.rank  # a distinct stream per rank
        torch.manual_seed(s)
        random.seed(s)
        np.random.seed(s % 2**32)

    def resume(self) -> int:
        """Load the checkpoint being resumed (if any) into every registered part, then seed this rank's streams,
        then restore them and the guard. Returns the step to continue from (0 for a fresh run)."""
        if self.resume_from is None:
            self._seed_per_rank()
            return 0
        if self.ctx.is_main:
            print(f"resuming from {self.resume_from}", file=sys.stderr)
        loaded, self._checked = self._checked or read_checkpoint(self.resume_from, self.ctx), None
        if loaded.meta.get("sharded") and loaded.shard is None:  # rank 0's own shard, not read by the check
            loaded = loaded._replace(shard=read_state_file(loaded.path / shard_name(self.ctx.rank)))
        state = loaded.state
        for key, (value, message) in self._expected.items():
            if state.get(key) != value:
                raise ValueError(message)
        for name, part in self._main.items():
            if part is not None:
                part.load_state_dict(state[name])
        if self._shard is not None:
            self._shard.load_state_dict(loaded.shard)
        for name, part in self._rank.items():
            part.load_state_dict(loaded.rank_state[name])
        self._seed_per_rank()
        self.guard.load_state_dict(state["guard"])
        restore_rng(loaded.rank_state["rng"])
        return int(state["step"])

    def save(self, step: int) -> Path | None:
        """Checkpoint ``step`` (collective). Nothing is written while a non-finite streak is open; weights that
        are not finite stop the run instead of being saved."""
        if self.guard.open:
            return None
        bad = torch.zeros((), device=self.ctx.device)
        for part in [*self._main.values(), self._shard]:  # models, EMA and FSDP shards: whatever has parameters
            if hasattr(part, "parameters"):
                bad += sum(int(not torch.isfinite(p).all()) for p in part.parameters())
        if float(all_reduce_sum(bad, self.ctx)) > 0:
            raise NonFiniteError(f"the weights became non-finite by step {step}; nothing was saved")
        state: dict[str, Any] = {}
        if self.ctx.is_main:
            state = {name: None if p is None else p.state_dict() for name, p in self._main.items()}
            state.update(self._values)
            state.update({k: v for k, (v, _) in self._expected.items()})
            state.update(kind=self.kind, step=step, config=self.plain, guard=self.guard.state_dict())
        rank_state = {name: p.state_dict() for name, p in self._rank.items()} | {"rng": capture_rng()}
        shard = None if self._shard is None else self._shard.state_dict()
        return self.checkpointer.save(step, state, rank_state, shard=shard, meta={"kind": self.kind})

    # ---- 3. during the run --------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.ctx.device

    def start(self, *, total_steps: int, step: int, unit: str) -> None:
        resumed = self.resume_from is not None
        self.log = MetricsLog(self.run.metrics, self.run.tensorboard, enabled=self.ctx.is_main,
                              resume_step=step if resumed else None)
        if self.changes:
            self.log.event(step, "resume", changed=self.changes)
            if self.ctx.is_main:
                print("resuming with changed settings: " + ", ".join(f"{k} {o!r} → {n!r}" for k, (o, n) in
                                                                      self.changes.items()), file=sys.stderr)
        self.progress = Progress(total=total_steps, initial=step, enabled=self.ctx.is_main, unit=unit)

    def close(self, *, clean: bool = True) -> None:
        """Close the log and progress bar and leave the process group (after a barrier when ``clean``). A fresh
        run that fails before its first checkpoint leaves nothing behind."""
        if self.progress is not None:
            self.progress.close()
        if self.log is not None:
            self.log.close()
        if not clean and self._created and self.ctx.is_main:
            self.run.discard()
        shutdown(self.ctx, sync=clean)

    def _advice(self, error: NonFiniteError) -> NonFiniteError:
        found = list_checkpoints(self.run.checkpoints)
        lower = f"--set optim.lr={self.config.optim.lr / 10:g}"
        if not found:
            return NonFiniteError(f"{error}; no checkpoint had been written, so the run directory was removed. "
                                  f"Start again with a lower learning rate ({lower}), fp32/bf16 instead of fp16, or "
                                  "check the data")
        last = found[-1]
        return NonFiniteError(
            f"{error}. The newest checkpoint, {last} (step {int(last.name.split('_')[1])}), predates it: continue "
            f"from it with --resume auto and a lower learning rate ({lower}), use fp32/bf16 instead of fp16, or "
            "check the data")

    def __enter__(self) -> TrainSession:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.close(clean=exc_type is None)
        if isinstance(exc, NonFiniteError):
            raise self._advice(exc) from None

