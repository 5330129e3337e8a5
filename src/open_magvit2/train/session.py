"""What every training run shares, whichever model it trains: ranks, the run directory, resume, checkpoints,
metrics, the progress bar, the non-finite guard and mixed precision. Both trainers are short loops over this.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from open_magvit2.distributed import (
    DistContext,
    all_reduce_mean,
    barrier,
    broadcast_object,
    init_distributed,
    shutdown,
)
from open_magvit2.train.checkpoint import (
    Checkpointer,
    Loaded,
    capture_rng,
    load_checkpoint,
    resolve_resume,
    restore_rng,
)
from open_magvit2.train.config import RunConfig, to_dict
from open_magvit2.train.run import MetricsLog, NonFiniteGuard, Progress, RunDir


class TrainSession:
    """One training run on this rank. Use as a context manager; every rank constructs it the same way.

    ``kind`` ("tokenizer" or "generator") is stored in each checkpoint so that ``export`` knows what it holds.
    """

    def __init__(self, kind: str, config: Any, output: str | Path, resume: str | None) -> None:
        self.kind = kind
        self.config = config
        self.run_cfg: RunConfig = config.run
        self.ctx: DistContext = init_distributed(self.run_cfg.device, always=True, timeout_s=self.run_cfg.timeout_s)
        try:
            self.run = RunDir(output)
            self.resume_from = self._prepare(resume)
        except BaseException:
            shutdown(self.ctx)
            raise
        self.checkpointer = Checkpointer(self.run.checkpoints, self.ctx, keep_last=self.run_cfg.keep_last)
        self.guard = NonFiniteGuard(self.run_cfg.max_nonfinite)
        self.log: MetricsLog | None = None
        self.progress: Progress | None = None

    # ---- set-up -------------------------------------------------------------------------------------------------
    def _prepare(self, resume: str | None) -> Path | None:
        """Decide fresh start vs resume (the same answer on every rank) and write ``config.yaml``."""
        plain = to_dict(self.config)
        error, path = None, None
        if self.ctx.is_main:
            try:
                path = resolve_resume(resume, self.run.checkpoints)
                if path is None and resume is None:
                    self.run.check_fresh_start()
                elif path is not None:
                    changed = self.run.check_resume_config(plain)
                    if changed:
                        print(f"resuming with changed settings: {', '.join(changed)}", file=sys.stderr)
            except (ValueError, FileNotFoundError) as e:
                error = e
        error, path = broadcast_object((error, path), self.ctx)
        if error is not None:
            raise error
        barrier(self.ctx)
        if self.ctx.is_main:
            self.run.write_config(plain)
        return path

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    def seed(self, offset: int = 0) -> None:
        """Seed every RNG: the same on all ranks for model construction (``per_rank=False``) ..."""
        torch.manual_seed(self.run_cfg.seed + offset)

    def seed_per_rank(self) -> None:
        """... and a distinct stream per rank for the training steps (dropout, label drop)."""
        import random

        import numpy as np

        s = self.run_cfg.seed * self.ctx.world_size + self.ctx.rank
        torch.manual_seed(s)
        random.seed(s)
        np.random.seed(s % 2**32)

    def load(self) -> Loaded | None:
        if self.resume_from is None:
            return None
        if self.ctx.is_main:
            print(f"resuming from {self.resume_from}", file=sys.stderr)
        loaded = load_checkpoint(self.resume_from, self.ctx)
        if loaded.state.get("kind") != self.kind:
            raise ValueError(f"{self.resume_from} is a {loaded.state.get('kind')} checkpoint, not a {self.kind} one")
        return loaded

    def start(self, *, total_steps: int, step: int, unit: str) -> None:
        resumed = self.resume_from is not None
        self.log = MetricsLog(self.run, enabled=self.ctx.is_main, resume_step=step if resumed else 0)
        self.progress = Progress(total=total_steps, initial=step, enabled=self.ctx.is_main, unit=unit)

    # ---- during the run -----------------------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        p = self.run_cfg.precision
        if p == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if p == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, enabled only for fp16 (bf16 and fp32 need none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.run_cfg.precision == "fp16")

    def mean_over_ranks(self, values: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Average 0-d tensors over ranks in one all-reduce (every rank must call it)."""
        if not values:
            return {}
        keys = list(values)
        stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys]).to(self.device)
        all_reduce_mean(stacked, self.ctx)
        return dict(zip(keys, stacked.tolist()))

    def checkpoint(self, step: int, state: Mapping[str, Any], rank_state: Mapping[str, Any], **kw: Any) -> Path:
        state = {**state, "kind": self.kind, "step": step, "config": to_dict(self.config),
                 "guard": self.guard.state_dict()} if self.ctx.is_main else {}
        rank_state = {**rank_state, "rng": capture_rng()}
        return self.checkpointer.save(step, state, rank_state, meta={"kind": self.kind}, **kw)

    def restore(self, loaded: Loaded) -> None:
        """Restore the guard and this rank's RNG streams (call last, after everything that draws random numbers
        during set-up)."""
        self.guard.load_state_dict(loaded.state["guard"])
        restore_rng(loaded.rank_state["rng"])

    def every(self, step: int, interval: int, last: int) -> bool:
        """True after optimiser step ``step`` (1-based count) when it is a multiple of ``interval`` or the last."""
        return interval > 0 and (step % interval == 0 or step == last)

    def close(self, *, clean: bool = True) -> None:
        """Close the log and progress bar and leave the process group (after a barrier when ``clean``)."""
        if self.progress is not None:
            self.progress.close()
        if self.log is not None:
            self.log.close()
        shutdown(self.ctx, sync=clean)

    def __enter__(self) -> TrainSession:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(clean=exc_type is None)

