"""Camera-motion clips with a controlled speed (the demo video tokenizer's training data and its held-out motion
clips): the pan moves the content by the requested output pixels per frame, checked by brute-force shifting."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from open_magvit2.demo.data import HELD_OUT_PAN_PX, camera_motion, held_out_motion_clips, motion_clip


def _smooth_photo(h: int = 400, w: int = 600, seed: int = 0) -> np.ndarray:
    """A smooth random colour photo with no black pixel (values 30..225), so a window outside it would show."""
    small = np.random.default_rng(seed).uniform(30, 225, size=(h // 10, w // 10, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC)).clip(30, 225).astype(np.uint8)


def _shift(a: np.ndarray, b: np.ndarray, reach: int = 10) -> tuple[int, int]:
    """The integer (dx, dy) that minimises the mean squared difference between b(u, v) and a(u + dx, v + dy) over
    their overlap: how far the content of frame ``a`` moved to give frame ``b`` (it moves by −dx, −dy)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    n = a.shape[0]
    best, arg = np.inf, (0, 0)
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            aa = a[max(dy, 0) : n + min(dy, 0), max(dx, 0) : n + min(dx, 0)]
            bb = b[max(-dy, 0) : n + min(-dy, 0), max(-dx, 0) : n + min(-dx, 0)]
            err = np.mean((aa - bb) ** 2)
            if err < best:
                best, arg = err, (dx, dy)
    return arg


@pytest.mark.parametrize("pan", [(5, 0), (-3, 2), (0, -7)])
def test_camera_motion_pans_exactly_the_given_pixels_per_frame(pan):
    clip = camera_motion(_smooth_photo(), frames=9, size=48, view=72.0, pan_px=pan)
    assert clip.shape == (9, 48, 48, 3) and clip.dtype == np.uint8
    for t in range(8):
        assert _shift(clip[t], clip[t + 1]) == pan
        dx, dy = pan  # an integer pan at any scale samples the same photo points: frame t+1 is frame t shifted
        n = 48
        np.testing.assert_array_equal(clip[t + 1][max(-dy, 0) : n + min(-dy, 0), max(-dx, 0) : n + min(-dx, 0)],
                                      clip[t][max(dy, 0) : n + min(dy, 0), max(dx, 0) : n + min(dx, 0)])


def test_camera_motion_refuses_a_window_that_leaves_the_photo():
    with pytest.raises(ValueError, match="leaves the 600×400 photo"):
        camera_motion(_smooth_photo(), frames=17, size=64, view=250.0, pan_px=(8, 0))


def test_motion_clip_speeds_cover_the_range_and_stay_inside_the_photo():
    photo, rng = _smooth_photo(300, 380), np.random.default_rng(1)
    speeds = []
    for _ in range(24):
        clip = motion_clip(photo, frames=5, size=64, rng=rng, max_speed_px=8, max_zoom=0.0, max_angle_deg=0.0)
        assert clip.shape == (5, 64, 64, 3) and clip.min() >= 25  # never outside the photo (no black)
        dx, dy = _shift(clip[0], clip[4], reach=34)  # over 4 frames: ±1 px of rounding in 4× the speed
        speeds.append(np.hypot(dx, dy) / 4)
    assert max(speeds) <= 8 + 0.5 and max(speeds) > 6 and min(speeds) < 2.5
    again = motion_clip(photo, frames=5, size=32, rng=np.random.default_rng(1), max_speed_px=8, max_zoom=0.0,
                        max_angle_deg=0.0)
    first = motion_clip(photo, frames=5, size=32, rng=np.random.default_rng(1), max_speed_px=8, max_zoom=0.0,
                        max_angle_deg=0.0)
    np.testing.assert_array_equal(again, first)  # deterministic from the generator


def test_motion_clip_zooms_and_turns_inside_the_photo():
    photo, rng = _smooth_photo(300, 380), np.random.default_rng(2)
    for _ in range(12):
        assert motion_clip(photo, frames=9, size=32, rng=rng, max_speed_px=8).min() >= 25


def test_held_out_pan_moves_five_pixels_per_frame():
    pytest.importorskip("skimage")
    clips = held_out_motion_clips(frames=5, size=64)
    assert sorted(clips) == sorted(f"{p}_{m}" for p in ("chelsea", "coffee") for m in ("pan5", "zoom", "rotate"))
    for photo in ("chelsea", "coffee"):
        pan = clips[f"{photo}_pan5"]
        assert [_shift(pan[t], pan[t + 1]) for t in range(4)] == [(int(HELD_OUT_PAN_PX), 0)] * 4
        for motion in ("zoom", "rotate"):  # no pan: the centre stays put, the corners move
            clip = clips[f"{photo}_{motion}"].astype(np.float64)
            change = np.abs(clip[4] - clip[0]).mean(axis=-1)
            assert change[29:35, 29:35].mean() < 0.5 * change[:6, :6].mean() and change[:6, :6].mean() > 5
