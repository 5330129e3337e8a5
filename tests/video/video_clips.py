"""Synthetic test clips: moving shapes, encoded with PyAV inside the tests (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def moving_shapes(num_frames: int, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8: a red square moving right and a green disc moving down over a blue gradient."""
    yy, xx = np.mgrid[:height, :width]
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        f = frames[t]
        f[..., 2] = (40 + 150 * xx / max(width - 1, 1)).astype(np.uint8)
        x0 = (2 + 3 * t) % max(width - 10, 1)
        f[4:14, x0 : x0 + 10] = (230, 30, 30)
        cy, cx = (6 + 2 * t) % height, width // 2
        f[(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = (30, 220, 60)
    return frames


def encode_with_pyav(path: Path, frames: np.ndarray, fps: int, codec: str) -> Path:
    """Write uint8 (T, H, W, 3) frames: ``ffv1`` (lossless, .mkv) or ``libx264`` (.mp4)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
