"""Training video clips (docs/design.md O-47): a window of ``frames`` consecutive frames per video per epoch,
decoded alone.

The official UCF-101 loader decodes every whole video with decord and then keeps a random 17-frame window
(docs/design.md O-47). :func:`read_clip` opens the file with PyAV, decodes the first frame (size, first timestamp),
picks the window from the container's frame count, seeks to the key frame before it and stops after its last frame,
so only the frames of one group of pictures plus the window are decoded. The frames it returns are the frames
``[start, start + frames)`` that ``data.video_io.read_video`` returns for the same ``fps`` (exact for constant
frame-rate videos; ``tests/data`` checks it): ``fps=None`` keeps the native rate, otherwise output frame k shows
the source frame on screen at k/fps.

Each frame: shorter side to ``size`` (PIL bilinear with antialiasing, as the image pipeline; the official loader
uses cv2 without antialiasing), the same ``size``×``size`` crop for all frames (random for training, as the
official loader; centre with ``random_crop=False``), then ``uint8 / 127.5 − 1``. The window start and the crop
come from ``sample_rng(seed, AUGMENT, epoch, video)``. A video shorter than ``frames`` is a bad sample (the
official loader crashes on it).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from open_magvit2.data.sampler import AUGMENT, FolderIndex, check_split, sample_rng, scan_folder
from open_magvit2.data.stream import BatchStream, IndexedSource, Sample, describe
from open_magvit2.data.video_io import INSTALL_HINT, VIDEO_SUFFIXES, FrameGeometry, frame_to_rgb, uint8_to_video


@dataclass(frozen=True)
class Clip:
    """``video``: uint8 (3, frames, size, size); ``start``: its first output frame; ``geometry``: resize + crop."""

    video: Tensor
    start: int
    geometry: FrameGeometry


def _decoded(container: Any, stream: Any) -> Iterator[Any]:
    """Decoded frames from the container's current position (one place, so tests can count the decoding)."""
    yield from container.decode(stream)


class _Timeline:
    """Output frame k ↔ time k · step after the first frame (``data.video_io.iter_frames``' rule)."""

    def __init__(self, stream: Any, first: Any, fps: float | None) -> None:
        rate = stream.average_rate or stream.guessed_rate
        if not rate or first.pts is None:
            raise ValueError("the video has no frame rate or timestamps")
        self.rate, self.tb, self.t0 = Fraction(rate), Fraction(stream.time_base), first.pts
        self.native = fps is None
        self.step = 1 / self.rate if fps is None else 1 / Fraction(fps).limit_denominator(1_000_000)

    def time(self, frame: Any) -> Fraction:
        t = (frame.pts - self.t0) * self.tb
        # native rate: snap to the frame grid, so rounded timestamps (e.g. 1 ms in WebM) keep every frame once
        return Fraction(round(t * self.rate)) / self.rate if self.native else t

    def seek_pts(self, k: int) -> int:
        return self.t0 + math.floor(k * self.step / self.tb)

    def length(self, container: Any, stream: Any) -> int | None:
        """Output frames of the whole video, from the container's frame count or duration (None: unknown)."""
        n: Fraction | int | None = stream.frames or None
        if n is None and stream.duration is not None:
            n = round(stream.duration * self.tb * self.rate)
        elif n is None and container.duration is not None:
            n = round(Fraction(container.duration, 1_000_000) * self.rate)
        if n is None or self.native:
            return None if n is None else int(n)
        return math.ceil(n / self.rate / self.step)  # outputs k with k · step < n / rate


def _window(
    frames_in: Iterator[Any], tl: _Timeline, start: int, count: int, geometry: FrameGeometry
) -> tuple[list[Tensor], int | None] | None:
    """Output frames start … start + count − 1 from decoded frames (``iter_frames``' rule), and None when the
    video held them all, else its length in output frames. None overall when the first frame came after start."""
    out: list[Tensor] = []
    k, prev, prev_t, cached = start, None, Fraction(0), None
    for frame in frames_in:
        t = tl.time(frame)
        if prev is None and t > k * tl.step:
            return None  # the seek landed after the window start
        while prev is not None and k * tl.step < t:  # prev is on screen at k · step
            if cached is None:  # convert a decoded frame once, and only if the window shows it
                cached = geometry.apply(frame_to_rgb(prev))
            out.append(cached)
            k += 1
            if len(out) == count:
                return out, None
        prev, prev_t, cached = frame, t, None
    if prev is None:
        return None
    end = prev_t + 1 / tl.rate  # the last frame stays on screen for one source frame period
    while k * tl.step < end and len(out) < count:
        cached = cached if cached is not None else geometry.apply(frame_to_rgb(prev))
        out.append(cached)
        k += 1
    return (out, None) if len(out) == count else (out, math.ceil(end / tl.step))


def _open(av: Any, path: str | os.PathLike[str]) -> tuple[Any, Any, Any]:
    """(container, video stream, first decoded frame); the caller closes the container."""
    container = av.open(str(path))
    try:
        if not container.streams.video:
            raise ValueError("the file has no video stream")
        stream = container.streams.video[0]
        first = next(_decoded(container, stream), None)
        if first is None:
            raise ValueError("no frame could be decoded")
    except BaseException:
        container.close()
        raise
    return container, stream, first


def _plan(
    total: int | None, first: Any, frames: int, size: int, rng: np.random.Generator | None, start: int | None
) -> tuple[int, FrameGeometry]:
    """The window start (random, centred, or the given one) and the resize + crop (random or centred)."""
    if total is not None and total < frames:
        raise ValueError(f"the video has {total} frames, fewer than the {frames} of a clip")
    if start is None:  # unknown length: the first window
        last = 0 if total is None else total - frames
        start = int(rng.integers(0, last + 1)) if rng is not None else last // 2
    elif start < 0 or (total is not None and start > total - frames):
        raise ValueError(f"a clip of {frames} frames cannot start at frame {start} of {total}")
    geometry = FrameGeometry.plan(first.height, first.width, size=size, crop=size)
    if rng is not None:  # RandomCrop: one offset for every frame (docs/design.md O-47)
        top, left = (int(rng.integers(0, n - size + 1)) for n in (geometry.resize_h, geometry.resize_w))
        geometry = dataclasses.replace(geometry, top=top, left=left)
    return start, geometry


def read_clip(
    path: str | os.PathLike[str],
    *,
    frames: int,
    size: int,
    fps: float | None = None,
    rng: np.random.Generator | None = None,
    start: int | None = None,
) -> Clip:
    """Decode one clip: uint8 (3, frames, size, size) (module docstring). ``rng``: random window and crop (drawn in
    that order); None: the centre window and the centre crop. ``start`` fixes the window. Raises on unreadable
    videos and on videos shorter than ``frames``.
    """
    try:
        import av
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    fixed = start is not None
    container, stream, first = _open(av, path)
    with container:
        tl = _Timeline(stream, first, fps)
        start, geometry = _plan(tl.length(container, stream), first, frames, size, rng, start)
        if start > 0:  # to the key frame at or before the window start
            container.seek(tl.seek_pts(start), stream=stream, backward=True)
            result = _window(_decoded(container, stream), tl, start, frames, geometry)
        else:
            result = _window(chain([first], _decoded(container, stream)), tl, start, frames, geometry)
    if result is not None and result[1] is not None:  # the container promised more frames than it holds
        length = result[1]
        if length < frames or fixed:
            _plan(length, first, frames, size, None, start if fixed else 0)  # raises the error
        start = min(start, length - frames)  # the last whole window
    if result is None or result[1] is not None:  # an imprecise seek or a moved window: decode from the start
        container, stream, first = _open(av, path)
        with container:
            tl = _Timeline(stream, first, fps)
            result = _window(chain([first], _decoded(container, stream)), tl, start, frames, geometry)
        if result is None or result[1] is not None:
            raise ValueError(f"cannot decode frames {start}..{start + frames - 1}")
    return Clip(torch.stack(result[0], dim=1), start, geometry)


@dataclass(frozen=True)
class ClipSpec:
    """What a clip is: ``frames`` frames at ``fps`` (None: native), ``size``×``size``, random or centred."""

    frames: int = 17
    size: int = 128
    fps: float | None = None
    random_crop: bool = True

    def __post_init__(self) -> None:
        if self.frames < 1 or self.size < 1:
            raise ValueError(f"frames and size must be >= 1, got frames={self.frames}, size={self.size}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive or None (native rate), got {self.fps}")


class FolderClips(Dataset[Sample]):
    """``dataset[(epoch, index, position)]`` → a float32 (3, T, S, S) clip in [−1, 1] of video ``index``."""

    def __init__(self, index: FolderIndex, spec: ClipSpec, seed: int) -> None:
        self.index, self.spec, self.seed = index, spec, seed

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: tuple[int, int, int]) -> Sample:
        epoch, i, position = item
        key, label, spec = self.index.files[i], self.index.labels[i], self.spec
        rng = sample_rng(self.seed, AUGMENT, epoch, i) if spec.random_crop else None
        try:  # an unreadable or short video is a counted bad sample (stream.py), whatever the decoder raises
            clip = read_clip(self.index.root / key, frames=spec.frames, size=spec.size, fps=spec.fps, rng=rng)
        except ImportError:
            raise
        except Exception as e:
            return Sample(key, label, position, error=describe(e))
        return Sample(key, label, position, uint8_to_video(clip.video))


def build_video_stream(
    source: str | os.PathLike[str],
    *,
    frames: int = 17,
    size: int,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    num_workers: int = 0,
    fps: float | None = None,
    random_crop: bool = True,
    pin_memory: bool = False,
    max_bad_fraction: float = 0.01,
) -> BatchStream:
    """The training clip stream of one rank: ``{"video": (B, 3, frames, size, size) in [−1, 1], "label", "key"}``.

    ``source``: a folder of videos, read recursively; class folders (UCF-101's ``class/video.avi``) give the
    labels in sorted order. ``random_crop=False``: the centre window and the centre crop (validation).
    """
    check_split(batch_size=batch_size, rank=rank, world_size=world_size, seed=seed, num_workers=num_workers)
    spec = ClipSpec(frames=frames, size=size, fps=fps, random_crop=random_crop)
    path = Path(source)
    if path.is_file():
        raise ValueError(f"'{source}' is a file; pass the folder that holds the videos")
    index = scan_folder(path, VIDEO_SUFFIXES, "video")
    src = IndexedSource(
        FolderClips(index, spec, seed),
        field="video",
        num_samples=len(index),
        class_names=index.class_names,
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        seed=seed,
    )
    return BatchStream(src, num_workers=num_workers, pin_memory=pin_memory, max_bad_fraction=max_bad_fraction)
