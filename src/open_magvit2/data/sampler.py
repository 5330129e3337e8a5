"""Which samples, in which order: folder indexes, per-epoch orders split over ranks, and per-sample randomness.

Every random choice of the training pipelines is a pure function of the run's seed, the epoch and a sample's
identity, drawn from a NumPy ``SeedSequence`` of those integers (:func:`sample_rng`). Nothing reads a global RNG,
so the batches do not depend on the number of DataLoader workers, on worker timing, or on how often a run was
stopped and resumed.

Distributed split of an indexable dataset (:func:`rank_batches`): one permutation per epoch, shared by all ranks,
truncated to a multiple of ``world_size · batch_size`` (drop-last, so every rank takes the same number of batches
and no rank waits on another at the end of an epoch). Global batch j is ``perm[j·W·B : (j+1)·W·B]`` and rank r
takes its r-th slice of B, so the W ranks together see exactly the batches of a 1-rank run with batch W·B.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Stream tags keep the random streams of different purposes apart (SeedSequence entropy is a list of ints).
ORDER, SHUFFLE, AUGMENT = 1, 2, 3

# docs/design.md O-45: the official ImageNet loader always leaves out this one file.
OFFICIAL_EXCLUDED = frozenset({"n06596364_9591.JPEG"})


def sample_rng(seed: int, *keys: int) -> np.random.Generator:
    """A NumPy generator that depends only on ``(seed, *keys)`` (all non-negative ints)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *keys])))


def check_split(*, batch_size: int, rank: int, world_size: int, seed: int, num_workers: int) -> None:
    """Validate the arguments every stream shares; raise ValueError saying what to pass instead."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")


def batches_per_rank(num_samples: int, *, batch_size: int, world_size: int) -> int:
    """Batches each rank takes per epoch after drop-last truncation to a multiple of world_size · batch_size."""
    return num_samples // (world_size * batch_size)


def rank_batches(
    num_samples: int, *, seed: int, epoch: int, rank: int, world_size: int, batch_size: int
) -> np.ndarray:
    """This rank's batches of sample indices for one epoch, (batches, batch_size) int64 (module docstring)."""
    perm = sample_rng(seed, ORDER, epoch).permutation(num_samples)
    n = batches_per_rank(num_samples, batch_size=batch_size, world_size=world_size)
    return perm[: n * world_size * batch_size].reshape(n, world_size, batch_size)[:, rank]


# ---- folders -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FolderIndex:
    """The files of a dataset folder, sorted by relative path, with their class labels.

    ``class_names[label]`` is the top-level folder of each class (ImageNet's synsets, UCF-101's actions), in
    sorted order (docs/design.md O-45). A flat folder has one class named after the folder and every label is 0.
    """

    root: Path
    files: tuple[str, ...]  # POSIX paths relative to root
    labels: tuple[int, ...]
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.files)


def scan_folder(root: str | os.PathLike[str], extensions: Collection[str], what: str) -> FolderIndex:
    """Find every file under ``root`` whose lower-case suffix is in ``extensions``, recursively.

    Files directly in ``root`` make a flat (unlabelled) dataset; files inside top-level folders take the index of
    that folder in sorted order as their label. Hidden files and folders are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such {what} folder: '{root}'")
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in extensions and name not in OFFICIAL_EXCLUDED:
                files.append((rel / name).as_posix())
    if not files:
        raise ValueError(f"no {what} files ({', '.join(sorted(extensions))}) found under '{root}'")
    files.sort()
    top = [f.split("/", 1)[0] if "/" in f else None for f in files]
    if all(t is None for t in top):
        return FolderIndex(root, tuple(files), (0,) * len(files), (root.resolve().name,))
    if any(t is None for t in top):
        loose = next(f for f, t in zip(files, top) if t is None)
        raise ValueError(
            f"'{root}' holds {what} files both directly (e.g. '{loose}') and in class folders; "
            "move them all into class folders, or all into one folder"
        )
    classes = sorted(set(top))  # type: ignore[arg-type]
    label_of = {c: i for i, c in enumerate(classes)}
    return FolderIndex(root, tuple(files), tuple(label_of[t] for t in top), tuple(classes))  # type: ignore[index]
