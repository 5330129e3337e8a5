"""Run-time plumbing of the evaluation pipelines: per-rank resume states and feature moments summed over ranks.

Process groups, ranks and collectives come from :mod:`open_magvit2.distributed` (the one torchrun bootstrap):
under ``torchrun`` each rank evaluates its :func:`~open_magvit2.eval.datasets.shard`, sums are all-reduced and
per-item records gathered to rank 0, which alone writes the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from open_magvit2.distributed import DistContext, all_gather_objects, all_reduce_sum
from open_magvit2.fileio import atomic_write


def state_path(directory: str | Path, ctx: DistContext) -> Path:
    """``<directory>/rank<r>-of-<world>.pt``: a state belongs to one rank of one world size."""
    return Path(directory) / f"rank{ctx.rank}-of-{ctx.world_size}.pt"


def save_state(path: Path, state: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous state intact."""
    atomic_write(path, lambda p: torch.save(state, p))


def load_state(path: Path, fingerprint: dict) -> dict | None:
    """The saved state if it belongs to this exact evaluation; ``ValueError`` if it belongs to another."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only
    except Exception as e:  # a truncated or foreign file: say which and how to start over
        raise ValueError(f"{path}: unreadable resume state ({type(e).__name__}); pass --restart to start over") \
            from None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        old = state.get("fingerprint", {}) if isinstance(state, dict) else {}
        changed = sorted(k for k in fingerprint if old.get(k) != fingerprint[k])
        raise ValueError(
            f"{path} is the resume state of a different evaluation (differs in: {', '.join(changed) or 'format'}); "
            "pass --restart to start over, or another --output directory"
        )
    return state


def reduce_moments(m: Any, ctx: DistContext) -> None:
    """Sum a :class:`~open_magvit2.eval.metrics.Moments` over ranks in place (the kept rows are gathered while
    every rank still has them and their total stays within the feature dimension)."""
    if ctx.world_size == 1:
        return
    n = all_reduce_sum(torch.tensor([float(m.n)], dtype=torch.float64, device=m.sum.device), ctx)
    all_reduce_sum(m.sum, ctx)
    all_reduce_sum(m.outer, ctx)
    rows = all_gather_objects(None if m.rows is None else [r.cpu() for r in m.rows], ctx)
    m.n = int(n.item())
    m.rows = None if any(r is None for r in rows) or m.n > m.sum.numel() else [t for r in rows for t in r]
