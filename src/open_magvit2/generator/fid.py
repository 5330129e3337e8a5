"""Class-by-class sampling for the FID-50k protocol (docs/design.md O-43), reproducible whatever the number of ranks;
the same job samples clips for FVD (``sample-fvd``).

The official script seeds one RNG per process (``global_seed·num_chunks + chunk_idx``), so its samples change with
the number of GPUs. Here each class owns a generator seeded from (global seed, class), classes are dealt to
ranks round-robin, and a class is always sampled in the same batches: the per-class images are identical on 1 or
N ranks (for a fixed ``batch_size``, device and dtype).

:func:`sample_npz` is the resumable job behind ``sample-fid`` and ``sample-fvd``: every class goes to its own file
in ``<out>.parts/`` as soon as it is sampled (atomically), a restarted run skips the classes already there
(whatever the number of ranks), and the final ``.npz`` is streamed together class by class, so no process ever holds
more than one class (the official ``combine_npz.py`` holds all 50k images, 9.8 GB, twice). Samples are uint8
channels-last: images (H, W, 3) from an :class:`ImageGenerator`, clips (T, H, W, 3) from a :class:`VideoGenerator`,
so the file is the ADM ``.npz`` for images and the video sample file of ``evaluate-video-generator`` for clips
(``eval/video_samples.py``).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from open_magvit2.distributed import DistContext, barrier
from open_magvit2.fileio import atomic_write, read_npy_header, write_npy
from open_magvit2.generator.api import TokenGenerator
from open_magvit2.imaging import to_uint8_tensor
from open_magvit2.progress import progress

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry times: the same samples give the same bytes


def class_seed(global_seed: int, cls: int) -> int:
    """A 63-bit seed for class ``cls``, derived from (global_seed, cls) by numpy's SeedSequence hashing."""
    state = np.random.SeedSequence([int(global_seed), int(cls)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def shard_classes(classes: Sequence[int], rank: int, world_size: int) -> list[int]:
    """The classes rank ``rank`` of ``world_size`` samples: every world_size-th one, starting at ``rank``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return list(classes)[rank::world_size]


@torch.no_grad()
def sample_class(
    gen: TokenGenerator,
    cls: int,
    num: int,
    *,
    seed: int,
    batch_size: int = 50,
    progress: bool = False,
    first_frame: torch.Tensor | None = None,
    **sampling: Any,
) -> np.ndarray:
    """``num`` samples of class ``cls`` as uint8, channels last: images (num, H, W, 3) from an image generator,
    clips (num, T, H, W, 3) from a video generator; drawn with the class's own seeded generator, in batches of
    ``batch_size``.

    ``first_frame`` (video generators only): (num, 3, H, W) in [−1, 1], the image sample i continues
    (:meth:`VideoGenerator.generate <open_magvit2.VideoGenerator.generate>`). ``sampling`` goes to ``generate``
    (cfg_scale, temperature, top_k, top_p).
    """
    if num < 1 or batch_size < 1:
        raise ValueError(f"num and batch_size must be >= 1, got num={num}, batch_size={batch_size}")
    if first_frame is not None and first_frame.shape[0] != num:
        raise ValueError(f"got {first_frame.shape[0]} first frames for {num} samples")
    device = gen.transformer.pre_emb.weight.device
    rng = torch.Generator(device=device).manual_seed(class_seed(seed, cls))
    out = []
    for start in range(0, num, batch_size):
        stop = min(start + batch_size, num)
        labels = torch.full((stop - start,), int(cls), dtype=torch.int64, device=device)
        first = {} if first_frame is None else {"first_frame": first_frame[start:stop]}
        indices = gen.generate(labels, generator=rng, progress=progress, **first, **sampling)
        out.append(to_uint8_tensor(gen.decode(indices)).movedim(1, -1).cpu().numpy())  # (b, 3, ...) → (b, ..., 3)
    return np.concatenate(out)


def sample_shard(
    gen: TokenGenerator,
    classes: Sequence[int],
    num_per_class: int,
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 50,
    on_class: Callable[[int], None] | None = None,
    **sampling: Any,
) -> dict[int, np.ndarray]:
    """Samples of this rank's share of ``classes``: {class: uint8 (num_per_class, H, W, 3) images, or
    (num_per_class, T, H, W, 3) clips}."""
    out = {}
    for cls in shard_classes(classes, rank, world_size):
        out[cls] = sample_class(gen, cls, num_per_class, seed=seed, batch_size=batch_size, **sampling)
        if on_class is not None:
            on_class(cls)
    return out


# ---- the resumable sample job (FID, FVD) ---------------------------------------------------------------------------


def parts_dir(out: str | Path) -> Path:
    """Where :func:`sample_npz` keeps one ``.npy`` per finished class until the merge: ``<out>.parts/``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _class_file(parts: Path, cls: int) -> Path:
    return parts / f"class_{cls:06d}.npy"


def _is_complete(path: Path, num: int) -> bool:
    """A class file written whole (atomic writes: it exists only when complete) with ``num`` uint8 samples
    (images or clips, channels last)."""
    if not path.is_file():
        return False
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        return False
    return arr.dtype == np.uint8 and arr.ndim in (4, 5) and arr.shape[0] == num and arr.shape[-1] == 3


def _check_run(parts: Path, run: dict[str, Any], ctx: DistContext, restart: bool) -> None:
    """Rank 0 records the job in ``run.json`` (or clears the folder with ``restart``); every rank then refuses to
    mix its classes into the parts of a different job."""
    manifest = parts / "run.json"
    if ctx.is_main:
        if restart and parts.exists():
            shutil.rmtree(parts)
        if not manifest.is_file():
            atomic_write(manifest, lambda p: p.write_text(json.dumps(run, indent=1) + "\n"))
    barrier(ctx)
    old = json.loads(manifest.read_text())
    if old != run:
        changed = sorted(k for k in run if old.get(k) != run[k])
        raise ValueError(f"{parts} holds the samples of a different run (differs in: {', '.join(changed)}); pass "
                         "--restart to discard them, or another output file")


def sample_npz(
    gen: TokenGenerator,
    out: str | Path,
    classes: Sequence[int],
    num_per_class: int,
    *,
    ctx: DistContext,
    seed: int,
    checkpoint: str = "",
    batch_size: int = 50,
    restart: bool = False,
    show_progress: bool = True,
    **sampling: Any,
) -> Path | None:
    """Sample ``num_per_class`` samples of every class into the ``.npz`` ``out`` (``arr_0`` uint8 (N, H, W, 3)
    images or (N, T, H, W, 3) clips in class order, ``labels`` int64 (N,)); resumable (module docstring). This rank
    samples ``shard_classes(classes, rank, world)``; rank 0 merges and returns the path (other ranks return None)."""
    parts = parts_dir(out)
    run = {"checkpoint": checkpoint, "classes": [int(c) for c in classes], "num_per_class": num_per_class,
           "seed": seed, "batch_size": batch_size, "sampling": {k: v for k, v in sampling.items()}, "format": 1}
    _check_run(parts, json.loads(json.dumps(run)), ctx, restart)  # JSON round trip: tuples compare as lists
    mine = shard_classes(classes, ctx.rank, ctx.world_size)
    bar = progress(mine, len(mine), f"rank {ctx.rank}/{ctx.world_size}: classes", enabled=show_progress,
                   unit="class")
    for cls in bar:
        path = _class_file(parts, cls)
        if not _is_complete(path, num_per_class):  # done by an earlier, interrupted run: skip
            write_npy(path, sample_class(gen, cls, num_per_class, seed=seed, batch_size=batch_size, **sampling))
    barrier(ctx)
    if not ctx.is_main:
        return None
    merge_npz(out, [_class_file(parts, c) for c in classes], classes)
    shutil.rmtree(parts)
    return Path(out)


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    with open(path, "rb") as f:
        shape, _, dtype = read_npy_header(f)
    return shape, dtype


def merge_npz(out: str | Path, files: Sequence[Path], classes: Sequence[int]) -> Path:
    """Stream per-class uint8 ``.npy`` files of samples of one shape, (n, H, W, 3) images or (n, T, H, W, 3)
    clips, into one ``.npz`` (``arr_0``, ``labels``), atomically and one class in memory at a time; the bytes depend
    only on the samples."""
    if not files:
        raise ValueError("no classes to merge")
    heads = [_npy_header(f) for f in files]  # (shape, dtype) without reading the data
    shape = heads[0][0][1:]
    bad = [str(f) for f, (s, d) in zip(files, heads) if s[1:] != shape or d != np.uint8]
    if bad:
        kind = "clip" if len(shape) == 4 else "image"
        raise ValueError(f"class files of different {kind} shapes or dtypes: {bad[:3]}; pass --restart")
    labels = np.repeat(np.asarray(classes, dtype=np.int64), [s[0] for s, _ in heads])
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (len(labels), *shape)}

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            with z.open(zipfile.ZipInfo("arr_0.npy", _ZIP_TIME), "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(f, header)
                for path in files:  # one class (50 × 256² × 3 = 9.8 MB of images) in memory at a time
                    f.write(np.ascontiguousarray(np.load(path)).tobytes())
            with z.open(zipfile.ZipInfo("labels.npy", _ZIP_TIME), "w", force_zip64=True) as f:
                np.lib.format.write_array(f, labels, allow_pickle=False)

    return atomic_write(out, write)
