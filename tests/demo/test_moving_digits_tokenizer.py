"""The moving-digits measurement of a video tokenizer (demo/evaluate.py ``moving_digits_reconstruction``) against a
brute-force recomputation, clip by clip and frame by frame, on a tiny random-weight causal tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from open_magvit2.data.video_io import uint8_to_video, video_to_uint8
from open_magvit2.demo.data import moving_digits
from open_magvit2.demo.evaluate import moving_digits_reconstruction
from open_magvit2.imaging import psnr_uint8
from open_magvit2.tokenizer import TokenizerConfig, VideoTokenizer

CLIPS = 3
TOL = 0.02  # dB: a clip coded in a batch of 2 may round a few pixels differently from the same clip alone


@pytest.fixture(scope="module")
def tok() -> VideoTokenizer:
    torch.manual_seed(0)  # 4× in time, 8× in space: 17 frames of 64² → 5 × 8 × 8 tokens (the demo recipe is 2×)
    return VideoTokenizer(TokenizerConfig(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, z_channels=6, dims=3)).eval()


@pytest.fixture(scope="module")
def brute(tok):
    """Per clip (one at a time): the per-frame PSNRs, the whole-clip PSNR and the tokens."""
    clips, _ = moving_digits("held_out", CLIPS, seed=3)
    frames, whole, tokens = [], [], []
    with torch.no_grad():
        for clip in clips:
            idx = tok.encode(uint8_to_video(torch.from_numpy(clip).permute(3, 0, 1, 2))[None])
            rec = video_to_uint8(tok.decode(idx)[0])
            frames.append([psnr_uint8(rec[t], clip[t]) for t in range(len(clip))])
            whole.append(psnr_uint8(rec, clip))
            tokens.append(idx)
    return np.array(frames), np.array(whole), torch.cat(tokens)


def test_matches_a_frame_by_frame_recomputation(tok, brute):
    frames, whole, tokens = brute
    got = moving_digits_reconstruction(tok, CLIPS, seed=3, batch=2)  # batches of 2 and 1
    curve = frames.mean(axis=0)
    assert len(got["per_frame_psnr"]) == 17
    assert got["per_frame_psnr"] == pytest.approx(list(curve), abs=TOL)
    key, between = curve[[0, 4, 8, 12, 16]].mean(), np.delete(curve, [0, 4, 8, 12, 16]).mean()
    assert got["key_psnr"] == pytest.approx(key, abs=TOL)
    assert got["between_psnr"] == pytest.approx(between, abs=TOL)
    assert got["gap"] == pytest.approx(key - between, abs=TOL)
    assert got["frame0_psnr"] == pytest.approx(curve[0], abs=TOL)
    assert got["psnr"] == pytest.approx(whole.mean(), abs=TOL)
    assert got["clips"] == CLIPS and got["token_grid"] == [5, 8, 8] and got["tokens"] == CLIPS * 320
    assert got["distinct_codes"] == torch.unique(tokens).numel() and got["bits"] == 6


def test_a_batch_below_one_is_refused(tok):
    with pytest.raises(ValueError, match="batch must be >= 1"):
        moving_digits_reconstruction(tok, 1, batch=0)


def test_key_frames_follow_the_temporal_factor():
    """At 2× in time (the demo recipe's ch_mult (1, 1, 2, 2): 9 × 8 × 8 tokens) the key frames are 0, 2, …, 16."""
    torch.manual_seed(1)
    tok2 = VideoTokenizer(TokenizerConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, z_channels=6, dims=3)).eval()
    clip = moving_digits("held_out", 1, seed=5)[0][0]
    with torch.no_grad():
        idx = tok2.encode(uint8_to_video(torch.from_numpy(clip).permute(3, 0, 1, 2))[None])
        rec = video_to_uint8(tok2.decode(idx)[0])
    curve = np.array([psnr_uint8(rec[t], clip[t]) for t in range(len(clip))])
    got = moving_digits_reconstruction(tok2, 1, seed=5)
    assert got["token_grid"] == [9, 8, 8]
    assert got["key_psnr"] == pytest.approx(curve[0::2].mean(), abs=TOL)
    assert got["between_psnr"] == pytest.approx(curve[1::2].mean(), abs=TOL)
