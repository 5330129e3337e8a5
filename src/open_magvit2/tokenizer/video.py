"""The Open-MAGVIT2 video tokenizer (docs/design.md O-25–O-27): the image tokenizer's code with ``dims=3``
(causal-3D convs).

Frames: each temporal downsampling maps T → ⌊(T−1)/2⌋ + 1 and each temporal upsampling t → 2t − 1, so with n
temporal downsamplings (2 for ``ucf101_128_L``) a clip must have T = 2^n·k + 1 frames: 17 → 5 → 17, 9 → 3 → 9,
1 → 1 → 1 (docs/design.md O-26).

**Not causal.** Convolutions are causal in time, but GroupNorm normalises over all frames and the decoder's
adaptive GroupNorm takes its statistics over all latent frames (docs/design.md O-27). Changing the last input
frame therefore changes every latent frame. This is the official behaviour and the released weights depend on it,
so it is kept. Consequence for long videos: windows (``encode_windows``) are encoded independently, and a window
never sees its neighbours.

**Large frames: spatial tiles.** The same holds in space: activation memory grows with H·W (a 17-frame 1080p
window needs ~130× the memory of a 128² one), so ``encode_tiled``/``decode_tiled`` cut frames into overlapping
square tiles. Encoding keeps, for every latent position, the token of the tile whose centre part holds it (the
seam between two tiles is the middle of their overlap); decoding blends the overlapping pixels of neighbouring
tiles with linear ramps. Each tile is an independent clip (its own GroupNorm statistics), so tiled results differ
from untiled ones, most near the seams: ``benchmarks/bench_video_tiling.py`` measures by how much.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor

from open_magvit2.tokenizer.model import Tokenizer

DEFAULT_WINDOW = 17  # the training clip length of the released model (docs/design.md O-26, O-47)
DEFAULT_TILE = 256  # pixels; 2× the released model's training size, ~4× its activation memory per tile
DEFAULT_OVERLAP = 64  # pixels shared by neighbouring tiles (8 latent positions at 8×)


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

    # ---- the frame-count rule (docs/design.md O-26) -----------------------------------------------------------
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

    # ---- large frames: spatial tiles (module docstring) -------------------------------------------------------
    def encode_tiled(self, video: Tensor, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP) -> Tensor:
        """(B, 3, T, H, W) in [−1, 1] → indices (B, t, h, w), encoded in overlapping ``tile``² tiles."""
        return encode_tiled(self, video, tile, overlap)

    def decode_tiled(self, indices: Tensor, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP) -> Tensor:
        """indices (B, t, h, w) → (B, 3, T, H, W), decoded in overlapping tiles blended at the seams."""
        return decode_tiled(self, indices, tile, overlap)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` along an axis of ``length`` with stride ``tile − overlap``; the last tile
    ends at ``length`` exactly (it may overlap more). One tile of the whole axis when it fits."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return [*starts, length - tile]


def seams(starts: list[int], size: int) -> list[int]:
    """Where one tile hands over to the next along an axis: the middle of each overlap (tiles of ``size``)."""
    return [(nxt + cur + size) // 2 for cur, nxt in itertools.pairwise(starts)]


def _owned(starts: list[int], size: int, length: int) -> list[tuple[int, int]]:
    """The part of the axis each tile contributes when stitching tokens: from seam to seam."""
    cuts = seams(starts, size)
    return list(zip([0, *cuts], [*cuts, length]))


def _ramp(starts: list[int], size: int, i: int, device: torch.device) -> Tensor:
    """Blending weights (size,) of tile i along one axis: 1, ramping linearly to 0 across each overlap with a
    neighbour (complementary ramps sum to 1 in every overlap)."""
    w = torch.ones(size, device=device)
    if i > 0:  # overlap with the previous tile: [starts[i], starts[i-1] + size)
        n = starts[i - 1] + size - starts[i]
        w[:n] = torch.minimum(w[:n], (torch.arange(n, device=device) + 0.5) / n)
    if i + 1 < len(starts):  # overlap with the next tile: [starts[i+1], starts[i] + size)
        n = starts[i] + size - starts[i + 1]
        w[size - n :] = torch.minimum(w[size - n :], 1 - (torch.arange(n, device=device) + 0.5) / n)
    return w


def _check_tiling(tok: Tokenizer, tile: int, overlap: int) -> tuple[int, int]:
    f = tok.config.spatial_factor
    if tile % f or overlap % f or tile < 2 * f or not 0 <= overlap < tile:
        raise ValueError(f"tile and overlap must be multiples of the downsampling factor {f} with tile >= {2 * f} "
                         f"and 0 <= overlap < tile; got tile={tile}, overlap={overlap}")
    return tile // f, overlap // f


@torch.no_grad()
def encode_tiled(tok: Tokenizer, x: Tensor, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP) -> Tensor:
    """``tok.encode`` in overlapping spatial tiles of ``tile``² pixels: (B, 3, [T,] H, W) → indices (B, [t,] h, w),
    the same shape as untiled; every position takes the token of the tile that owns it (module docstring)."""
    tok.check_input(x)
    n, _ = _check_tiling(tok, tile, overlap)
    f = tok.config.spatial_factor
    (H, W), (h, w) = x.shape[-2:], (x.shape[-2] // f, x.shape[-1] // f)
    ys, xs = tile_starts(H, tile, overlap), tile_starts(W, tile, overlap)
    own_y, own_x = _owned([s // f for s in ys], n, h), _owned([s // f for s in xs], n, w)
    out = None
    for y0, (oy0, oy1) in zip(ys, own_y):
        for x0, (ox0, ox1) in zip(xs, own_x):
            idx = tok.encode(x[..., y0 : y0 + tile, x0 : x0 + tile])  # (B, [t,] n_y, n_x), one tile in memory
            if out is None:
                out = idx.new_empty((*idx.shape[:-2], h, w))
            ly, lx = y0 // f, x0 // f
            out[..., oy0:oy1, ox0:ox1] = idx[..., oy0 - ly : oy1 - ly, ox0 - lx : ox1 - lx]
    return out


@torch.no_grad()
def decode_tiled(tok: Tokenizer, indices: Tensor, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP) -> Tensor:
    """``tok.decode`` in overlapping tiles of ``tile``² output pixels, blended linearly across the overlaps:
    indices (B, [t,] h, w) → (B, 3, [T,] H, W), not clamped."""
    n, m = _check_tiling(tok, tile, overlap)
    f = tok.config.spatial_factor
    h, w = indices.shape[-2:]
    ys, xs = tile_starts(h, n, m), tile_starts(w, n, m)  # in latent positions
    out = wsum = None
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            rec = tok.decode(indices[..., y0 : y0 + n, x0 : x0 + n])  # (B, 3, [T,] ty, tx)
            ty, tx = rec.shape[-2:]
            if out is None:
                out = rec.new_zeros((*rec.shape[:-2], h * f, w * f))
                wsum = rec.new_zeros((h * f, w * f))
            wy = _ramp([s * f for s in ys], ty, i, rec.device)
            wx = _ramp([s * f for s in xs], tx, j, rec.device)
            weight = wy[:, None] * wx[None, :]  # (ty, tx): the same for every batch item, channel and frame
            out[..., y0 * f : y0 * f + ty, x0 * f : x0 * f + tx] += rec * weight
            wsum[y0 * f : y0 * f + ty, x0 * f : x0 * f + tx] += weight
    return out / wsum


__all__ = [
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "DEFAULT_WINDOW",
    "VideoTokenizer",
    "WindowedIndices",
    "decode_tiled",
    "encode_tiled",
    "seams",
    "tile_starts",
]
