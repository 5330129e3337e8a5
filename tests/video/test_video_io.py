"""Video files in and out (``open_magvit2.data.video_io``) on synthetic clips written with PyAV in the test."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image
from video_clips import encode_with_pyav, moving_shapes

from open_magvit2.data.video_io import (
    FrameGeometry,
    VideoWriter,
    iter_frames,
    probe_video,
    read_video,
    video_to_uint8,
    write_video,
)
from open_magvit2.imaging import psnr_uint8

T, H, W, FPS = 12, 36, 52, 10


@pytest.fixture(scope="module")
def lossless(tmp_path_factory):
    frames = moving_shapes(T, H, W)
    return encode_with_pyav(tmp_path_factory.mktemp("io") / "clip.mkv", frames, FPS, "ffv1"), frames


def test_read_is_exact_and_crops_to_multiple_of_8(lossless):
    path, frames = lossless
    info = probe_video(path)
    assert (info.width, info.height, info.fps) == (W, H, FPS)
    video = read_video(path)
    # 36×52 → centre crop 32×48 (offsets 2, 2), values x/127.5 − 1
    assert video.shape == (3, T, 32, 48) and video.dtype == torch.float32
    expected = torch.from_numpy(frames[:, 2:34, 2:50]).permute(3, 0, 1, 2).float() / 127.5 - 1
    assert torch.equal(video, expected)
    assert len(list(iter_frames(path, max_frames=5))) == 5


@pytest.mark.parametrize("fps, sources", [
    (5, [0, 2, 4, 6, 8, 10]),              # every second frame
    (20, [i // 2 for i in range(24)]),     # every frame twice; the last one stays for its own period
    (3, [0, 3, 6, 10]),                    # frame on screen at t = 0, 1/3, 2/3, 1 s: floor(10·t)
])
def test_fps_resampling_picks_the_frame_on_screen(lossless, fps, sources):
    path, frames = lossless
    got = [f.permute(1, 2, 0).numpy() for f in iter_frames(path, fps=fps, crop=(H, W))]
    assert len(got) == len(sources)
    for g, s in zip(got, sources):
        np.testing.assert_array_equal(g, frames[s])


def test_resize_shorter_side_then_centre_crop_matches_pil(lossless):
    path, frames = lossless
    video = read_video(path, size=16)  # 36×52 → 16×23 (torchvision's truncation) → crop 16×16 at left round(3.5)=4
    ref = np.stack([np.asarray(Image.fromarray(f).resize((23, 16), Image.BILINEAR))[:, 4:20] for f in frames])
    assert torch.equal(video, torch.from_numpy(ref).permute(3, 0, 1, 2).float() / 127.5 - 1)
    assert read_video(path, size=16, crop=(8, 16), max_frames=2).shape == (3, 2, 8, 16)
    with pytest.raises(ValueError, match="cannot crop"):
        read_video(path, size=16, crop=24)
    assert FrameGeometry.plan(52, 36, size=16) == FrameGeometry(23, 16, 4, 0, 16, 16)  # portrait


def test_mp4_write_read_roundtrip(tmp_path):
    frames = moving_shapes(9, 32, 48)
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1
    diff = frames.astype(int) - video_to_uint8(video)  # the official truncation can lose one level, never more
    assert diff.min() == 0 and diff.max() == 1
    out = write_video(tmp_path / "out.mp4", video, fps=8)
    back = read_video(out)
    assert back.shape == (3, 9, 32, 48) and probe_video(out).fps == 8
    assert min(psnr_uint8(a, b) for a, b in zip(frames, video_to_uint8(back))) > 24  # 4:2:0 chroma at sharp edges
    # grey frames have no chroma to subsample: H.264 at crf 18 is then near-lossless
    grey = np.repeat(frames.mean(-1, keepdims=True).astype(np.uint8), 3, axis=-1)
    back = read_video(write_video(tmp_path / "grey.mp4", grey, fps=8))
    assert min(psnr_uint8(a, b) for a, b in zip(grey, video_to_uint8(back))) > 38
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grey.mp4", "out.mp4"]  # no temporary file left


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "keep.mp4"
    target.write_bytes(b"previous content")
    with pytest.raises(RuntimeError), VideoWriter(target, fps=8) as w:
        w.write(moving_shapes(3, 16, 16))
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", moving_shapes(2, 15, 16), fps=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]


def test_unreadable_files_give_one_clear_line(tmp_path, lossless):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 200)
    truncated = tmp_path / "truncated.mkv"
    truncated.write_bytes(lossless[0].read_bytes()[:300])
    for bad in (garbage, truncated):
        with pytest.raises(ValueError, match="cannot read video") as e:
            read_video(bad)
        assert "\n" not in str(e.value) and bad.name in str(e.value)
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")


def test_missing_pyav_says_how_to_install(monkeypatch, lossless):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(ImportError, match=r"pip install open-magvit2\[video\]"):
        read_video(lossless[0])
