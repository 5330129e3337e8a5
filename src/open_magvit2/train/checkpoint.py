"""Training checkpoints for both trainers: atomic save, the last K kept, newest-complete lookup, exact resume.

Layout (one directory per checkpoint)::

    RUN_DIR/checkpoints/step_0000100/
        state.pt       rank 0's state (models, EMA, optimisers, scaler, loss state, step, data position, ...)
                       plus ``ranks``: every rank's own small state (RNG streams, data position), in rank order
        shard-00003.pt sharded runs only (FSDP2): rank 3's own parameter and optimiser shards
        meta.json      step, world size, kind, time; written last

All ranks write into ``.tmp-step_0000100``; rank 0 renames it into place only after every file is on disk, so a
directory named ``step_*`` is always complete. A crash or SIGKILL mid-save leaves only a ``.tmp-*`` directory,
which the next save removes; the previous checkpoint is untouched. Files are read with
``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only, nothing is executed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from open_magvit2.distributed import DistContext, barrier, gather_to_main

STATE_NAME = "state.pt"
META_NAME = "meta.json"
_STEP_RE = re.compile(r"^step_(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def shard_name(rank: int) -> str:
    return f"shard-{rank:05d}.pt"


# ---- RNG streams ----------------------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """Every RNG stream a training step may draw from (torch CPU and CUDA, Python, NumPy), as loadable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- saving -----------------------------------------------------------------------------------------------------


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save(obj: Any, path: Path) -> None:
    torch.save(obj, path)
    _fsync_file(path)


class Checkpointer:
    """Saves and finds the checkpoints of one run directory (``RUN_DIR/checkpoints``).

    Collective: every rank calls :meth:`save` for the same step (it gathers the per-rank states and ends with a
    barrier). Only rank 0 touches the directory names.
    """

    def __init__(self, directory: str | Path, ctx: DistContext, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.ctx = ctx
        self.keep_last = keep_last

    def list(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        return list_checkpoints(self.directory)

    def latest(self) -> Path | None:
        found = self.list()
        return found[-1] if found else None

    def save(
        self,
        step: int,
        state: Mapping[str, Any],
        rank_state: Mapping[str, Any],
        *,
        shard: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write checkpoint ``step``. ``state``: rank 0's payload (other ranks may pass ``{}``); ``rank_state``:
        this rank's own small state; ``shard``: this rank's sharded tensors (FSDP2), written by each rank."""
        final = self.directory / step_dir_name(step)
        tmp = self.directory / f".tmp-{final.name}"
        ranks = gather_to_main(dict(rank_state), self.ctx)
        if self.ctx.is_main:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._remove_stale()
            tmp.mkdir()
        barrier(self.ctx)
        if shard is not None:
            _save(dict(shard), tmp / shard_name(self.ctx.rank))
        barrier(self.ctx)
        if self.ctx.is_main:
            _save({**state, "ranks": ranks}, tmp / STATE_NAME)
            info = {"step": step, "world_size": self.ctx.world_size, "sharded": shard is not None,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **(meta or {})}
            (tmp / META_NAME).write_text(json.dumps(info, indent=2) + "\n")
            _fsync_file(tmp / META_NAME)
            if final.exists():  # re-saving a step (e.g. the final step twice): replace it
                self._delete(final)
            os.replace(tmp, final)
            _fsync_file(self.directory)
            self.prune()
        barrier(self.ctx)
        return final

    def prune(self) -> None:
        """Keep the newest ``keep_last`` complete checkpoints (rank 0 only)."""
        for old in self.list()[: -self.keep_last]:
            self._delete(old)

    def _delete(self, path: Path) -> None:
        trash = path.with_name(f".del-{path.name}")  # rename first: a crash mid-delete leaves no half checkpoint
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def _remove_stale(self) -> None:
        for p in self.directory.iterdir():
            if p.name.startswith((".tmp-", ".del-")):
                shutil.rmtree(p, ignore_errors=True)


def list_checkpoints(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _STEP_RE.match(p.name) and (p / META_NAME).is_file()]
    return sorted(found, key=lambda p: int(_STEP_RE.match(p.name).group(1)))


# ---- loading ----------------------------------------------------------------------------------------------------


class Loaded(NamedTuple):
    state: dict[str, Any]  # rank 0's payload (every rank reads it)
    rank_state: dict[str, Any]  # this rank's own state
    shard: dict[str, Any] | None  # this rank's shard (sharded runs)
    meta: dict[str, Any]


def read_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    meta_file = path / META_NAME
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path}: not a complete training checkpoint (no {META_NAME})")
    return json.loads(meta_file.read_text())


def read_state_file(path: Path) -> dict[str, Any]:
    """One checkpoint file, read with ``weights_only=True`` (tensors and plain values; nothing is executed)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # damaged file or one that needs pickle code: never executed
        first = str(e).splitlines()[0][:160] if str(e) else ""
        raise ValueError(f"{path}: unreadable checkpoint file ({type(e).__name__}: {first})") from None


def load_checkpoint(path: str | Path, ctx: DistContext) -> Loaded:
    """Read a checkpoint for this rank. The world size must match the one that wrote it (per-rank RNG streams
    and data positions only make sense on the same number of ranks)."""
    path = Path(path)
    meta = read_meta(path)
    if meta["world_size"] != ctx.world_size:
        raise ValueError(
            f"{path} was written by {meta['world_size']} ranks; resume it with the same number "
            f"(torchrun --nproc-per-node/--nnodes), not {ctx.world_size}"
        )
    state = read_state_file(path / STATE_NAME)
    ranks = state.pop("ranks")
    shard = read_state_file(path / shard_name(ctx.rank)) if meta.get("sharded") else None
    return Loaded(state, ranks[ctx.rank], shard, meta)


def resolve_resume(resume: str | None, checkpoints_dir: str | Path) -> Path | None:
    """``--resume``: ``auto`` → the newest complete checkpoint (None: start fresh); a checkpoint directory; or a
    run directory (its newest checkpoint)."""
    if resume is None:
        return None
    if resume == "auto":
        found = list_checkpoints(checkpoints_dir)
        return found[-1] if found else None
    path = Path(resume).expanduser()
    if (path / META_NAME).is_file():
        return path
    found = list_checkpoints(path / "checkpoints") or list_checkpoints(path)
    if found:
        return found[-1]
    raise FileNotFoundError(f"--resume {resume}: neither a checkpoint directory (with {META_NAME}) nor a run "
                            "directory holding one; use --resume auto to continue the newest checkpoint")
