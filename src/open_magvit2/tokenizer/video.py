"""The Open-MAGVIT2 video tokenizer (spec §4): the image tokenizer's code with ``dims=3`` (causal-3D convs).

Frames: each temporal downsampling maps T → ⌊(T−1)/2⌋ + 1 and each temporal upsampling t → 2t − 1, so with n
temporal downsamplings (2 for ``ucf101_128_L``) a clip must have T = 2^n·k + 1 frames: 17 → 5 → 17, 9 → 3 → 9,
1 → 1 → 1 (spec §4.2).

**Not causal.** Convolutions are causal in time, but GroupNorm normalises over all frames and the decoder's
adaptive GroupNorm takes its statistics over all latent frames (spec §4.2, §9 item 4). Changing the last input
frame therefore changes every latent frame. This is the official behaviour and the released weights depend on it,
so it is kept. Consequence for long videos: windows (``encode_windows``) are encoded independently, and a window
never sees its neighbours.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from open_magvit2.tokenizer.model import Tokenizer

DEFAULT_WINDOW = 17  # the training clip length of the released model (spec §4, §6.3)


class WindowedIndices(NamedTuple):
    """Indices of a long clip cut into windows: ``indices`` (B, n_windows, t, h, w); ``num_frames`` = original T."""

    indices: Tensor
    num_frames: int


class VideoTokenizer(Tokenizer):
    """Video ↔ tokens: (B, 3, T, H, W) in [−1, 1] with T = 2^n·k + 1 ↔ int64 indices (B, t, h, w), flattened
    (t, h, w) in the official order. ``decode`` returns (B, 3, T, H, W), not clamped.

    Same API as :class:`~open_magvit2.tokenizer.model.ImageTokenizer`; ``from_pretrained`` loads the official
    ``video_128_262144.ckpt`` (EMA weights by default, strict, architecture inferred from the ``.conv_1`` keys).
    """

    model_type = "video_tokenizer"
    dims = 3

    # ---- the frame-count rule (spec §4.2) ---------------------------------------------------------------------
    @property
    def frame_step(self) -> int:
        """Valid frame counts are 1 + k·frame_step (4 for the released model)."""
        return 2**self.config.num_temporal_downsamples

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames of a valid clip of ``num_frames`` frames: 1 + (T − 1) / frame_step."""
        self._check_frames(num_frames)
        return 1 + (num_frames - 1) // self.frame_step

    def output_frames(self, latent_frames: int) -> int:
        """Frames decoded from ``latent_frames`` latent frames (each upsampling: t → 2t − 1)."""
        return 1 + (latent_frames - 1) * self.frame_step

    def _check_frames(self, t: int) -> None:
        s = self.frame_step
        if t < 1 or (t - 1) % s:
            lower = 1 + (max(t, 1) - 1) // s * s
            raise ValueError(
                f"the number of frames must be {s}k+1 (1, {1 + s}, {1 + 2 * s}, {1 + 4 * s}, …) for this model "
                f"({self.config.num_temporal_downsamples} temporal downsamplings), got {t}; trim to {lower} frames, "
                f"pad to {lower + s}, or use encode_windows for long videos"
            )

    # ---- long videos: independent windows ---------------------------------------------------------------------
    def split_windows(self, video: Tensor, window: int = DEFAULT_WINDOW) -> Iterator[Tensor]:
        """Cut (B, C, T, H, W) into consecutive windows of ``window`` frames; the last one is padded by repeating
        the last frame (its padded frames are dropped again by ``decode_windows(..., num_frames=T)``).
        """
        self._check_frames(window)
        t = video.shape[2]
        for start in range(0, t, window):
            chunk = video[:, :, start : start + window]
            if chunk.shape[2] < window:
                pad = chunk[:, :, -1:].expand(-1, -1, window - chunk.shape[2], -1, -1)
                chunk = torch.cat([chunk, pad], dim=2)
            yield chunk

    @torch.no_grad()
    def encode_windows(self, video: Tensor, window: int = DEFAULT_WINDOW) -> WindowedIndices:
        """Encode a clip of any length window by window; peak memory depends on ``window``, not on T.

        video (B, 3, T, H, W) in [−1, 1] → ``WindowedIndices(indices (B, ⌈T/window⌉, t_w, h, w), T)``. Each window is
        an independent clip (the model has no state across windows, see the module docstring). No autograd.
        """
        self.check_input(video[:, :, :1])
        out = [self.encode(w) for w in self.split_windows(video, window)]  # one window in memory at a time
        return WindowedIndices(torch.stack(out, dim=1), video.shape[2])

    @torch.no_grad()
    def decode_windows(self, indices: Tensor | WindowedIndices, num_frames: int | None = None) -> Tensor:
        """Inverse of :meth:`encode_windows`: (B, n_windows, t_w, h, w) → (B, 3, T, H, W), not clamped.

        Frames beyond ``num_frames`` (the padding of the last window) are dropped; a ``WindowedIndices`` carries it.
        """
        if isinstance(indices, WindowedIndices):
            indices, num_frames = indices.indices, indices.num_frames if num_frames is None else num_frames
        if indices.dim() != 5:
            raise ValueError(f"windowed indices must be (B, n_windows, t, h, w), got {tuple(indices.shape)}")
        chunks = [self.decode(indices[:, i]) for i in range(indices.shape[1])]
        video = torch.cat(chunks, dim=2)
        return video if num_frames is None else video[:, :, :num_frames]


__all__ = ["DEFAULT_WINDOW", "VideoTokenizer", "WindowedIndices"]
