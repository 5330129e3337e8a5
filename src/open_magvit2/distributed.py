"""The one torchrun bootstrap: process group set-up, rank facts and small collectives for every pipeline.

Training, evaluation and sampling all start here. Under ``torchrun`` (``WORLD_SIZE`` > 1) each process joins the
default process group, NCCL on CUDA and Gloo on CPU, with a finite ``timeout``: a collective that waits longer
than that (a peer died or hangs) raises instead of blocking forever, so the job exits non-zero. torchrun's agent
also stops every worker as soon as one of them exits with an error.

``init_distributed(always=True)`` makes a one-process group even without torchrun (an in-memory ``HashStore``), so
the training loops run the same DDP code path on 1 rank as on N: there is no ``if world_size > 1`` branch that a
single-process test would skip.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from open_magvit2.device import pick_device

DEFAULT_TIMEOUT_S = 1800.0  # 30 min: long enough for a slow checkpoint write, short enough to end a dead job


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: global rank, world size, rank on its node, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # True when init_distributed created the process group (shutdown destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(
    device: str | torch.device | None = None, *, always: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S
) -> DistContext:
    """Join torchrun's process group (or make a 1-process one when ``always``); pick this rank's device.

    ``device`` names the device type (``cuda``/``cpu``; default: CUDA when available). Under torchrun each rank
    takes ``cuda:LOCAL_RANK``. An already initialised group is reused (and not destroyed by :func:`shutdown`).
    """
    dev = device if isinstance(device, torch.device) else pick_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local, dev, owns_group=False)
    if world <= 1 and not always:
        return DistContext(0, 1, 0, dev, owns_group=False)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    if world > 1:
        dist.init_process_group(backend, timeout=timeout, device_id=dev if dev.type == "cuda" else None)
    else:  # one process, no rendezvous: an in-memory store
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    return DistContext(dist.get_rank(), dist.get_world_size(), local, dev, owns_group=True)


def shutdown(ctx: DistContext, *, sync: bool = False) -> None:
    """Destroy the process group if ``init_distributed`` created it.

    ``sync`` (for clean exits) first waits for every rank: gloo can abort a process ("terminate called without an
    active exception", seen on CI) when one rank tears its connections down while a peer still reads the last
    message it sent. Error paths skip the barrier, which a failed peer would never reach.
    """
    if ctx.owns_group and dist.is_initialized():
        if sync and ctx.world_size > 1:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def process_group(
    device: str | torch.device | None = None, *, always: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Iterator[DistContext]:
    """``with process_group(device) as ctx:`` — :func:`init_distributed` on entry, :func:`shutdown` on exit (also
    when the block raises), for pipelines that own their process group for one call."""
    ctx = init_distributed(device, always=always, timeout_s=timeout_s)
    try:
        yield ctx
    except BaseException:
        shutdown(ctx)
        raise
    shutdown(ctx, sync=True)


def _active(ctx: DistContext) -> bool:
    return ctx.world_size > 1 and dist.is_initialized()


def barrier(ctx: DistContext) -> None:
    if _active(ctx):
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``t`` over ranks in place (a no-op on one rank); returns ``t``."""
    if _active(ctx):
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Average ``t`` over ranks in place; returns ``t``."""
    if _active(ctx):
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= ctx.world_size
    return t


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj`` (picklable, small), in rank order, on every rank."""
    if not _active(ctx):
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_to_main(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj`` on rank 0 (in rank order); other ranks get an empty list."""
    if not _active(ctx):
        return [obj]
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out or []


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not _active(ctx):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
