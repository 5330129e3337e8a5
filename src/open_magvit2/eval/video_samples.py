"""Video sample files: what ``evaluate-video-generator`` reads (and ``sample-fvd`` writes).

The layout is the one ``sample-fid`` writes for images (ADM ``.npz``, :mod:`open_magvit2.generator.fid`), with a
time axis added:

* ``arr_0``: uint8 (N, T, H, W, 3) clips, frames in display order, RGB;
* ``labels``: int64 (N,) class of every clip (optional on read: FVD does not use it).

Both are plain ``.npy`` members of a zip archive (``np.savez``, ``np.savez_compressed`` and
:func:`write_video_samples` all write it). Reading checks the header only, before any clip is decoded, and streams
the clips in batches (10,000 clips of 16×128² are 7.9 GB). T must be at least :data:`MIN_FRAMES`: the I3D of FVD
halves time three times (stride-2 stem conv, ``MaxPool3d_4a``, ``MaxPool3d_5a``, TF "SAME" padding) and then
averages over windows of 2 steps, so it needs ⌈⌈⌈T/2⌉/2⌉/2⌉ ≥ 2, i.e. T ≥ 9 (docs/design.md O-50).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from open_magvit2.fileio import atomic_write, read_npy_header

MIN_FRAMES = 9  # the shortest clip the I3D port accepts (module docstring)
FORMAT = "arr_0 uint8 (N, T, H, W, 3) clips, labels int64 (N,)"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry times: the same clips give the same bytes (as sample-fid's files)


@dataclass(frozen=True)
class VideoSamplesInfo:
    """What a video sample file holds, read from its headers: ``shape`` = (N, T, H, W, 3)."""

    path: Path
    shape: tuple[int, int, int, int, int]
    keys: tuple[str, ...]
    fortran_order: bool = False

    @property
    def num(self) -> int:
        return self.shape[0]

    @property
    def frames(self) -> int:
        return self.shape[1]

    @property
    def height(self) -> int:
        return self.shape[2]

    @property
    def width(self) -> int:
        return self.shape[3]


def npz_header(path: str | Path, key: str, what: str = "npz file") -> tuple[tuple[str, ...], tuple[int, ...],
                                                                            np.dtype, bool]:
    """(arrays in the file, shape, dtype, Fortran order) of the array ``key`` of an ``.npz``, from its header only;
    ``FileNotFoundError`` / ``ValueError`` (one line) when the file is missing, not an ``.npz`` or has no ``key``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with zipfile.ZipFile(path) as z:
            keys = tuple(n[:-4] for n in z.namelist() if n.endswith(".npy"))
            if key not in keys:
                raise ValueError(f"{path} has no '{key}' array (it holds {list(keys)})")
            with z.open(f"{key}.npy") as f:
                shape, fortran, dtype = read_npy_header(f)
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not an .npz file") from None
    return keys, tuple(shape), dtype, bool(fortran)


def check_clips(shape: tuple[int, ...], dtype: np.dtype, where: str) -> None:
    """``ValueError`` unless (shape, dtype) are uint8 (N, T, H, W, 3) clips of at least :data:`MIN_FRAMES` frames."""
    if dtype != np.uint8 or len(shape) != 5 or shape[4] != 3:
        hint = ("; it holds images: evaluate them with evaluate-generator" if dtype == np.uint8 and len(shape) == 4
                and shape[3] == 3 else "")
        raise ValueError(f"{where} must be uint8 (N, T, H, W, 3) clips, got {np.dtype(dtype)} {tuple(shape)}{hint}")
    if shape[1] < MIN_FRAMES:
        raise ValueError(f"{where} holds clips of {shape[1]} frames; the I3D of FVD needs at least {MIN_FRAMES} "
                         "(it halves time three times, then pools over 2 steps)")
    if min(shape[2:4]) < 1:
        raise ValueError(f"{where} holds clips of {shape[2]}×{shape[3]} pixels")


def video_samples_info(path: str | Path) -> VideoSamplesInfo:
    """Check a video sample file from its headers (module docstring) without reading the clips."""
    path = Path(path)
    try:
        keys, shape, dtype, fortran = npz_header(path, "arr_0", "video samples file")
    except ValueError as e:
        if "has no 'arr_0'" in str(e):
            raise ValueError(f"{e}; video sample files store clips as {FORMAT}") from None
        raise
    check_clips(shape, dtype, f"{path}: 'arr_0'")
    if "labels" in keys:
        _, lshape, ldtype, _ = npz_header(path, "labels")
        if not np.issubdtype(ldtype, np.integer) or lshape != shape[:1]:
            raise ValueError(f"{path}: 'labels' must be integer ({shape[0]},) class ids, one per clip; got "
                             f"{ldtype} {lshape}")
    return VideoSamplesInfo(path, shape, keys, fortran)  # type: ignore[arg-type]


def read_labels(path: str | Path) -> np.ndarray | None:
    """The int64 (N,) labels of a video sample file, or None when it has none."""
    info = video_samples_info(path)
    if "labels" not in info.keys:
        return None
    with np.load(info.path) as z:
        return z["labels"].astype(np.int64)


def iter_video_samples(path: str | Path, batch_size: int, info: VideoSamplesInfo | None = None) -> Iterator[np.ndarray]:
    """Stream the clips of a video sample file in order as uint8 (b, T, H, W, 3) batches (writable arrays), reading
    one batch of bytes at a time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    info = info or video_samples_info(path)
    n, per_clip = info.num, int(np.prod(info.shape[1:]))
    if info.fortran_order:  # rare: column-major data cannot be streamed clip by clip
        with np.load(info.path) as z:
            arr = z["arr_0"]
        for start in range(0, n, batch_size):
            yield np.ascontiguousarray(arr[start : start + batch_size])
        return
    with zipfile.ZipFile(info.path) as z, z.open("arr_0.npy") as f:
        read_npy_header(f)
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            buf = f.read(b * per_clip)
            if len(buf) != b * per_clip:
                raise ValueError(f"{info.path}: 'arr_0' is truncated (expected {n} clips)")
            yield np.frombuffer(bytearray(buf), dtype=np.uint8).reshape(b, *info.shape[1:])


def write_video_samples(path: str | Path, clips: np.ndarray, labels: np.ndarray | list[int]) -> Path:
    """Write clips and their labels as a video sample file, atomically; the bytes depend only on the arrays."""
    clips = np.ascontiguousarray(clips)
    labels = np.asarray(labels)
    check_clips(clips.shape, clips.dtype, "clips")
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != clips.shape[:1]:
        raise ValueError(f"labels must be integer ({clips.shape[0]},) class ids, one per clip; got {labels.dtype} "
                         f"{labels.shape}")

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for key, arr in (("arr_0", clips), ("labels", labels.astype(np.int64))):
                with z.open(zipfile.ZipInfo(f"{key}.npy", _ZIP_TIME), "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, arr, allow_pickle=False)

    return atomic_write(path, write)
