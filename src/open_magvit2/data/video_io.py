"""Video files in and out with PyAV (the ``video`` extra): any container FFmpeg reads → (3, T, H, W) in [−1, 1].

Reading decodes frame by frame (:func:`iter_frames`), so a long video can be processed window by window without
holding it in memory. Frames are resampled to a chosen frame rate by timestamp (exact rational arithmetic), the
shorter side is resized (PIL bilinear with antialiasing, like the image pipeline's ``Resize``, docs/design.md
O-08) and the result is centre-cropped to a given size or to the largest multiple of 8 (the video tokenizer's
spatial factor, docs/design.md O-26). Pixel values go through uint8 and ``x / 127.5 − 1`` as in the official
pipelines (docs/design.md O-08, O-47).

Writing (:class:`VideoWriter`, :func:`write_video`) encodes to a temporary file next to the target and renames
it on success, so an interrupted run never leaves a half-written video behind.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from open_magvit2.imaging import shorter_side_size, to_uint8

INSTALL_HINT = "PyAV is needed for video files: pip install open-magvit2[video]"
VIDEO_SUFFIXES = (".avi", ".mp4", ".webm", ".mkv", ".mov")  # what folder/glob inputs pick up


def _av() -> ModuleType:
    """Import PyAV lazily, so the rest of the package works without the ``video`` extra."""
    try:
        import av
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return av


@functools.cache
def _rgb_options() -> dict[str, Any]:
    """Options of ``VideoFrame.to_ndarray`` for RGB: one scaling thread where PyAV has the option. PyAV 18.1.1
    converts on a swscale thread pool by default (``threads=0``, auto), and in forked DataLoader workers that pool
    deadlocked (every thread waiting on its condition variable); one thread is plenty for a frame at a time."""
    try:
        _av().VideoFrame(16, 16, "yuv420p").to_ndarray(format="rgb24", threads=1)
    except TypeError:  # an older PyAV: no option, and no thread pool either
        return {}
    return {"threads": 1}


def frame_to_rgb(frame: Any) -> np.ndarray:
    """A decoded PyAV frame as (H, W, 3) uint8 RGB."""
    return frame.to_ndarray(format="rgb24", **_rgb_options())


def _read_error(path: Path, err: Exception) -> ValueError:
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return ValueError(f"cannot read video '{path}': {reason} (is it a complete, valid video file?)")


# ---- geometry ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameGeometry:
    """How every frame of one video is transformed: resize to (resize_h, resize_w), then crop a window."""

    resize_h: int
    resize_w: int
    top: int
    left: int
    height: int
    width: int

    @classmethod
    def plan(
        cls, h: int, w: int, *, size: int | None = None, crop: int | tuple[int, int] | None = None, multiple: int = 8
    ) -> FrameGeometry:
        """``size``: resize the shorter side to it (the longer side scales, truncated, as torchvision's ``Resize``).
        ``crop``: centre-crop to this (H, W) (an int means square); default the largest multiple of ``multiple``.
        """
        rh, rw = (h, w) if size is None else shorter_side_size(h, w, size)
        if crop is None:
            ch, cw = rh - rh % multiple, rw - rw % multiple
            if ch == 0 or cw == 0:
                raise ValueError(f"frames of {rh}x{rw} pixels are smaller than {multiple}; pass a larger size")
        else:
            ch, cw = (crop, crop) if isinstance(crop, int) else crop
            if ch > rh or cw > rw:
                raise ValueError(f"cannot crop {ch}x{cw} out of {rh}x{rw} frames; resize with a larger size first")
        # centre offsets rounded like torchvision's CenterCrop
        return cls(rh, rw, round((rh - ch) / 2), round((rw - cw) / 2), ch, cw)

    def apply(self, frame: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 → (3, height, width) uint8."""
        if (self.resize_h, self.resize_w) != frame.shape[:2]:  # PIL bilinear with antialiasing, as api.load_image
            frame = np.asarray(Image.fromarray(frame).resize((self.resize_w, self.resize_h), Image.BILINEAR))
        crop = frame[self.top : self.top + self.height, self.left : self.left + self.width]
        return torch.from_numpy(np.array(crop)).permute(2, 0, 1)  # a writable copy: PIL's arrays are read-only


def uint8_to_video(frames: Tensor) -> Tensor:
    """(3, T, H, W) uint8 → float32 in [−1, 1]: ``x / 127.5 − 1`` in float32, bit-identical to the official video
    loader's ``(x / 255 − 0.5) / 0.5`` (docs/design.md O-47); the image path computes in float64
    (``imaging.pil_to_tensor``)."""
    return frames.float() / 127.5 - 1.0


def video_to_uint8(video: Tensor) -> np.ndarray:
    """(3, T, H, W) float in [−1, 1] → (T, H, W, 3) uint8: clamp, ``(x + 1) / 2 · 255``, truncate
    (docs/design.md O-08)."""
    return to_uint8(video.transpose(0, 1))  # frames as a batch of images


# ---- reading -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream (``num_frames`` is 0 when the container doesn't know)."""

    width: int
    height: int
    fps: float
    num_frames: int
    duration: float | None


def _open(path: str | os.PathLike[str]) -> tuple[Any, Path]:
    av, path = _av(), Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such video file: '{path}'")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise _read_error(path, e) from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"'{path}' has no video stream")
    return container, path


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Size, frame rate, frame count and duration of the first video stream, without decoding."""
    container, _ = _open(path)
    with container:
        s = container.streams.video[0]
        rate = s.average_rate or s.guessed_rate or 0
        duration = float(s.duration * s.time_base) if s.duration is not None and s.time_base else None
        if duration is None and container.duration is not None:
            duration = container.duration / 1_000_000
        return VideoInfo(s.codec_context.width, s.codec_context.height, float(rate), int(s.frames or 0), duration)


def iter_frames(
    path: str | os.PathLike[str],
    *,
    fps: float | None = None,
    size: int | None = None,
    crop: int | tuple[int, int] | None = None,
    multiple: int = 8,
    max_frames: int | None = None,
) -> Iterator[Tensor]:
    """Decode a video lazily, yielding (3, H, W) uint8 frames after resampling and resize/crop (module docstring).

    ``fps=None`` keeps every decoded frame. Otherwise output frame k shows the source frame on screen at time
    k/fps after the first frame (the latest frame with timestamp ≤ k/fps), so frames are dropped or repeated.
    """
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 (or None for all frames), got {max_frames}")
    av = _av()
    container, path = _open(path)
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = Fraction(stream.average_rate) if stream.average_rate else None
        step = None if fps is None else 1 / Fraction(fps).limit_denominator(1_000_000)
        geometry, emitted, t0, prev = None, 0, None, None
        try:
            for i, frame in enumerate(container.decode(stream)):
                if geometry is None:
                    geometry = FrameGeometry.plan(frame.height, frame.width, size=size, crop=crop, multiple=multiple)
                if frame.pts is not None and frame.time_base is not None:
                    t = Fraction(frame.pts) * Fraction(frame.time_base)
                else:
                    t = Fraction(i) / (rate or 1)
                t0 = t if t0 is None else t0
                t -= t0
                if step is None:
                    yield geometry.apply(frame_to_rgb(frame))
                    emitted += 1
                else:  # the previous frame is on screen for target times in [its time, this frame's time)
                    if prev is not None:
                        while emitted * step < t and (max_frames is None or emitted < max_frames):
                            yield geometry.apply(prev[1])
                            emitted += 1
                    prev = (t, frame_to_rgb(frame))
                if max_frames is not None and emitted >= max_frames:
                    return
        except av.error.FFmpegError as e:
            raise _read_error(path, e) from None
        if prev is not None:  # the last frame stays on screen for one source frame period
            end = prev[0] + (1 / rate if rate else 0)
            while (emitted * step < end or emitted * step == prev[0]) and (max_frames is None or emitted < max_frames):
                yield geometry.apply(prev[1])
                emitted += 1
        if geometry is None:
            raise ValueError(f"cannot read video '{path}': no frame could be decoded")


def read_video(path: str | os.PathLike[str], **options: Any) -> Tensor:
    """Read a whole video as float32 (3, T, H, W) in [−1, 1]; ``options`` (fps, size, crop, multiple, max_frames)
    as :func:`iter_frames`.

    H and W are multiples of ``multiple`` unless ``crop`` says otherwise. For long videos prefer
    :func:`iter_frames` (uint8, one frame at a time).
    """
    frames = list(iter_frames(path, **options))
    return uint8_to_video(torch.stack(frames, dim=1))  # (3, T, H, W)


# ---- writing -----------------------------------------------------------------------------------------------------
class VideoWriter:
    """Encode frames into a video file atomically: ``with VideoWriter(path, fps) as w: w.write(video)``.

    Frames go to a hidden temporary file in the target's folder; it is renamed to ``path`` when the block exits
    normally and deleted when it raises. The container follows the suffix (``.mp4`` → H.264, yuv420p, so H and
    W must be even). ``write`` accepts float (3, T, H, W) in [−1, 1] or uint8 (T, H, W, 3) frames.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, *, codec: str = "libx264", crf: int = 18) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"output folder does not exist: '{self.path.parent}'")
        self.tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp{self.path.suffix}")
        self.fps, self.codec, self.crf = Fraction(fps).limit_denominator(1_000_000), codec, crf
        self._container: Any = None
        self._stream: Any = None

    def __enter__(self) -> VideoWriter:
        self._container = _av().open(str(self.tmp), mode="w")
        return self

    def write(self, frames: Tensor | np.ndarray) -> None:
        """Append frames: float (3, T, H, W) in [−1, 1] (clamped, truncated to uint8) or uint8 (T, H, W, 3)."""
        av = _av()
        if isinstance(frames, Tensor):
            frames = video_to_uint8(frames) if frames.is_floating_point() else frames.cpu().numpy()
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected float (3,T,H,W) in [-1,1] or uint8 (T,H,W,3) frames, got {frames.shape}")
        if self._stream is None:
            h, w = frames.shape[1:3]
            if h % 2 or w % 2:
                raise ValueError(f"{h}x{w} frames cannot be encoded as yuv420p; use even sizes")
            self._stream = self._container.add_stream(self.codec, rate=self.fps)
            self._stream.width, self._stream.height, self._stream.pix_fmt = w, h, "yuv420p"
            if self.codec == "libx264":
                self._stream.options = {"crf": str(self.crf)}
        for f in frames:
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                self._container.mux(packet)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None and self._stream is not None:
                for packet in self._stream.encode():  # flush the encoder
                    self._container.mux(packet)
            self._container.close()
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        if exc_type is None and self._stream is not None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
            if exc_type is None:
                raise ValueError(f"no frames were written to '{self.path}'")


def write_video(path: str | os.PathLike[str], video: Tensor | np.ndarray, fps: float, **kwargs: Any) -> Path:
    """Write float (3, T, H, W) in [−1, 1] or uint8 (T, H, W, 3) frames to ``path`` atomically; see VideoWriter."""
    with VideoWriter(path, fps, **kwargs) as w:
        w.write(video)
    return Path(path)


__all__ = [
    "INSTALL_HINT",
    "VIDEO_SUFFIXES",
    "FrameGeometry",
    "VideoInfo",
    "VideoWriter",
    "iter_frames",
    "probe_video",
    "read_video",
    "uint8_to_video",
    "video_to_uint8",
    "write_video",
]
