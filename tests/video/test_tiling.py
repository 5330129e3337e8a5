"""Spatial tiles of the video tokenizer: token stitching and seam blending are exact for a translation-equivariant
stand-in model, a frame no larger than a tile gives the untiled result, and the CLI tiles large frames."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from video_clips import encode_with_pyav, moving_shapes

from open_magvit2.cli import main
from open_magvit2.tokenizer.video import decode_tiled, encode_tiled, seams, tile_starts


@pytest.fixture(scope="module")
def clip_24x32(tmp_path_factory):
    pytest.importorskip("av")
    return encode_with_pyav(tmp_path_factory.mktemp("tiling") / "clip.mp4", moving_shapes(7, 24, 32), 8, "libx264")


class _Pointwise:
    """A stand-in tokenizer whose token at a latent position depends only on the pixels above it, and whose decoded
    pixels depend only on the token below them: tiling changes nothing, so any stitching or blending error shows."""

    def __init__(self, f: int = 4) -> None:
        self.config = SimpleNamespace(spatial_factor=f)
        self.f = f

    def check_input(self, x: torch.Tensor) -> None:
        assert x.shape[-2] % self.f == 0 and x.shape[-1] % self.f == 0

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, T, h, w)
        f = self.f
        return (x[:, 0].unfold(-2, f, f).unfold(-2, f, f).mean((-1, -2)) * 1000).round().long()

    def decode(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T, h, w) -> (B, 3, T, H, W)
        up = idx.double().repeat_interleave(self.f, -2).repeat_interleave(self.f, -1) / 1000
        return torch.stack([up, -up, 2 * up], 1)


def test_tile_starts_cover_the_axis_and_end_at_its_end():
    assert tile_starts(100, 32, 8) == [0, 24, 48, 68]
    assert tile_starts(32, 32, 8) == [0] and tile_starts(20, 32, 8) == [0]
    assert seams([0, 24, 48, 68], 32) == [28, 52, 74]  # the middle of each overlap
    for length, tile, ov in ((100, 32, 8), (257, 64, 16), (1080, 256, 64)):
        s = tile_starts(length, tile, ov)
        assert s[0] == 0 and s[-1] + tile == length and all(b - a <= tile - ov for a, b in itertools.pairwise(s))


@pytest.mark.parametrize(("tile", "overlap"), [(16, 0), (16, 4), (24, 8), (32, 12), (64, 8)])
def test_stitching_and_blending_are_exact_for_a_pointwise_model(tile, overlap):
    tok = _Pointwise(f=4)
    x = torch.rand(2, 3, 3, 40, 56, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    idx = tok.encode(x)
    assert torch.equal(encode_tiled(tok, x, tile, overlap), idx)
    torch.testing.assert_close(decode_tiled(tok, idx, tile, overlap), tok.decode(idx), rtol=0, atol=1e-12)


def test_a_frame_within_one_tile_is_the_untiled_result(tiny_video_model):
    x = torch.rand(1, 3, 5, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        idx = tiny_video_model.encode(x)
        assert torch.equal(tiny_video_model.encode_tiled(x, tile=48, overlap=16), idx)
        assert torch.equal(tiny_video_model.decode_tiled(idx, tile=48, overlap=16), tiny_video_model.decode(idx))
        tiled = tiny_video_model.encode_tiled(x, tile=16, overlap=8)  # 2×3 tiles: same grid, its own tokens
        assert tiled.shape == idx.shape and tiled.dtype == torch.int64
    with pytest.raises(ValueError, match="multiples of the downsampling factor 8"):
        tiny_video_model.encode_tiled(x, tile=20, overlap=4)
    with pytest.raises(ValueError, match="overlap < tile"):
        tiny_video_model.decode_tiled(idx, tile=16, overlap=16)


def test_tokenize_video_tiles_large_frames(clip_24x32, video_ckpt, tmp_path):
    whole, tiled = tmp_path / "whole.npy", tmp_path / "tiled.npy"
    base = ["tokenize-video", str(clip_24x32), "-c", str(video_ckpt), "--window", "5"]
    assert main([*base, "-o", str(whole)]) == 0  # 24×32 < 256²: --tile auto keeps whole frames
    assert main([*base, "-o", str(tiled), "--tile", "16", "--tile-overlap", "8"]) == 0
    a, b = np.load(whole), np.load(tiled)
    assert a.shape == b.shape == (2, 3, 6, 8)
    assert json.loads(whole.with_suffix(".json").read_text())["tile"] is None
    meta = json.loads(tiled.with_suffix(".json").read_text())
    assert meta["tile"] == 16 and meta["tile_overlap"] == 8
