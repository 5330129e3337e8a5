"""``open-magvit2 reconstruct-video`` / ``tokenize-video`` on a synthetic mp4, with the fixture's official-format
checkpoint (ch_mult [1,2,2]: windows of 2k+1 frames, 4× spatial)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from video_clips import encode_with_pyav, moving_shapes

from open_magvit2.cli import main
from open_magvit2.data.video_io import iter_frames, probe_video, read_video, video_to_uint8
from open_magvit2.imaging import psnr_uint8
from open_magvit2.tokenizer.video import VideoTokenizer


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """12 frames of 32×32 at 8 fps → windows of 5: [0,5), [5,10), [10,12) + 3 padding frames."""
    return encode_with_pyav(tmp_path_factory.mktemp("cli") / "clip.mp4", moving_shapes(12, 32, 32), 8, "libx264")


def test_reconstruct_video_writes_both_mp4s_and_per_frame_psnr(clip, video_ckpt, tmp_path, capsys):
    out = tmp_path / "recon.mp4"
    assert main(["reconstruct-video", str(clip), "-c", str(video_ckpt), "-o", str(out), "--window", "5"]) == 0
    printed = [float(v) for v in re.findall(r"frame \d+\tPSNR ([\d.]+) dB", capsys.readouterr().out)]
    assert len(printed) == 12
    compare = tmp_path / "recon_compare.mp4"
    assert (probe_video(out).width, probe_video(compare).width, probe_video(out).height) == (32, 64, 32)
    assert read_video(out).shape == (3, 12, 32, 32) and read_video(compare).shape == (3, 12, 32, 64)
    # the printed PSNR is that of the model's reconstruction of each window (before mp4 encoding)
    tok, frames = VideoTokenizer.from_pretrained(video_ckpt), read_video(clip)
    with torch.no_grad():
        rec = tok.decode(tok.encode(frames[None, :, :5]))[0]
    originals = [f.permute(1, 2, 0).numpy() for f in iter_frames(clip, max_frames=5)]  # the uint8 frames
    expected = [psnr_uint8(a, b) for a, b in zip(originals, video_to_uint8(rec))]
    np.testing.assert_allclose(printed[:5], expected, atol=0.006)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recon.mp4", "recon_compare.mp4"]


def test_tokenize_video_writes_windowed_indices(clip, video_ckpt, tmp_path):
    out = tmp_path / "tokens.npy"
    assert main(["tokenize-video", str(clip), "-c", str(video_ckpt), "-o", str(out), "--window", "5"]) == 0
    indices = np.load(out)
    meta = json.loads((tmp_path / "tokens.json").read_text())
    assert indices.shape == (3, 3, 8, 8) and indices.dtype == np.int64
    assert meta["num_frames"] == 12 and meta["window"] == 5 and meta["frame_size"] == [32, 32] and meta["fps"] == 8
    tok = VideoTokenizer.from_pretrained(video_ckpt)
    w = tok.encode_windows(read_video(clip)[None], window=5)
    assert np.array_equal(indices, w.indices[0].numpy())


def test_errors_are_one_line_and_leave_no_output(video_ckpt, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01 definitely not a video" * 100)
    for cmd in ("reconstruct-video", "tokenize-video"):
        assert main([cmd, str(bad), "-c", str(video_ckpt), "-o", str(tmp_path / "out.mp4")]) == 2
        err = capsys.readouterr().err.strip()
        assert "cannot read video" in err and "broken.mp4" in err and "\n" not in err
    args = ["tokenize-video", str(bad), "-c", str(video_ckpt), "-o", str(tmp_path / "t.npy"), "--window", "4"]
    assert main(args) == 2
    assert "2k+1" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4"]


@pytest.mark.parametrize("cmd", ["reconstruct-video", "tokenize-video"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0 and "--window" in capsys.readouterr().out
