"""Optimisers, parameter groups, learning-rate schedules and gradient clipping for both trainers.

The learning rate is a pure function of the optimiser step (``base_lr · lr_factor(step)``), set on the
optimiser before each step as the official ``lr_wd_annealing`` does (docs/design.md O-21, O-37) and nanoGPT
does: nothing but the step needs to be checkpointed for an exact resume.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from open_magvit2.train.config import OptimConfig, RunConfig, ScheduleConfig


def run_length(run: RunConfig, batches_per_epoch: int | None, accum: int, batch_size: int, world_size: int,
               where: str) -> tuple[int, int | None]:
    """(optimiser steps of the run, optimiser steps per epoch or None for an unsized stream); ``ValueError`` when
    the data makes no step or the recipe sets no length."""
    steps_per_epoch = batches_per_epoch // accum if batches_per_epoch is not None else None
    if steps_per_epoch == 0:
        raise ValueError(f"{where}: too few samples for one step of {accum} × {batch_size} per rank on {world_size} "
                         "rank(s); add data or lower data.batch_size")
    if run.max_steps is None and run.epochs is None:
        raise ValueError("set run.epochs or run.max_steps in the recipe, or pass --max-steps")
    return run.max_steps or steps_from_epochs(run.epochs, steps_per_epoch, "run.epochs"), steps_per_epoch


def steps_from_epochs(epochs: float, steps_per_epoch: int | None, what: str) -> int:
    if steps_per_epoch is None:
        raise ValueError(f"{what} is given in epochs, but this data source has no known length; give it in steps")
    return max(1, round(epochs * steps_per_epoch))


def lr_factor(s: ScheduleConfig, step: int, total_steps: int, steps_per_epoch: int | None = None) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based) of ``total_steps``."""
    if s.kind == "constant":
        return 1.0
    if s.kind == "drops":
        drops = [steps_from_epochs(e, steps_per_epoch, "schedule.drop_epochs") for e in s.drop_epochs]
        drops += list(s.drop_steps)
        return s.drop_factor ** sum(step >= d for d in drops)  # official: after epoch d / at iteration d
    warmup = s.warmup_steps
    if s.warmup_epochs:
        warmup = steps_from_epochs(s.warmup_epochs, steps_per_epoch, "schedule.warmup_epochs")
    if step < warmup:  # linear warm-up from warmup_start (wp0) to 1
        return s.warmup_start + (1.0 - s.warmup_start) * step / warmup
    progress = (step - warmup) / max(total_steps - 1 - warmup, 1)  # "pasd" in the official code
    progress = min(max(progress, 0.0), 1.0)
    if s.kind == "cosine":  # docs/design.md O-21: floor wpe = final
        return s.final + (1.0 - s.final) * (0.5 + 0.5 * math.cos(math.pi * progress))
    # warmup_linear, docs/design.md O-37: constant for the first 5% after warm-up, then linear down to ``final``
    if progress < s.constant_fraction:
        return 1.0
    return s.final + (1.0 - s.final) * (1.0 - progress) / (1.0 - s.constant_fraction)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def decay_groups(model: nn.Module, weight_decay: float, decay_norms: bool = False) -> list[dict]:
    """Two AdamW groups (nanoGPT): weight decay on tensors with ndim ≥ 2 (matmul and embedding weights), none
    on the rest (norm gains, biases). ``decay_norms=True`` reproduces the official AR code, whose schedule
    overwrites the no-decay group's weight decay with 0.05 (docs/design.md O-37, O-38)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": rest, "weight_decay": weight_decay if decay_norms else 0.0},
    ]


def _fused_ok(params: list[Tensor]) -> bool:
    """Fused kernels exist for float parameters on CPU and CUDA: one kernel per step instead of ~10 ops per
    tensor (measured here: 8× faster than the per-tensor loop, which is torch's CPU default)."""
    plain = all(not hasattr(p, "placements") for p in params)  # sharded (DTensor) parameters: torch's default
    return bool(params) and plain and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def adam(params: Iterable[Tensor], cfg: OptimConfig, lr: float) -> torch.optim.Adam:
    """Adam with the recipe's betas/eps (the tokenizer optimisers, docs/design.md O-21: no weight decay), fused."""
    params = list(params)
    return torch.optim.Adam(params, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
                            fused=_fused_ok(params) or None)


def adamw(model: nn.Module, cfg: OptimConfig, *, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over :func:`decay_groups` (the generator optimiser, docs/design.md O-37)."""
    groups = decay_groups(model, cfg.weight_decay, cfg.decay_norms)
    if fused is None:
        fused = _fused_ok([p for g in groups for p in g["params"]]) or None
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused)


def grad_norm(params: Iterable[Tensor], max_norm: float | None) -> Tensor:
    """Global L2 norm of the gradients (clipping them to ``max_norm`` when given). Under DDP the gradients are
    already all-reduced, so every rank gets the same norm (and so the same skip decision)."""
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.zeros(())
    return torch.nn.utils.clip_grad_norm_(params, math.inf if max_norm is None else max_norm, foreach=True)
