"""Video clips: the window equals read_video's frames, only the needed frames are decoded, the clip stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_builders import assert_same_batches, gop_video, take

import open_magvit2.data.clips as clips
from open_magvit2.data import build_video_stream, read_clip
from open_magvit2.data.video_io import read_video, write_video

pytest.importorskip("av")


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gop_video(tmp_path_factory.mktemp("video") / "gop8.mp4", 60, gop=8)  # 60 frames, key frames every 8


@pytest.mark.parametrize("fps", [None, 10, 40])
def test_window_equals_read_video(video: Path, fps: float | None):
    ref = read_video(video, fps=fps, size=16, crop=16)  # (3, T, 16, 16), centre crop
    assert ref.shape[1] == {None: 60, 10: 24, 40: 96}[fps]
    for start in (0, 5, 9, ref.shape[1] - 9):
        clip = read_clip(video, frames=9, size=16, fps=fps, start=start)
        assert clip.video.dtype == torch.uint8 and clip.video.shape == (3, 9, 16, 16)
        assert torch.equal(clip.video.float() / 127.5 - 1, ref[:, start : start + 9])
    centre = read_clip(video, frames=9, size=16, fps=fps)  # no rng: the centre window
    assert centre.start == (ref.shape[1] - 9) // 2
    with pytest.raises(ValueError, match="cannot start at frame"):
        read_clip(video, frames=9, size=16, fps=fps, start=ref.shape[1] - 8)


def test_random_window_and_crop(video: Path):
    full = read_video(video, size=16, multiple=1)  # (3, 60, 16, 21): resized, not cropped
    starts = set()
    for seed in range(6):
        clip = read_clip(video, frames=5, size=16, rng=np.random.default_rng(seed))
        g = clip.geometry
        assert 0 <= clip.start <= 55 and (g.resize_h, g.resize_w) == (16, 21) and 0 <= g.left <= 5 and g.top == 0
        expected = full[:, clip.start : clip.start + 5, g.top : g.top + 16, g.left : g.left + 16]
        assert torch.equal(clip.video.float() / 127.5 - 1, expected)  # one offset for all frames
        starts.add(clip.start)
    assert len(starts) > 3


def test_only_the_needed_frames_are_decoded(video: Path, monkeypatch):
    decoded = []
    real = clips._decoded

    def counting(container, stream):
        for frame in real(container, stream):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(clips, "_decoded", counting)
    read_clip(video, frames=9, size=16, start=43)
    # the first frame (size, t0), then from the key frame at 40 up to frame 51, plus the decoder's look-ahead
    assert len(decoded) <= 1 + (43 - 40) + 9 + 4 < 60


def test_container_promising_more_frames_gives_the_last_window(tmp_path: Path):
    """A cut-off AVI still says 60 frames in its header; a window past the real end moves back to the last one."""
    whole = gop_video(tmp_path / "whole.avi", 60, codec="mpeg4")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    ref = read_video(cut, size=16, multiple=1)  # resized, not cropped
    assert 9 < ref.shape[1] < 50
    clip = read_clip(cut, frames=9, size=16, rng=np.random.default_rng(0))  # draws start 44 of 60
    g = clip.geometry
    assert clip.start == ref.shape[1] - 9
    assert torch.equal(clip.video.float() / 127.5 - 1, ref[:, clip.start :, :, g.left : g.left + 16])


def test_short_and_corrupt_videos_are_bad_samples(tmp_path: Path):
    rng = np.random.default_rng(0)
    for cls, n in (("jump", 3), ("walk", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            frames = rng.integers(0, 256, (12, 16, 20, 3), dtype=np.uint8)
            write_video(tmp_path / cls / f"v{i}.mp4", frames, fps=8)
    write_video(tmp_path / "walk" / "short.mp4", rng.integers(0, 256, (3, 16, 20, 3), dtype=np.uint8), fps=8)
    (tmp_path / "walk" / "broken.avi").write_bytes(b"RIFF not a video")
    kw = {"frames": 5, "size": 8, "batch_size": 2, "rank": 0, "world_size": 1, "seed": 1, "max_bad_fraction": 0.5}
    with build_video_stream(tmp_path, **kw) as s:
        assert s.class_names == ("jump", "walk") and s.batches_per_epoch == 4
        batches = take(s, 4)
        state = s.state_dict()
    assert state["bad_samples"] == 2 and sorted(state["bad_examples"]) == ["walk/broken.avi", "walk/short.mp4"]
    for b in batches:
        assert b["video"].dtype == torch.float32 and b["video"].shape[1:] == (3, 5, 8, 8)
        assert b["label"].tolist() == [("walk" in k) * 1 for k in b["key"]]


def test_clip_stream_determinism_and_resume(tmp_path: Path):
    for c in ("c0", "c1"):
        (tmp_path / c).mkdir()
    for i in range(5):
        gop_video(tmp_path / f"c{i % 2}" / f"v{i}.mp4", 20 + 3 * i, gop=4)
    kw = {"frames": 5, "size": 8, "batch_size": 2, "rank": 0, "world_size": 1, "seed": 4}
    with build_video_stream(tmp_path, **kw) as s:
        ref = take(s, 5)  # 2 batches per epoch: into the third epoch
    with build_video_stream(tmp_path, num_workers=2, **kw) as s:
        assert_same_batches(take(s, 5), ref)
    with build_video_stream(tmp_path, **kw) as s:
        take(s, 3)
        state = s.state_dict()
    with build_video_stream(tmp_path, **kw) as s:
        s.load_state_dict(state)
        assert_same_batches(take(s, 2), ref[3:])
    with pytest.raises(FileNotFoundError, match="no such video folder"):
        build_video_stream(tmp_path / "nope", **kw)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no video files"):
        build_video_stream(tmp_path / "empty", **kw)
