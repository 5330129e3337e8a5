"""What a training step needs besides its models and batch, passed explicitly: the precision and the process
context (:class:`StepContext`), and the one guarded update both trainers end their step with.

A step never reaches into the run: it takes a :class:`StepContext` and a :class:`NonFiniteGuard` and returns what
it measured. The parity tests build both without a run directory.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from open_magvit2.distributed import DistContext, all_reduce_mean
from open_magvit2.train.config import PRECISIONS
from open_magvit2.train.ema import update_ema
from open_magvit2.train.guard import NonFiniteGuard


@dataclass(frozen=True)
class StepContext:
    """Precision (``fp32``, ``bf16`` autocast, ``fp16`` autocast + loss scaling) and where this rank sits."""

    precision: str
    dist: DistContext

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def fp16(self) -> bool:
        return self.precision == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler, enabled only for fp16 (bf16 and fp32 need none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.fp16)

    def mean_over_ranks(self, values: Mapping[str, Tensor]) -> dict[str, float]:
        """Average 0-d tensors over ranks in one all-reduce (every rank must call it)."""
        if not values:
            return {}
        keys = list(values)
        stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys]).to(self.device)
        all_reduce_mean(stacked, self.dist)
        return dict(zip(keys, stacked.tolist()))


def guarded_update(ctx: StepContext, guard: NonFiniteGuard, step: int, losses: Mapping[str, Tensor],
                   grad_norms: Sequence[Tensor], scaler: torch.amp.GradScaler,
                   optimizers: Sequence[torch.optim.Optimizer], ema: tuple[nn.Module, nn.Module, float] | None
                   ) -> tuple[bool, dict[str, float]]:
    """The end of every training step, the same on every rank: average ``losses`` over ranks, let the guard decide
    (on the averages and on the global gradient norms, both identical on all ranks), then step the optimisers and
    the EMA ``(ema, model, decay)``, and update the loss scale. ``step`` is 1-based. Returns (taken, averages).

    Under fp16 a non-finite gradient is the scaler's business (it skips the step and lowers the scale), so only
    the loss counts there.
    """
    means = ctx.mean_over_ranks(losses)
    finite = all(math.isfinite(v) for v in means.values())
    if not ctx.fp16:
        finite = finite and all(bool(torch.isfinite(n)) for n in grad_norms)
    taken = guard.check(step, finite, "loss or gradients")
    if taken:
        for opt in optimizers:
            scaler.step(opt)
        if ema is not None:
            update_ema(*ema)
    scaler.update()
    return taken, means


def every(step: int, interval: int, last: int) -> bool:
    """True after optimiser step ``step`` (1-based) when it is a multiple of ``interval`` or the last one."""
    return interval > 0 and (step % interval == 0 or step == last)
