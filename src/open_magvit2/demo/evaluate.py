"""Measurements of the demo models on held-out data: photos at full resolution through the original-resolution
path, camera-motion clips, and class-conditional digits judged by a classifier trained on the real digits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from open_magvit2.data.video_io import uint8_to_video
from open_magvit2.demo.data import DEMO_CLIP, HELD_OUT_PHOTOS, load_photo
from open_magvit2.drawing import reconstruct_photo
from open_magvit2.imaging import psnr_uint8, to_uint8


def photo_psnr(tokenizer: nn.Module, names: Sequence[str] = HELD_OUT_PHOTOS) -> dict[str, float]:
    """PSNR (dB, uint8) of each named photo's full-resolution reconstruction."""
    return {n: psnr_uint8(reconstruct_photo(tokenizer, load_photo(n))[0], load_photo(n)) for n in names}


@torch.no_grad()
def codebook_usage(tokenizer: nn.Module, names: Sequence[str] = HELD_OUT_PHOTOS) -> dict[str, float]:
    """Distinct codes among all tokens of the named photos (full resolution), and that count over the tokens."""
    tokens = torch.cat([reconstruct_photo(tokenizer, load_photo(n))[1].flatten() for n in names])
    used = int(torch.unique(tokens).numel())
    return {"tokens": int(tokens.numel()), "distinct_codes": used, "distinct_per_token": used / tokens.numel()}


@torch.no_grad()
def clip_psnr(tokenizer: nn.Module, clip: torch.Tensor) -> float:
    """PSNR (dB, uint8 frames) of a (3, T, H, W) clip in [−1, 1] through the video tokenizer."""
    rec = tokenizer.decode(tokenizer.encode(clip[None]))[0]
    return psnr_uint8(to_uint8(rec.transpose(0, 1)), to_uint8(clip.transpose(0, 1)))


@torch.no_grad()
def frames_psnr(tokenizer: nn.Module, clip: torch.Tensor) -> float:
    """PSNR (dB) of a (3, T, H, W) clip through an image tokenizer frame by frame: what the video tokenizer's
    4× temporal compression is measured against."""
    frames = clip.transpose(0, 1)
    rec = tokenizer.decode(tokenizer.encode(frames))
    return psnr_uint8(to_uint8(rec), to_uint8(frames))


def held_out_clip(name: str) -> torch.Tensor:
    """(3, T, H, W) in [−1, 1]: :func:`~open_magvit2.demo.data.demo_clip` over a held-out photo, uncompressed."""
    from open_magvit2.demo.data import demo_clip

    return uint8_to_video(torch.from_numpy(demo_clip(name)).permute(3, 0, 1, 2))


@torch.no_grad()
def video_motion_psnr(video_tokenizer: nn.Module, image_tokenizer: nn.Module, *, size: int = 64
                      ) -> dict[str, dict[str, float]]:
    """The video tokenizer against the image tokenizer run frame by frame on the held-out motion clips
    (:func:`~open_magvit2.demo.data.held_out_motion_clips`: a pan at 5 px/frame, a zoom and a rotation over each
    held-out photo, 17 frames of ``size`` × ``size``, uncompressed).

    Per clip: ``video`` and ``image`` PSNR (dB, uint8, over all frames), ``difference`` (video − image), and the
    mean per-frame PSNR of each at the key frames (``video_key``, ``image_key``: the frames 0, 4, 8, … that a
    latent frame ends on) and at the frames in between (``video_between``, ``image_between``). ``image_quarter``
    is the image tokenizer at the video tokenizer's bits per frame (a quarter of its own with 4× in time): each
    frame coded at half the size (area), decoded and brought back up (bicubic); an intra-frame reference that a
    video tokenizer beats only by predicting frames from each other."""
    from open_magvit2.demo.data import held_out_motion_clips

    step = video_tokenizer.frame_step
    out = {}
    for name, clip in held_out_motion_clips(size=size).items():
        x = uint8_to_video(torch.from_numpy(clip).permute(3, 0, 1, 2))  # (3, T, H, W)
        frames = x.transpose(0, 1)  # (T, 3, H, W)
        real = to_uint8(frames)
        half = image_tokenizer.decode(image_tokenizer.encode(F.interpolate(frames, scale_factor=0.5, mode="area")))
        rec = {"video": to_uint8(video_tokenizer.decode(video_tokenizer.encode(x[None]))[0].transpose(0, 1)),
               "image": to_uint8(image_tokenizer.decode(image_tokenizer.encode(frames)))}
        row: dict[str, float] = {}
        for kind, r in rec.items():
            per_frame = np.array([psnr_uint8(a, b) for a, b in zip(r, real)])
            key = np.arange(len(per_frame)) % step == 0
            row[kind] = float(psnr_uint8(np.asarray(r), np.asarray(real)))
            row[f"{kind}_key"] = float(per_frame[key].mean())
            row[f"{kind}_between"] = float(per_frame[~key].mean())
        row["difference"] = row["video"] - row["image"]
        up = F.interpolate(half, size=frames.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)
        row["image_quarter"] = float(psnr_uint8(to_uint8(up), real))
        out[name] = row
    return out


@torch.no_grad()
def moving_digits_reconstruction(tokenizer: nn.Module, num_clips: int | None = None, *, seed: int = 0,
                                 split: str = "held_out", batch: int = 8) -> dict:
    """A video tokenizer on the moving-digits clips (:func:`~open_magvit2.demo.data.moving_digits`; default: one
    clip per digit of ``split``, the held-out digits 1500..1796), each coded as one 17-frame clip.

    Returns the mean over clips of each frame's PSNR (``per_frame_psnr``, dB, uint8), their means at the key frames
    (``key_psnr``: 0, 4, 8, …, the frames a latent frame ends on) and in between (``between_psnr``), ``gap``
    (key − between: how far the in-between frames lag), ``frame0_psnr`` (the frame coded alone), ``psnr`` (mean
    per-clip PSNR over all frames), the token grid of one clip, and the distinct codes among all tokens."""
    from open_magvit2.data.video_io import video_to_uint8
    from open_magvit2.demo.data import moving_digits
    from open_magvit2.eval.metrics import CodebookUsage

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    clips, _ = moving_digits(split, num_clips, seed=seed)  # (N, T, H, W, 3) uint8
    usage = CodebookUsage(tokenizer.config.z_channels)
    per_frame, per_clip, grid = [], [], ()
    for part in torch.from_numpy(clips).split(batch):
        tokens = tokenizer.encode(uint8_to_video(part.permute(0, 4, 1, 2, 3)))
        usage.update(tokens)
        grid = tuple(tokens.shape[1:])
        for rec, real in zip(tokenizer.decode(tokens), part.numpy()):
            rec = video_to_uint8(rec)
            per_frame.append([psnr_uint8(a, b) for a, b in zip(rec, real)])
            per_clip.append(psnr_uint8(rec, real))
    curve = np.mean(per_frame, axis=0)
    key = np.arange(len(curve)) % tokenizer.frame_step == 0
    return {"per_frame_psnr": [float(v) for v in curve], "key_psnr": float(curve[key].mean()),
            "between_psnr": float(curve[~key].mean()), "gap": float(curve[key].mean() - curve[~key].mean()),
            "frame0_psnr": float(curve[0]), "psnr": float(np.mean(per_clip)), "clips": len(clips),
            "token_grid": list(grid), "tokens": int(len(clips) * np.prod(grid)), "distinct_codes": usage.used,
            "bits": tokenizer.config.z_channels}


@torch.no_grad()
def digits_reconstruction(tokenizer: nn.Module, split: str = "held_out") -> dict[str, float]:
    """A digits tokenizer on one split of scikit-learn's digits (:func:`~open_magvit2.demo.data.split_digits`,
    32 × 32): mean per-image PSNR (dB, uint8) of the reconstructions, and the distinct codes among all their tokens
    (exact at any codebook size, :class:`~open_magvit2.eval.metrics.CodebookUsage`)."""
    from open_magvit2.demo.data import digits, split_digits
    from open_magvit2.eval.metrics import CodebookUsage
    from open_magvit2.imaging import uint8_to_tensor

    images, _ = digits(32)
    real = images[split_digits(split)]
    tokens = tokenizer.encode(torch.cat([uint8_to_tensor(im) for im in real]))
    rec = to_uint8(tokenizer.decode(tokens))
    usage = CodebookUsage(tokenizer.config.z_channels)
    usage.update(tokens)
    psnr = [psnr_uint8(r, x) for r, x in zip(rec, real)]
    return {"psnr": float(np.mean(psnr)), "images": len(real), "tokens": int(tokens.numel()),
            "distinct_codes": usage.used, "bits": tokenizer.config.z_channels}


@torch.no_grad()
def digits_accuracy(generator: nn.Module, *, per_class: int = 100, cfg_scale: float | None = None,
                    seed: int = 0, batch: int = 250) -> dict[str, float]:
    """Share of generated digits that the real-digit SVC assigns to the requested class (per class and overall).

    ``cfg_scale=None``: the model's default guidance; ``1.0``: no guidance."""
    from open_magvit2.demo.data import digits_classifier, digits_to_features

    clf = digits_classifier()
    labels = torch.arange(10).repeat_interleave(per_class)
    g = torch.Generator().manual_seed(seed)
    extra = {} if cfg_scale is None else {"cfg_scale": cfg_scale}  # one scale for every sub-token
    preds = []
    for part in labels.split(batch):
        images = to_uint8(generator.sample_images(part, generator=g, **extra))
        preds.append(clf.predict(digits_to_features(np.asarray(images))))
    pred = np.concatenate(preds)
    truth = labels.numpy()
    per = {str(c): float((pred[truth == c] == c).mean()) for c in range(10)}
    return {"overall": float((pred == truth).mean()), "per_class": per}


# ---- the moving-digits video generator ---------------------------------------------------------------------------

INK = 0.35  # a pixel is ink when its grey level is above this share of the frame's brightest pixel
MOVED_PX = 8.0  # a clip moves when its ink's centre travels at least this far from the first frame to the last


def _ink(frame: np.ndarray) -> np.ndarray | None:
    """(H, W, 3) uint8 → the (H, W) bool ink mask, or None for a blank frame."""
    gray = frame.astype(np.float32).mean(axis=-1)
    peak = float(gray.max())
    return None if peak < 32 else gray > INK * peak


def frame_digit_images(frames: np.ndarray, size: int = 32) -> np.ndarray:
    """(N, H, W, 3) uint8 moving-digit frames → (N, size, size, 3) uint8 digit images as the classifier sees real
    digits: the box around the ink, padded to a square about its centre and resized to ``size`` (a moving digit
    is the real digit's ink cropped, :func:`~open_magvit2.demo.data.digit_ink`). A blank frame gives a blank image."""
    from PIL import Image

    out = np.zeros((len(frames), size, size, 3), np.uint8)
    for i, frame in enumerate(frames):
        mask = _ink(frame)
        if mask is None:
            continue
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        crop = frame[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        side = max(crop.shape[:2])
        square = np.zeros((side, side, 3), np.uint8)
        y, x = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
        square[y : y + crop.shape[0], x : x + crop.shape[1]] = crop
        out[i] = np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR))
    return out


def ink_centres(clip: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 → (T, 2) the (y, x) centre of each frame's ink (NaN for a blank frame)."""
    centres = np.full((len(clip), 2), np.nan)
    for t, frame in enumerate(clip):
        mask = _ink(frame)
        if mask is not None:
            ys, xs = np.nonzero(mask)
            centres[t] = ys.mean(), xs.mean()
    return centres


def clip_digit_scores(clips: np.ndarray, labels: np.ndarray, classifier: Any = None) -> dict[str, Any]:
    """Moving-digit clips (N, T, H, W, 3) uint8 with the digit each should show: the share of frames the real-digit
    classifier reads as that digit (overall and per class), and the share of clips whose ink centre travels at
    least ``MOVED_PX`` pixels from the first frame to the last."""
    from open_magvit2.demo.data import digits_classifier, digits_to_features

    clf = classifier or digits_classifier()
    n, t = clips.shape[:2]
    pred = clf.predict(digits_to_features(frame_digit_images(clips.reshape(n * t, *clips.shape[2:])))).reshape(n, t)
    right = pred == labels[:, None]
    travel = [np.linalg.norm(c[-1] - c[0]) for c in map(ink_centres, clips)]
    moved = np.array([d >= MOVED_PX if np.isfinite(d) else False for d in travel])
    per = {str(c): float(right[labels == c].mean()) for c in np.unique(labels)}
    return {"frame_accuracy": float(right.mean()), "per_class": per, "clips_moving": float(moved.mean()),
            "median_travel_px": float(np.nanmedian(travel)), "clips": int(n)}


@torch.no_grad()
def video_digits_scores(generator: nn.Module, *, per_class: int = 20, seed: int = 0, batch: int = 20,
                        cfg_scale: float | None = None) -> dict[str, Any]:
    """Class-conditional clips of a moving-digits video generator (``per_class`` of each digit, seeded) scored
    by :func:`clip_digit_scores`."""
    from open_magvit2.data.video_io import video_to_uint8
    from open_magvit2.demo.data import digits_classifier

    labels = torch.arange(10).repeat_interleave(per_class)
    g = torch.Generator().manual_seed(seed)
    extra = {} if cfg_scale is None else {"cfg_scale": cfg_scale}
    clips = [video_to_uint8(c) for part in labels.split(batch)
             for c in generator.sample_videos(part, generator=g, **extra)]
    return clip_digit_scores(np.stack(clips), labels.numpy(), digits_classifier())


@torch.no_grad()
def first_frame_scores(generator: nn.Module, *, num_clips: int = 100, seed: int = 0, batch: int = 20
                       ) -> dict[str, Any]:
    """Image-to-video on held-out clips: frame 0 of ``num_clips`` held-out moving-digit clips is continued under
    its own label. PSNR (dB, uint8) of the output's frame 0 against the given frame, and the scores of
    :func:`clip_digit_scores` on the continued clips (the digit keeps its class, the clip moves)."""
    from open_magvit2.data.video_io import video_to_uint8
    from open_magvit2.demo.data import digits_classifier, moving_digits
    from open_magvit2.imaging import uint8_to_tensor

    real, labels = moving_digits("held_out", num_clips, seed=seed)
    g = torch.Generator().manual_seed(seed)
    clips = []
    for start in range(0, num_clips, batch):
        first = torch.cat([uint8_to_tensor(f) for f in real[start : start + batch, 0]])
        out = generator.sample_videos(torch.from_numpy(labels[start : start + batch]), first_frame=first, generator=g)
        clips.extend(video_to_uint8(c) for c in out)
    clips = np.stack(clips)
    psnr = [psnr_uint8(c[0], r[0]) for c, r in zip(clips, real)]
    return {"frame0_psnr": float(np.mean(psnr)), **clip_digit_scores(clips, labels, digits_classifier())}


def real_clip_scores(num_clips: int = 200, seed: int = 0) -> dict[str, Any]:
    """:func:`clip_digit_scores` on real held-out clips: what the frame classifier and the motion test give on
    the data itself (the ceiling the generated clips are read against)."""
    from open_magvit2.demo.data import moving_digits

    clips, labels = moving_digits("held_out", num_clips, seed=seed)
    return clip_digit_scores(clips, labels)


MODELS = ("image_tokenizer", "video_tokenizer", "image_generator", "video_generator")
SHIPPED = MODELS  # the models the package ships (docs/model_zoo.md)


def measure_all(models: Sequence[str] = SHIPPED) -> dict:
    """Every figure of the model cards of ``models`` (default: the shipped ones), on the installed
    (float16-stored) demo models."""
    from open_magvit2.checkpoints.hub import demo_sample
    from open_magvit2.data.video_io import read_video
    from open_magvit2.generator import ImageGenerator, VideoGenerator
    from open_magvit2.tokenizer import ImageTokenizer, VideoTokenizer

    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown demo models {unknown}; choose from {MODELS}")
    out: dict = {}
    tok = ImageTokenizer.from_pretrained("demo")
    if "image_tokenizer" in models:
        out["image_tokenizer"] = {"held_out_psnr": photo_psnr(tok), "codebook": codebook_usage(tok)}
    if "video_tokenizer" in models:
        vtok = VideoTokenizer.from_pretrained("demo")
        clip = read_video(demo_sample(DEMO_CLIP))
        out["video_tokenizer"] = {
            "held_out_clip_psnr": clip_psnr(vtok, clip),
            "chelsea_clip_psnr": clip_psnr(vtok, held_out_clip("chelsea")),
            "image_tokenizer_per_frame_psnr": frames_psnr(tok, clip),
            "held_out_motion": video_motion_psnr(vtok, tok),
            "held_out_motion_128": video_motion_psnr(vtok, tok, size=128),
        }
    if "image_generator" in models:
        gen = ImageGenerator.from_pretrained("demo")
        out["image_generator"] = {
            "svc_accuracy_default_cfg": digits_accuracy(gen),
            "svc_accuracy_cfg_1": digits_accuracy(gen, cfg_scale=1.0),
            "cfg_scale": list(gen.config.sample_cfg_scale),
        }
    if "video_generator" in models:
        vgen = VideoGenerator.from_pretrained("demo")
        out["video_generator"] = {
            "tokenizer_held_out": moving_digits_reconstruction(vgen.tokenizer),
            "class_conditional": video_digits_scores(vgen),
            "class_conditional_cfg_1": video_digits_scores(vgen, cfg_scale=1.0),
            "first_frame": first_frame_scores(vgen),
            "real_held_out_clips": real_clip_scores(),
            "cfg_scale": list(vgen.config.sample_cfg_scale),
        }
    return out
