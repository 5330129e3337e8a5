"""Run-time plumbing shared by the evaluation pipelines: torchrun ranks, gathers, atomic resume states.

Under ``torchrun`` (``WORLD_SIZE`` > 1) each process joins the default process group (NCCL on CUDA, Gloo on CPU)
and evaluates its :func:`~open_magvit2.eval.datasets.shard`; sums are all-reduced and per-image records gathered
to rank 0, which alone writes the report. A single process needs no process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from open_magvit2.device import pick_device  # noqa: F401  (re-exported for the eval pipelines)
from open_magvit2.fileio import atomic_write


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_ranks(device: torch.device) -> tuple[Ranks, torch.device]:
    """Read torchrun's environment; join the process group when there is more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(rank, world, local), device


def all_reduce_sum(t: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    if ranks.world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_to_main(obj: Any, ranks: Ranks) -> list[Any]:
    """Every rank's ``obj`` on rank 0 (in rank order); other ranks get an empty list."""
    if ranks.world == 1:
        return [obj]
    out: list[Any] | None = [None] * ranks.world if ranks.main else None
    dist.gather_object(obj, out, dst=0)
    return out or []


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


# ---- resume states -----------------------------------------------------------------------------------------------


def state_path(directory: str | Path, ranks: Ranks) -> Path:
    return Path(directory) / f"rank{ranks.rank}-of-{ranks.world}.pt"


def save_state(path: Path, state: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous state intact."""
    atomic_write(path, lambda p: torch.save(state, p))


def load_state(path: Path, fingerprint: dict) -> dict | None:
    """The saved state if it belongs to this exact evaluation; ``ValueError`` if it belongs to another."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only
    if state.get("fingerprint") != fingerprint:
        changed = sorted(k for k in fingerprint if state.get("fingerprint", {}).get(k) != fingerprint[k])
        raise ValueError(
            f"{path} is the resume state of a different evaluation (differs in: {', '.join(changed) or 'format'}); "
            "pass --restart to start over, or another --output directory"
        )
    return state


def reduce_moments(m: Any, ranks: Ranks) -> None:
    """Sum a :class:`~open_magvit2.eval.metrics.Moments` over ranks in place (the kept rows are gathered while
    every rank still has them and their total stays within the feature dimension)."""
    if ranks.world == 1:
        return
    n = torch.tensor([float(m.n)], dtype=torch.float64, device=m.sum.device)
    dist.all_reduce(n)
    dist.all_reduce(m.sum)
    dist.all_reduce(m.outer)
    rows = [None] * ranks.world
    dist.all_gather_object(rows, None if m.rows is None else [r.cpu() for r in m.rows])
    m.n = int(n.item())
    m.rows = None if any(r is None for r in rows) or m.n > m.sum.numel() else [t for r in rows for t in r]


def progress(items: Any, total: int, desc: str, enabled: bool = True) -> Any:
    """A tqdm bar on stderr (or the items themselves when disabled or there is at most one step)."""
    if not enabled or total <= 1:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit="batch", dynamic_ncols=True)
