"""The video tokenizer: parity with the official code (fixture ``video_tokenizer_tiny``), the frame-count rule,
the documented non-causality, checkpoints and windowed encode/decode."""

from __future__ import annotations

import pytest
import torch

from open_magvit2.registry import load_pretrained
from open_magvit2.tokenizer import ImageTokenizer
from open_magvit2.tokenizer.layers import CausalConv3d
from open_magvit2.tokenizer.video import VideoTokenizer, WindowedIndices

from official import io_tensors, write_official_ckpt


@pytest.fixture(scope="module")
def official(video_ckpt):
    return VideoTokenizer.from_pretrained(video_ckpt), io_tensors("video_tokenizer_tiny")


@pytest.mark.parametrize("clip", ["video_t5", "video_t1"])
def test_parity_with_official_video_tokenizer(official, clip):
    """EMA weights by default; indices exact; z, quant and decoded within 1e-5 (the official fp32 error ~2e-6)."""
    tok, io = official
    x = io[clip]
    with torch.no_grad():
        z = tok.encode_latent(x)
        q = tok.quantize(z)
        indices = tok.encode(x)
        decoded = tok.decode(indices)
        from_codes = tok.decode_codes(q.codes)
    torch.testing.assert_close(z, io[f"ema/{clip}/z"], atol=1e-5, rtol=0)
    assert torch.equal(q.codes, io[f"ema/{clip}/quant"])
    assert indices.dtype == torch.int64 and torch.equal(indices, io[f"ema/{clip}/indices"])
    torch.testing.assert_close(decoded, io[f"ema/{clip}/decoded"], atol=1e-5, rtol=0)
    torch.testing.assert_close(from_codes, decoded, atol=0, rtol=0)
    assert decoded.shape == x.shape  # T = 5 → 3 latent frames → 5; T = 1 → 1 → 1


def test_raw_weights_are_the_other_set(video_ckpt, official):
    """weights="raw" loads encoder.*/decoder.* instead of model_ema.*: every fixture output would differ."""
    raw = VideoTokenizer.from_pretrained(video_ckpt, weights="raw")
    x = official[1]["video_t1"]
    with torch.no_grad():
        z = raw.encode_latent(x)
    assert (z - official[1]["ema/video_t1/z"]).abs().max() > 1e-2


def test_loaders_pick_the_right_class(video_ckpt, tmp_path):
    assert isinstance(load_pretrained(video_ckpt), VideoTokenizer)
    with pytest.raises(ValueError, match="video"):
        ImageTokenizer.from_pretrained(video_ckpt)
    image_ckpt = write_official_ckpt("image_tokenizer_tiny", tmp_path / "image.ckpt")
    with pytest.raises(ValueError, match="image"):
        VideoTokenizer.from_pretrained(image_ckpt)


def test_save_pretrained_roundtrip(official, tmp_path):
    tok, io = official
    tok.save_pretrained(tmp_path / "video")
    again = VideoTokenizer.from_pretrained(tmp_path / "video")
    assert again.config == tok.config
    assert isinstance(load_pretrained(tmp_path / "video"), VideoTokenizer)
    with torch.no_grad():
        assert torch.equal(again.encode(io["video_t5"]), io["ema/video_t5/indices"])


@pytest.mark.parametrize(("frames", "latent"), [(17, 5), (9, 3), (1, 1)])
def test_frame_count_rule(tiny_video_model, frames, latent):
    """Two temporal downsamplings (the released levels): T = 4k+1 → k+1 latent frames → T frames
    (docs/design.md O-26)."""
    tok = tiny_video_model
    x = torch.rand(1, 3, frames, 16, 16) * 2 - 1
    with torch.no_grad():
        indices = tok.encode(x)
        out = tok.decode(indices)
    assert indices.shape == (1, latent, 2, 2) and int(indices.max()) < 2**18
    assert out.shape == (1, 3, frames, 16, 16)
    assert tok.latent_frames(frames) == latent and tok.output_frames(latent) == frames


@pytest.mark.parametrize("frames", [16, 2, 14])
def test_invalid_frame_count_says_what_is_allowed(tiny_video_model, frames):
    with pytest.raises(ValueError, match=r"4k\+1 \(1, 5, 9, 17"):
        tiny_video_model.encode(torch.zeros(1, 3, frames, 16, 16))


def test_invalid_spatial_size_says_what_is_allowed(tiny_video_model):
    with pytest.raises(ValueError, match="multiples of 8"):
        tiny_video_model.encode(torch.zeros(1, 3, 5, 16, 20))
    with pytest.raises(ValueError, match="5-D"):
        tiny_video_model.encode(torch.zeros(1, 3, 16, 16))


def test_convolutions_are_causal_but_the_model_is_not(tiny_video_model):
    """Documented non-causality (docs/design.md O-27): a causal conv's output at frame t ignores frames > t, yet
    changing only the LAST input frame changes EVERY latent frame, because GroupNorm (encoder) normalises over all
    frames. The decoder is likewise global in time through GroupNorm and the AGN statistics."""
    torch.manual_seed(1)
    conv = CausalConv3d(3, 4, 3, bias=True)
    x = torch.randn(1, 3, 7, 8, 8)
    y = x.clone()
    y[:, :, -1] += 1
    with torch.no_grad():
        assert torch.equal(conv(x)[:, :, :-1], conv(y)[:, :, :-1]) and not torch.equal(conv(x), conv(y))

    tok = tiny_video_model
    x = torch.rand(1, 3, 17, 16, 16) * 2 - 1
    y = x.clone()
    y[:, :, -1] = -y[:, :, -1]
    with torch.no_grad():
        dz = (tok.encode_latent(x) - tok.encode_latent(y)).abs().amax(dim=(0, 1, 3, 4))  # per latent frame
        codes = tok.quantize(tok.encode_latent(x)).codes
        changed = codes.clone()
        changed[:, :, -1] = -changed[:, :, -1]
        dx = (tok.decode_codes(codes) - tok.decode_codes(changed)).abs().amax(dim=(0, 1, 3, 4))  # per output frame
    assert dz.shape == (5,) and bool((dz > 1e-4).all())
    assert dx.shape == (17,) and bool((dx > 1e-4).all())


def test_windowed_encode_decode_equals_independent_windows(tiny_video_model):
    """13 frames with window 5: windows [0,5), [5,10), [10,13) + the last frame repeated twice."""
    tok = tiny_video_model
    torch.manual_seed(2)
    video = torch.rand(1, 3, 13, 16, 16) * 2 - 1
    w = tok.encode_windows(video, window=5)
    assert isinstance(w, WindowedIndices) and w.indices.shape == (1, 3, 2, 2, 2) and w.num_frames == 13
    last = torch.cat([video[:, :, 10:], video[:, :, 12:].expand(-1, -1, 2, -1, -1)], dim=2)
    with torch.no_grad():
        assert torch.equal(w.indices[:, 0], tok.encode(video[:, :, :5]))
        assert torch.equal(w.indices[:, 2], tok.encode(last))
        out = tok.decode_windows(w)
        assert out.shape == (1, 3, 13, 16, 16)
        torch.testing.assert_close(out[:, :, 5:10], tok.decode(w.indices[:, 1]), atol=0, rtol=0)
        torch.testing.assert_close(out[:, :, 10:], tok.decode(w.indices[:, 2])[:, :, :3], atol=0, rtol=0)
    assert tok.decode_windows(w.indices).shape[2] == 15  # without num_frames the padding stays
    with pytest.raises(ValueError, match=r"4k\+1"):
        tok.encode_windows(video, window=16)
