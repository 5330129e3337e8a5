"""Evaluation inputs in a fixed, documented order: image folders, ADM ``.npz`` sample files, video clip lists.

Order is what makes an evaluation reproducible and resumable: files are sorted by relative path (the official
ImageNet ``filelist.txt`` order, docs/design.md O-45), a subset is an evenly spaced selection of that list, and a
rank of a distributed run takes every ``world``-th position (:func:`shard`), so no image is seen twice or skipped.

A file that cannot be read comes back from the datasets here as its message, not as an exception (which a
DataLoader worker would hand on wrapped in its traceback): the evaluation loops skip it, record its position
(resume states, reports) and leave it out of the metrics, or stop at it under ``strict`` (README, "Batch jobs").
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from open_magvit2.data.video_io import iter_frames
from open_magvit2.fileio import find_files, read_npy_header
from open_magvit2.imaging import load_image, shorter_side_size

T = TypeVar("T")


def list_files(root: str | Path, suffixes: tuple[str, ...], what: str) -> list[str]:
    """Relative POSIX paths of all files under the folder ``root`` with these suffixes (any case), sorted; hidden
    files and folders are skipped (:func:`~open_magvit2.fileio.find_files`). For ImageNet-val synset folders and
    flat folders alike."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {root}")
    return [f.name for f in find_files([root], suffixes, what, unique_stems=False)]


def subset(items: list[T], limit: int | None) -> list[T]:
    """The first ``limit`` of an evenly spaced selection (every class of a synset-sorted list is represented)."""
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise ValueError(f"the number of items to evaluate must be positive, got {limit}")
    return [items[(i * len(items)) // limit] for i in range(limit)]


def list_digest(items: list[str]) -> str:
    """A short fingerprint of an ordered file list (recorded in reports and resume states)."""
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]


def shard(n: int, rank: int, world: int) -> list[int]:
    """Positions 0..n−1 that rank ``rank`` of ``world`` evaluates: every world-th, so the union is exact."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world}")
    return list(range(rank, n, world))


class ImageFiles(Dataset):
    """(position, image (3, H, W) in [−1, 1] or None, "" or why it cannot be read) with the official
    preprocessing (:func:`~open_magvit2.imaging.load_image`) for the given positions of a list of image paths."""

    def __init__(self, paths: list[Path], positions: list[int], size: int | None) -> None:
        self.paths, self.positions, self.size = paths, positions, size

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[int, Tensor | None, str]:
        pos = self.positions[i]
        try:
            return pos, load_image(self.paths[pos], self.size)[0], ""
        except (ValueError, OSError) as e:  # returned, not raised: see the module docstring
            return pos, None, str(e) or type(e).__name__


class ReadBatch(NamedTuple):
    """A DataLoader batch of (position, tensor or None, error) items, split by :func:`collate_read`."""

    positions: list[int]  # the items with a tensor, in order
    data: Tensor | None  # their tensors, stacked; None when there is none
    empty: list[int]  # read, but nothing to evaluate (a video shorter than the clip)
    unreadable: list[tuple[int, str]]  # (position, why it cannot be read)


def collate_read(items: list[tuple[int, Tensor | None, str]]) -> ReadBatch:
    good = [(p, x) for p, x, err in items if x is not None]
    return ReadBatch([p for p, _ in good], torch.stack([x for _, x in good]) if good else None,
                     [p for p, x, err in items if x is None and not err], [(p, err) for p, _, err in items if err])


def unreadable_reason(reason: str, path: str | Path) -> str:
    """What a report records of a file that cannot be read: the reader's message without the path it starts with."""
    return reason.removeprefix(f"{path}: ")


def strict_stop(name: str, reason: str, path: str | Path) -> ValueError:
    """The one line a ``strict`` evaluation stops with at a file that cannot be read: the reader's message, which
    names the file (prefixed with its name where it does not)."""
    return ValueError(reason if str(path) in reason else f"{name}: {reason}")


def too_few_readable(what: str, read: int, total: int, unreadable: list[tuple[str, str]], need: str) -> ValueError:
    """``ValueError`` for an evaluation left with too few files to compute its metric once the unreadable ones are
    skipped: how many were read and the first few that were not, with why."""
    listed = ", ".join(f"{name} ({reason})" for name, reason in unreadable[:3])
    more = f", and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
    return ValueError(f"{need}; only {read} of {total} {what} could be read (not: {listed}{more})")


# ---- ADM .npz sample files ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NpzInfo:
    path: Path
    shape: tuple[int, ...]
    keys: tuple[str, ...]


def npz_info(path: str | Path, key: str = "arr_0") -> NpzInfo:
    """Array names and the shape of ``key`` without reading the data."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"npz file not found: {path}")
    try:
        with zipfile.ZipFile(path) as z:
            keys = tuple(n[:-4] for n in z.namelist() if n.endswith(".npy"))
            if key not in keys:
                raise ValueError(f"{path} has no '{key}' array (it holds {list(keys)}); ADM sample files store "
                                 "images as arr_0, uint8 (N, H, W, 3)")
            with z.open(f"{key}.npy") as f:
                shape, _, dtype = read_npy_header(f)
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not an .npz file") from None
    if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3:
        raise ValueError(f"{path}: '{key}' must be uint8 (N, H, W, 3) images, got {dtype} {shape}")
    return NpzInfo(path, shape, keys)


def iter_npz_images(path: str | Path, batch_size: int, key: str = "arr_0") -> Iterator[np.ndarray]:
    """Stream (b, H, W, 3) uint8 batches of ``key`` from an .npz without loading the whole array (a 50k×256²
    sample file is 9.8 GB), as the ADM evaluator's streaming reader does."""
    info = npz_info(path, key)
    per_image = int(np.prod(info.shape[1:]))
    with zipfile.ZipFile(path) as z, z.open(f"{key}.npy") as f:
        _, fortran, _ = read_npy_header(f)
        if fortran:  # rare: column-major data cannot be streamed image by image
            arr = np.load(path)[key]
            for start in range(0, info.shape[0], batch_size):
                yield np.ascontiguousarray(arr[start : start + batch_size])
            return
        for start in range(0, info.shape[0], batch_size):
            n = min(batch_size, info.shape[0] - start)
            buf = f.read(n * per_image)
            if len(buf) != n * per_image:
                raise ValueError(f"{path}: '{key}' is truncated (expected {info.shape[0]} images)")
            yield np.frombuffer(bytearray(buf), dtype=np.uint8).reshape(n, *info.shape[1:])  # writable


# ---- video clips -------------------------------------------------------------------------------------------------


def read_split_list(path: str | Path) -> list[str]:
    """A UCF-101 style split file (``testlist01.txt``: one relative path per line, optional label after it)."""
    lines = Path(path).read_text().splitlines()
    return sorted({ln.split()[0].replace("\\", "/") for ln in lines if ln.strip()})


def centre_window(num_frames: int, length: int) -> tuple[int, int] | None:
    """The official evaluation window (docs/design.md O-47): frames [n//2 − length//2, …) of ``length`` frames, or
    None when the video is shorter (the official loader would fail on it)."""
    if num_frames < length:
        return None
    start = num_frames // 2 - length // 2
    return start, start + length


def load_clip(path: str | Path, length: int, size: int) -> Tensor | None:
    """Decode a video (PyAV), take the centre window of ``length`` frames, resize the shorter side to ``size``
    (bilinear, no antialias: the official cv2 resize, up to rounding) and centre-crop ``size``² (the official
    random crop, made deterministic). Returns uint8 (3, length, size, size), or None if the video is too short."""
    frames = list(iter_frames(path, multiple=1))  # (3, H, W) uint8 each, at the native frame rate
    window = centre_window(len(frames), length)
    if window is None:
        return None
    clip = torch.stack(frames[window[0] : window[1]]).float()  # (T, 3, H, W)
    rh, rw = shorter_side_size(*clip.shape[-2:], size)  # cv2 with int(): the long side truncated (docs/design.md O-47)
    h, w = clip.shape[-2:]
    if (rh, rw) != (h, w):
        clip = F.interpolate(clip, size=(rh, rw), mode="bilinear", align_corners=False).round().clamp(0, 255)
    top, left = (rh - size) // 2, (rw - size) // 2
    clip = clip[..., top : top + size, left : left + size]
    return clip.to(torch.uint8).permute(1, 0, 2, 3).contiguous()  # (3, T, size, size)
