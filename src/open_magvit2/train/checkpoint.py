"""Training checkpoints for both trainers: atomic save, the last K kept, and the one reader of run checkpoints
(``newest_checkpoint``, ``read_checkpoint``, ``run_weights``) that resume, export and the training inits share.

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

A checkpoint that cannot be read (a disk error, a file damaged after the fact) is skipped by
:func:`newest_checkpoint` in favour of the next older one, with a line saying which and why.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from open_magvit2.checkpoints.official import check_weights, first_sentence
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


# ---- reading --------------------------------------------------------------------------------------------------


class DamagedCheckpoint(ValueError):
    """A checkpoint that cannot be used: unreadable files, or weights that are not finite."""


class Loaded(NamedTuple):
    path: Path  # the checkpoint directory
    state: dict[str, Any]  # rank 0's payload (every rank reads it)
    rank_state: dict[str, Any]  # this rank's own state
    shard: dict[str, Any] | None  # this rank's shard (sharded runs)
    meta: dict[str, Any]


def read_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    meta_file = path / META_NAME
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path}: not a complete training checkpoint (no {META_NAME})")
    try:
        return json.loads(meta_file.read_text())
    except ValueError:
        raise DamagedCheckpoint(f"{meta_file}: damaged checkpoint metadata (not JSON)") from None


def read_state_file(path: Path) -> dict[str, Any]:
    """One checkpoint file, read with ``weights_only=True`` (tensors and plain values; nothing is executed)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing from its checkpoint") from None
    except Exception as e:  # damaged file or one that needs pickle code: never executed
        raise DamagedCheckpoint(f"{path}: unreadable checkpoint file ({type(e).__name__}: {first_sentence(e)}); "
                                "nothing in it was executed") from None


def read_checkpoint(path: str | Path, ctx: DistContext | None = None) -> Loaded:
    """Read a checkpoint for this rank (rank 0 of 1 without ``ctx``). The world size must match the one that wrote
    it when resuming (per-rank RNG streams and data positions only make sense on the same number of ranks)."""
    path = Path(path)
    meta = read_meta(path)
    rank = 0 if ctx is None else ctx.rank
    if ctx is not None and meta["world_size"] != ctx.world_size:
        raise ValueError(
            f"{path} was written by {meta['world_size']} ranks; resume it with the same number "
            f"(torchrun --nproc-per-node/--nnodes), not {ctx.world_size}"
        )
    state = read_state_file(path / STATE_NAME)
    ranks = state.pop("ranks")
    shard = read_state_file(path / shard_name(rank)) if meta.get("sharded") and ctx is not None else None
    return Loaded(path, state, ranks[rank], shard, meta)


def _candidates(path: Path) -> list[Path]:
    """A checkpoint directory as is; a run directory (or its ``checkpoints/``) → its checkpoints, newest first."""
    if (path / META_NAME).is_file():
        return [path]
    return list(reversed(list_checkpoints(path / "checkpoints") or list_checkpoints(path)))


def newest_checkpoint(run_or_checkpoint: str | Path, *, what: str = "", check: Any = None) -> Loaded:
    """The newest intact checkpoint of a run directory (or the given checkpoint directory), read for rank 0.

    A damaged checkpoint (unreadable, or rejected by ``check(loaded)`` with :class:`DamagedCheckpoint`) is skipped
    in favour of the next older one, saying which and why on stderr; a checkpoint directory given explicitly is
    never replaced. Other errors of ``check`` (the wrong kind of run, say) are raised at once. ``what`` prefixes the
    error (e.g. ``"--resume runs/x"``).
    """
    path = Path(run_or_checkpoint).expanduser()
    found = _candidates(path)
    if not found:
        raise FileNotFoundError(f"{what or path}: neither a run directory with checkpoints/step_* nor a checkpoint "
                                f"directory (with {META_NAME})")
    explicit = (path / META_NAME).is_file()
    for i, ckpt in enumerate(found):
        try:
            loaded = read_checkpoint(ckpt)
            if check is not None:
                check(loaded)
            return loaded
        except (DamagedCheckpoint, OSError) as e:
            if explicit:
                raise
            if i + 1 == len(found):
                raise DamagedCheckpoint(f"{e}; no older checkpoint of {path} is intact either") from None
            print(f"skipping {ckpt.name}: {e}; using {found[i + 1].name}", file=sys.stderr)
    raise AssertionError("unreachable")


def resolve_resume(resume: str | None, run_dir: str | Path) -> Loaded | None:
    """``--resume``: None → a fresh start; ``auto`` → the newest intact checkpoint of ``run_dir`` (None when it has
    none yet); otherwise a checkpoint directory or another run directory (its newest intact checkpoint)."""
    if resume is None:
        return None
    if resume == "auto":
        return newest_checkpoint(run_dir) if list_checkpoints(Path(run_dir) / "checkpoints") else None
    path = Path(resume).expanduser()
    if not _candidates(path):
        raise FileNotFoundError(f"--resume {resume}: neither a checkpoint directory (with {META_NAME}) nor a run "
                                "directory holding one; use --resume auto to continue the newest checkpoint")
    return newest_checkpoint(path, what=f"--resume {resume}")


# ---- weights of a run ---------------------------------------------------------------------------------------------

Weights = Literal["ema", "raw"]


def gather_shards(checkpoint: str | Path, world_size: int) -> dict[str, Tensor]:
    """The full parameters of a sharded (FSDP2) checkpoint, no process group needed: FSDP2 splits every parameter
    along dim 0 like ``torch.chunk``, so the full tensor is the concatenation of the shards in rank order."""
    checkpoint = Path(checkpoint)
    parts = [read_state_file(checkpoint / shard_name(r))["model"] for r in range(world_size)]
    return {name: torch.cat([p[name] for p in parts], dim=0) for name in parts[0]}


def has_ema(state: Mapping[str, Any]) -> bool:
    return state.get("ema") is not None


def checkpoint_weights(loaded: Loaded, weights: Weights | None = None) -> tuple[dict[str, Tensor], Weights]:
    """(state dict, which) of the trained model in a run checkpoint; sharded checkpoints are gathered.

    The one EMA policy: ``weights=None`` takes what the run's recipe kept as its result (the EMA weights when
    ``run.ema_decay`` was set, the trained weights when it was null); ``"ema"`` on a run without EMA weights is an
    error that says ``--weights raw``; ``"raw"`` is always the trained weights.
    """
    state = loaded.state
    if weights is not None:
        check_weights(weights)
    if weights == "ema" and not has_ema(state):
        raise ValueError(f"{loaded.path} keeps no EMA weights (its recipe has run.ema_decay: null); use --weights raw "
                         "(init.weights: raw in a recipe) for its trained weights")
    if weights != "raw" and has_ema(state):
        return dict(state["ema"]), "ema"
    if state.get("sharded"):
        return gather_shards(loaded.path, loaded.meta["world_size"]), "raw"
    return dict(state["model"]), "raw"


def nonfinite_tensors(weights: Mapping[str, Tensor]) -> list[str]:
    """Names of the floating tensors that hold a NaN or an infinity."""
    return [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def check_finite(loaded: Loaded, weights: Weights | None = None) -> None:
    """``ValueError`` when the weights ``checkpoint_weights`` would give are not all finite."""
    bad = nonfinite_tensors(checkpoint_weights(loaded, weights)[0])
    if bad:
        n = f"{len(bad)} tensor{'s' if len(bad) > 1 else ''}"
        raise DamagedCheckpoint(f"{loaded.path} holds non-finite weights ({n}, e.g. {bad[0]}); it is never used")


def run_weights(run_or_checkpoint: str | Path, kind: str, weights: Weights | None = None
                ) -> tuple[dict[str, Tensor], Weights, Loaded]:
    """(state dict, which, checkpoint) of the newest intact ``kind`` ("tokenizer" or "generator") checkpoint of a
    run (or of the given checkpoint): readable, of that kind, and with finite weights."""

    def check(loaded: Loaded) -> None:
        if loaded.state.get("kind") != kind:
            raise ValueError(f"{loaded.path} is a {loaded.state.get('kind')} run checkpoint, not a {kind} one")
        check_finite(loaded, weights)

    loaded = newest_checkpoint(run_or_checkpoint, check=check)
    sd, which = checkpoint_weights(loaded, weights)
    return sd, which, loaded


def is_run(path: str | Path) -> bool:
    """True for a run directory (with complete checkpoints) or a run checkpoint directory."""
    path = Path(path)
    return path.is_dir() and bool(_candidates(path))
