"""The moving-digits clips of the video demo: one scikit-learn digit per clip, 24–32 px tall, moving in a straight
line at a constant 1–4 px/frame inside a 64 × 64 canvas for 17 frames, deterministic, with a held-out split."""

from __future__ import annotations

import numpy as np
import pytest

from open_magvit2.demo.data import (
    HELD_OUT_FROM,
    digit_ink,
    moving_digit_motions,
    moving_digits,
    split_digits,
    write_moving_digits,
)

sklearn_datasets = pytest.importorskip("sklearn.datasets")
N = 40


@pytest.fixture(scope="module")
def train() -> tuple[np.ndarray, np.ndarray]:
    return moving_digits("train", N, seed=3)


def _centroids(clip: np.ndarray) -> np.ndarray:
    """(T, 2) intensity centroids (y, x) of a (T, H, W, 3) clip."""
    mass = clip[..., 0].astype(np.float64)
    ys, xs = np.indices(mass.shape[1:])
    total = mass.sum(axis=(1, 2))
    return np.stack([(mass * ys).sum(axis=(1, 2)) / total, (mass * xs).sum(axis=(1, 2)) / total], axis=1)


def test_shapes_and_types(train):
    clips, labels = train
    assert clips.shape == (N, 17, 64, 64, 3) and clips.dtype == np.uint8
    assert labels.shape == (N,) and labels.dtype == np.int64 and set(labels) == set(range(10))
    assert (clips[..., 0] == clips[..., 1]).all() and (clips[..., 0] == clips[..., 2]).all()  # grey: bright on black
    assert clips.max() > 200 and (clips[:, :, 0, 0] == 0).mean() > 0.9  # bright ink, black background


def test_deterministic_from_the_seed(train):
    again = moving_digits("train", N, seed=3)
    assert np.array_equal(train[0], again[0]) and np.array_equal(train[1], again[1])
    assert not np.array_equal(train[0], moving_digits("train", N, seed=4)[0])
    assert np.array_equal(moving_digits("train", 5, seed=3)[0], train[0][:5])  # clip j does not depend on N


def test_the_digit_moves_at_a_constant_1_to_4_px_per_frame_and_stays_inside(train):
    clips, _ = train
    speeds = []
    for clip in clips:
        mass = clip[..., 0].astype(np.int64).sum(axis=(1, 2))
        assert (mass == mass[0]).all()  # no ink is cut off at an edge in any frame
        steps = np.diff(_centroids(clip), axis=0)  # (16, 2) displacement per frame
        assert np.allclose(steps, steps[0], atol=1e-9)  # a straight line at a constant speed
        speed = float(np.hypot(*steps[0]))
        assert 1 - 1e-9 <= speed <= 4 + 1e-9
        speeds.append(speed)
        ink = np.argwhere(clip[..., 0] > 0)  # (frame, y, x) of every lit pixel
        assert ink[:, 1].min() >= 0 and ink[:, 1].max() <= 63 and ink[:, 2].max() <= 63
    assert len(set(np.round(speeds, 6))) > 3  # several speeds, not one


def test_the_label_is_the_digit_drawn_and_its_size_is_24_to_32_px(train):
    clips, labels = train
    d = sklearn_datasets.load_digits()
    for clip, label, m in zip(clips, labels, moving_digit_motions("train", N, seed=3)):
        assert label == m.label == d.target[m.digit]
        ink = digit_ink(d.images[m.digit], m.height)
        h, w = ink.shape
        assert 24 <= h <= 32 and h == m.height  # every scikit-learn digit spans its full height
        for t in (0, 16):
            y, x = m.start[0] + t * m.velocity[0], m.start[1] + t * m.velocity[1]
            assert np.array_equal(clip[t, y : y + h, x : x + w, 0], ink)  # that digit, and nothing else
            assert clip[t, ..., 0].sum() == ink.astype(np.int64).sum()


def test_held_out_clips_show_digits_no_training_clip_shows():
    train, held = split_digits("train"), split_digits("held_out")
    assert len(train) == HELD_OUT_FROM and len(held) == 1797 - HELD_OUT_FROM and not set(train) & set(held)
    assert {m.digit for m in moving_digit_motions("held_out", 400)} <= set(held)
    clips, labels = moving_digits("held_out", 12, seed=0)
    target = sklearn_datasets.load_digits().target
    assert clips.shape == (12, 17, 64, 64, 3) and list(labels) == list(target[HELD_OUT_FROM : HELD_OUT_FROM + 12])
    with pytest.raises(ValueError, match="split must be one of train, held_out"):
        moving_digits("test", 1)


def test_the_mp4_writer_makes_class_folders_tokenize_dataset_reads(tmp_path):
    pytest.importorskip("av")
    from open_magvit2.data.sampler import scan_folder
    from open_magvit2.data.video_io import VIDEO_SUFFIXES, read_video

    out = write_moving_digits(tmp_path / "clips", "held_out", 3, seed=1)
    index = scan_folder(out, VIDEO_SUFFIXES, "video")
    clips, labels = moving_digits("held_out", 3, seed=1)
    assert list(index.files) == sorted(f"{y}/held_out_{j:05d}.mp4" for j, y in enumerate(labels))
    for file, label in zip(index.files, index.labels):
        j = int(file.rsplit("_", 1)[1].split(".")[0])
        assert int(index.class_names[label]) == labels[j]  # the class folder is the digit
        video = read_video(out / file)  # (3, T, H, W) in [-1, 1]
        assert video.shape == (3, 17, 64, 64)
        decoded = ((video.permute(1, 2, 3, 0).numpy() + 1) * 127.5).round()
        assert np.abs(decoded - clips[j]).mean() < 3  # x264 at crf 10: close to the frames written
