"""The offline data of the demo models: photos that scikit-image and scikit-learn ship, camera-motion clips
synthesised from them, scikit-learn's handwritten digits, and clips of those digits moving (docs/model_zoo.md).

Every function writes plain files (PNG folders, mp4 clips) that the ordinary training pipelines read, so the demo
recipes are ordinary recipes. Everything is deterministic.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# Colour photos (and a few greyscale ones for texture) that the packages ship. Two colour photos are held out of
# every demo training run, entirely, for our own evaluation.
TRAIN_PHOTOS = (
    "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "stereo_motorcycle", "retina",
    "colorwheel", "sklearn:china", "sklearn:flower", "camera", "coins", "brick", "grass", "gravel", "moon", "clock",
)  # fmt: skip
HELD_OUT_PHOTOS = ("chelsea", "coffee")
DEMO_PHOTO = "chelsea.png"  # the bundled sample photo: scikit-image's "chelsea", held out of every demo training run
DEMO_CLIP = "coffee_camera.mp4"  # the bundled clip: 17 frames of camera motion over "coffee", also held out


def load_photo(name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a named photo: ``skimage.data.<name>`` or ``sklearn:<china|flower>``."""
    if name.startswith("sklearn:"):
        try:
            from sklearn.datasets import load_sample_image
        except ImportError:
            raise ValueError("the demo data needs scikit-learn: pip install scikit-learn") from None
        return np.asarray(load_sample_image(f"{name.split(':', 1)[1]}.jpg"), dtype=np.uint8)
    try:
        from skimage import data
    except ImportError:
        raise ValueError("the demo data needs scikit-image: pip install scikit-image") from None
    im = getattr(data, name)()
    if isinstance(im, tuple):  # stereo_motorcycle: (left, right, disparity)
        im = im[0]
    im = np.asarray(im)
    if im.dtype == bool:
        im = im.astype(np.uint8) * 255
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, axis=-1)
    return np.ascontiguousarray(im[..., :3].astype(np.uint8))


def _safe(name: str) -> str:
    return name.replace(":", "_")


def write_photo_folder(out: str | Path, names: Sequence[str] = TRAIN_PHOTOS, scales: Sequence[float] = (1.0,)
                       ) -> Path:
    """One PNG per photo and scale in ``out`` (a flat folder). Scales below 1 add downsized copies, so random
    crops see the same content at several sizes."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        im = Image.fromarray(load_photo(name))
        for s in scales:
            w, h = im.size
            scaled = im if s == 1.0 else im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
            scaled.save(out / f"{_safe(name)}_{round(100 * s):03d}.png")
    return out


def write_photo_tiles(out: str | Path, names: Sequence[str] = TRAIN_PHOTOS, *, tile: int = 64,
                      scales: Sequence[float] = (1.0, 0.6, 0.35), per_photo: int = 150, seed: int = 0) -> Path:
    """Square ``tile``-pixel crops of each photo at each scale (half-tile stride, at most ``per_photo`` per
    photo and scale, chosen at random) as PNGs in a flat folder.

    Training on these with ``data.size = tile`` crops at the photos' own resolution (the resize and crop of the
    image pipeline are then no-ops), which is what the original-resolution path of a tokenizer sees.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        photo = Image.fromarray(load_photo(name))
        for s in scales:
            w, h = photo.size
            im = photo if s == 1.0 else photo.resize((round(w * s), round(h * s)), Image.LANCZOS)
            arr = np.asarray(im)
            corners = [(y, x) for y in range(0, arr.shape[0] - tile + 1, tile // 2)
                       for x in range(0, arr.shape[1] - tile + 1, tile // 2)]
            for k in rng.permutation(len(corners))[:per_photo]:
                y, x = corners[k]
                name_yx = f"{_safe(name)}_{round(100 * s):03d}_{y}_{x}.png"
                Image.fromarray(arr[y : y + tile, x : x + tile]).save(out / name_yx)
    return out


# ---- camera motion over a photo -------------------------------------------------------------------------------


def camera_clip(photo: np.ndarray, *, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(T, size, size, 3) uint8: a virtual camera moving over ``photo`` — a pan, a zoom and a small rotation,
    each with a random speed and direction, linear in time (bilinear resampling of the still photo)."""
    im = Image.fromarray(photo)
    w, h = im.size
    view = min(w, h) * rng.uniform(0.3, 0.6)  # side of the square window in photo pixels at t = 0
    zoom = math.exp(rng.uniform(-0.25, 0.25))  # window scale at the last frame
    angle = math.radians(rng.uniform(-6, 6))  # rotation at the last frame
    # the rotated, zoomed window stays inside the photo: its bounding box is at most side·(cos + sin) ≤ 1.11·side,
    # and 0.6 · e^0.25 · 1.15 < 1, so the centre always has room
    span = max(view, view * zoom) * 1.15
    cx0, cy0 = rng.uniform(span / 2, w - span / 2), rng.uniform(span / 2, h - span / 2)
    shift = rng.uniform(-0.25, 0.25, size=2) * view  # pan over the clip
    cx1 = float(np.clip(cx0 + shift[0], span / 2, w - span / 2))
    cy1 = float(np.clip(cy0 + shift[1], span / 2, h - span / 2))
    return _render_camera(im, frames=frames, size=size, view=view, zoom=zoom, angle=angle, start=(cx0, cy0),
                          end=(cx1, cy1))


def _render_camera(im: Image.Image, *, frames: int, size: int, view: float, zoom: float, angle: float,
                   start: tuple[float, float], end: tuple[float, float]) -> np.ndarray:
    """(T, size, size, 3) uint8: a square window of side ``view`` photo pixels whose centre moves linearly from
    ``start`` to ``end`` (photo (x, y)) while it scales to ``view · zoom`` and turns by ``angle`` radians at the
    last frame, bilinearly resampled to ``size`` pixels."""
    (cx0, cy0), (cx1, cy1) = start, end
    out = []
    for t in np.linspace(0.0, 1.0, frames):
        side = view * zoom**t
        a = angle * t
        cx, cy = cx0 + (cx1 - cx0) * t, cy0 + (cy1 - cy0) * t
        s = side / size  # photo pixels per output pixel
        cos, sin = math.cos(a) * s, math.sin(a) * s
        # output (u, v) → photo (x, y): rotate and scale about the window centre
        ox, oy = cx - cos * size / 2 + sin * size / 2, cy - sin * size / 2 - cos * size / 2
        frame = im.transform((size, size), Image.AFFINE, (cos, -sin, ox, sin, cos, oy), resample=Image.BILINEAR)
        out.append(np.asarray(frame))
    return np.stack(out)


def camera_motion(photo: np.ndarray, *, frames: int, size: int, view: float, pan_px: tuple[float, float] = (0.0, 0.0),
                  zoom: float = 1.0, angle_deg: float = 0.0, start: tuple[float, float] | None = None) -> np.ndarray:
    """(T, size, size, 3) uint8: a camera with exactly the given motion over ``photo``.

    ``view``: side of the square window in photo pixels at frame 0; ``pan_px``: (x, y) pan in *output* pixels per
    frame (at frame 0's scale, so content moves by ``-pan_px`` pixels per frame when there is no zoom or
    rotation); ``zoom``: window scale at the last frame (> 1 zooms out); ``angle_deg``: rotation at the last
    frame; ``start``: window centre at frame 0 (photo (x, y)), default the position that centres the whole
    motion in the photo. A window that leaves the photo is a ``ValueError``.
    """
    if frames < 2 or size < 1 or not view > 0 or not zoom > 0:
        raise ValueError(f"need frames >= 2, size >= 1, view > 0 and zoom > 0, got frames={frames}, size={size}, "
                         f"view={view}, zoom={zoom}")
    h, w = photo.shape[:2]
    angle = math.radians(angle_deg)
    move = (pan_px[0] * view / size * (frames - 1), pan_px[1] * view / size * (frames - 1))  # photo pixels
    if start is None:
        start = (w / 2 - move[0] / 2, h / 2 - move[1] / 2)
    end = (start[0] + move[0], start[1] + move[1])
    # the window's bounding box at its largest, turned by at most |angle|
    half = max(view, view * zoom) * (abs(math.cos(angle)) + abs(math.sin(angle))) / 2 if abs(angle) < math.pi / 4 \
        else max(view, view * zoom) * math.sqrt(2) / 2
    for cx, cy in (start, end):
        if not (half <= cx <= w - half and half <= cy <= h - half):
            raise ValueError(f"the camera window (side {view:.0f}, zoom {zoom:.2f}) leaves the {w}×{h} photo at "
                             f"centre ({cx:.0f}, {cy:.0f}); use a smaller view or a slower pan")
    return _render_camera(Image.fromarray(photo), frames=frames, size=size, view=view, zoom=zoom, angle=angle,
                          start=start, end=end)


def motion_clip(photo: np.ndarray, *, frames: int, size: int, rng: np.random.Generator, max_speed_px: float = 8.0,
                max_zoom: float = 0.4, max_angle_deg: float = 15.0) -> np.ndarray:
    """(T, size, size, 3) uint8: :func:`camera_motion` with a random motion of controlled speed — a pan at a speed
    uniform in 0..``max_speed_px`` output pixels per frame in a uniform direction, a zoom to ``e^U(−max_zoom,
    max_zoom)`` and a rotation of ``U(−max_angle_deg, max_angle_deg)`` over the clip, a window of 1–3 photo pixels
    per output pixel (the scales of the image tokenizer's training crops; smaller when a fast pan needs the room),
    at a random place where all of it fits."""
    h, w = photo.shape[:2]
    speed, direction = rng.uniform(0.0, max_speed_px), rng.uniform(0.0, 2 * math.pi)
    zoom = math.exp(rng.uniform(-max_zoom, max_zoom))
    angle_deg = rng.uniform(-max_angle_deg, max_angle_deg)
    a = math.radians(angle_deg)
    box = max(1.0, zoom) * (abs(math.cos(a)) + abs(math.sin(a)))  # window bounding box / view at its largest
    vx, vy = speed * math.cos(direction), speed * math.sin(direction)
    travel = (abs(vx) * (frames - 1) / size, abs(vy) * (frames - 1) / size)  # pan over the clip / view
    fits = min(w / (box + travel[0]), h / (box + travel[1]))  # the largest view that keeps the window inside
    view = min(size * rng.uniform(1.0, 3.0), 0.999 * fits)
    room_x, room_y = w - view * (box + travel[0]), h - view * (box + travel[1])
    cx = view * box / 2 + rng.uniform(0.0, room_x) + (view * travel[0] if vx < 0 else 0.0)
    cy = view * box / 2 + rng.uniform(0.0, room_y) + (view * travel[1] if vy < 0 else 0.0)
    return camera_motion(photo, frames=frames, size=size, view=view, pan_px=(vx, vy), zoom=zoom, angle_deg=angle_deg,
                         start=(cx, cy))


HELD_OUT_PAN_PX = 5.0  # the held-out pan's speed, output pixels per frame


def held_out_motion_clips(*, frames: int = 17, size: int = 64) -> dict[str, np.ndarray]:
    """The held-out motion clips, ``<photo>_<motion>`` → (T, size, size, 3) uint8, over each of
    ``HELD_OUT_PHOTOS``: ``pan5``, a horizontal pan at exactly ``HELD_OUT_PAN_PX`` output pixels per frame;
    ``zoom``, a zoom in to half the window over the clip; ``rotate``, a 15° rotation. The window is 35% of the
    photo's shorter side (the scale of the image tokenizer's smallest training crops)."""
    out = {}
    for name in HELD_OUT_PHOTOS:
        photo = load_photo(name)
        view = 0.35 * min(photo.shape[:2])
        out[f"{name}_pan5"] = camera_motion(photo, frames=frames, size=size, view=view, pan_px=(HELD_OUT_PAN_PX, 0.0))
        out[f"{name}_zoom"] = camera_motion(photo, frames=frames, size=size, view=view, zoom=0.5)
        out[f"{name}_rotate"] = camera_motion(photo, frames=frames, size=size, view=view, angle_deg=15.0)
    return out


def demo_clip(name: str, *, frames: int = 17, size: int = 128, seed: int = 2024) -> np.ndarray:
    """(T, size, size, 3) uint8: the demo clip's camera motion (seed 2024) over a named photo. The bundled clip,
    ``DEMO_CLIP``, is this over ``coffee``; the model card also measures it over ``chelsea``."""
    return camera_clip(load_photo(name), frames=frames, size=size, rng=np.random.default_rng(seed))


def write_clips(out: str | Path, names: Sequence[str], *, per_photo: int, frames: int, size: int, fps: float = 8.0,
                seed: int = 0, max_speed_px: float | None = None) -> Path:
    """``per_photo`` camera-motion mp4 clips per photo into ``out/<photo>/clip_XX.mp4`` (lossless-quality x264):
    :func:`camera_clip`, or with ``max_speed_px`` :func:`motion_clip` (pans up to that many pixels per frame)."""
    from open_magvit2.data.video_io import write_video

    out = Path(out)
    rng = np.random.default_rng(seed)
    for name in names:
        photo = load_photo(name)
        folder = out / _safe(name)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_photo):
            clip = (camera_clip(photo, frames=frames, size=size, rng=rng) if max_speed_px is None
                    else motion_clip(photo, frames=frames, size=size, rng=rng, max_speed_px=max_speed_px))
            write_video(folder / f"clip_{i:02d}.mp4", clip, fps=fps, crf=10)
    return out


# ---- digits ---------------------------------------------------------------------------------------------------


def digits(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits as (N, size, size, 3) uint8 — bright digit on black (data value 0,
    the background, is black; 16 is white), bilinearly upsampled from 8×8 — and their labels (N,) in 0..9."""
    d = _load_digits()
    gray = np.stack([upsample_digit(x, size) for x in d.images])
    return np.repeat(gray[..., None], 3, axis=-1), d.target.astype(np.int64)


@functools.cache
def _load_digits() -> Any:  # a scikit-learn Bunch: images (1797, 8, 8) on 0..16, target (1797,)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ValueError("the demo data needs scikit-learn: pip install scikit-learn") from None
    return load_digits()


def upsample_digit(image: np.ndarray, size: int) -> np.ndarray:
    """One 8×8 digit on scikit-learn's 0..16 scale → (size, size) uint8, bright on black, bilinearly upsampled."""
    small = Image.fromarray(np.round(image * (255 / 16)).astype(np.uint8))
    return np.asarray(small.resize((size, size), Image.BILINEAR))


def digits_to_features(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 digit images → (N, 64) features on scikit-learn's 0..16 scale: the mean of the channels,
    box-downsampled to 8×8. Real and generated images go through the same function."""
    gray = images.astype(np.float64).mean(axis=-1)
    n, h, w = gray.shape
    small = gray.reshape(n, 8, h // 8, 8, w // 8).mean(axis=(2, 4))
    return (small * (16 / 255)).reshape(n, 64)


def write_digits_folder(out: str | Path, size: int = 32, indices: Sequence[int] | None = None) -> Path:
    """The digits as ``out/<digit>/<index>.png`` (class folders → labels 0..9 in sorted order); ``indices``: only
    those digits (e.g. :func:`split_digits`), default all."""
    out = Path(out)
    images, labels = digits(size)
    for i in range(len(labels)) if indices is None else indices:
        im, y = images[i], labels[i]
        folder = out / str(int(y))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(folder / f"{i:04d}.png")
    return out


def digits_classifier():
    """A support-vector classifier (scikit-learn's ``SVC``, default settings) trained on all real digits, seen
    through :func:`digits_to_features`. It scores generated digits."""
    from sklearn.svm import SVC

    images, labels = digits()
    return SVC().fit(digits_to_features(images), labels)


# ---- moving digits: the clips of the video demo -----------------------------------------------------------------

MOVING_FRAMES = 17  # the video tokenizer's clip (tokenizer/video.py DEFAULT_WINDOW)
MOVING_CANVAS = 64
MOVING_HEIGHTS = (24, 32)  # digit height in pixels, both ends included
MOVING_SPEEDS = (1.0, 4.0)  # pixels per frame, both ends included (and as far as the canvas allows, see below)
HELD_OUT_FROM = 1500  # scikit-learn's digits 1500..1796 (297, about 30 per class) are held out; 0..1499 train
SPLITS = ("train", "held_out")


@dataclass(frozen=True)
class DigitMotion:
    """One moving-digit clip: which digit, how tall, where its ink starts and how it moves (pixels, (y, x))."""

    digit: int  # index into scikit-learn's digits
    label: int  # the digit shown, 0..9
    height: int  # the digit is upsampled to height × height; its ink is cropped out of that
    start: tuple[int, int]  # top-left corner of the ink at frame 0
    velocity: tuple[int, int]  # (dy, dx) pixels per frame, constant


def digit_ink(image: np.ndarray, height: int) -> np.ndarray:
    """(h, w) uint8: an 8×8 digit upsampled to ``height``² (:func:`upsample_digit`), cropped to its non-zero
    pixels (the rows always span the whole height: every scikit-learn digit touches its top and bottom rows)."""
    big = upsample_digit(image, height)
    rows, cols = np.flatnonzero(big.any(axis=1)), np.flatnonzero(big.any(axis=0))
    return big[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def split_digits(split: str) -> np.ndarray:
    """The scikit-learn digit indices of a split: ``train`` 0..1499, ``held_out`` 1500..1796."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    n = len(_load_digits().target)
    return np.arange(HELD_OUT_FROM) if split == "train" else np.arange(HELD_OUT_FROM, n)


def moving_digit_motions(split: str = "train", num_clips: int | None = None, *, seed: int = 0,
                         frames: int = MOVING_FRAMES, canvas: int = MOVING_CANVAS) -> list[DigitMotion]:
    """The motions of :func:`moving_digits` (same arguments), drawn without rendering anything.

    Clip j shows digit ``split_digits(split)[j % n]`` and draws its height and motion from
    ``default_rng([seed, split, j])``: a height in ``MOVING_HEIGHTS``, then an integer velocity (dy, dx) with a
    speed in ``MOVING_SPEEDS`` chosen uniformly among those that keep the ink inside the canvas for all frames
    (a 24–32 px digit crossing 16 frame steps in 64 px cannot go faster than about 2–3 px/frame per axis), then a
    start where it stays inside. Integer steps move the ink by whole pixels, so nothing is resampled.
    """
    if frames < 2 or canvas < MOVING_HEIGHTS[1] + frames - 1:
        raise ValueError(f"need frames >= 2 and canvas >= {MOVING_HEIGHTS[1]} + frames - 1, got frames={frames}, "
                         f"canvas={canvas}")
    d = _load_digits()
    indices = split_digits(split)
    n = len(indices) if num_clips is None else num_clips
    if n < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    steps, (lo, hi) = frames - 1, MOVING_SPEEDS
    motions = []
    for j in range(n):
        rng = np.random.default_rng([seed, SPLITS.index(split), j])
        digit = int(indices[j % len(indices)])
        height = int(rng.integers(MOVING_HEIGHTS[0], MOVING_HEIGHTS[1] + 1))
        h, w = digit_ink(d.images[digit], height).shape
        room_y, room_x = canvas - h, canvas - w
        velocities = [(vy, vx) for vy in range(-4, 5) for vx in range(-4, 5)
                      if lo**2 <= vy**2 + vx**2 <= hi**2 and abs(vy) * steps <= room_y and abs(vx) * steps <= room_x]
        vy, vx = velocities[int(rng.integers(len(velocities)))]
        y0 = int(rng.integers(max(0, -vy * steps), room_y - max(0, vy * steps) + 1))
        x0 = int(rng.integers(max(0, -vx * steps), room_x - max(0, vx * steps) + 1))
        motions.append(DigitMotion(digit, int(d.target[digit]), height, (y0, x0), (vy, vx)))
    return motions


def render_motion(motion: DigitMotion, *, frames: int = MOVING_FRAMES, canvas: int = MOVING_CANVAS) -> np.ndarray:
    """(frames, canvas, canvas, 3) uint8: the digit of ``motion``, bright on black, moved by whole pixels."""
    ink = digit_ink(_load_digits().images[motion.digit], motion.height)
    h, w = ink.shape
    out = np.zeros((frames, canvas, canvas), np.uint8)
    for t in range(frames):
        y, x = motion.start[0] + t * motion.velocity[0], motion.start[1] + t * motion.velocity[1]
        if not (0 <= y <= canvas - h and 0 <= x <= canvas - w):
            raise ValueError(f"the digit leaves the {canvas}² canvas at frame {t} ({motion})")
        out[t, y : y + h, x : x + w] = ink
    return np.repeat(out[..., None], 3, axis=-1)


def moving_digits(split: str = "train", num_clips: int | None = None, *, seed: int = 0,
                  frames: int = MOVING_FRAMES, canvas: int = MOVING_CANVAS) -> tuple[np.ndarray, np.ndarray]:
    """Clips of one scikit-learn digit moving in a straight line: (N, frames, canvas, canvas, 3) uint8 (bright on
    black, like :func:`digits`) and the labels (N,) int64, the digit shown. Deterministic from ``seed``.

    ``split``: ``train`` draws the digits 0..1499, ``held_out`` 1500..1796 (by sample: a held-out clip shows a
    handwritten digit no training clip shows). ``num_clips`` (default: one per digit of the split) cycles through
    them. How each clip moves: :func:`moving_digit_motions`.
    """
    motions = moving_digit_motions(split, num_clips, seed=seed, frames=frames, canvas=canvas)
    clips = np.stack([render_motion(m, frames=frames, canvas=canvas) for m in motions])
    return clips, np.array([m.label for m in motions], dtype=np.int64)


def write_moving_digits(out: str | Path, split: str = "train", num_clips: int | None = None, *, seed: int = 0,
                        fps: float = 8.0) -> Path:
    """:func:`moving_digits` as ``out/<digit>/<split>_<j>.mp4`` (x264 at crf 10), the class-folder layout that
    ``tokenize-dataset`` reads with a video tokenizer (class folders 0..9 → labels 0..9)."""
    from open_magvit2.data.video_io import write_video

    out = Path(out)
    for j, motion in enumerate(moving_digit_motions(split, num_clips, seed=seed)):
        folder = out / str(motion.label)
        folder.mkdir(parents=True, exist_ok=True)
        write_video(folder / f"{split}_{j:05d}.mp4", render_motion(motion), fps=fps, crf=10)
    return out
