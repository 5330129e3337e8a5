"""Measurements of the demo models on held-out data: photos at full resolution through the original-resolution
path, camera-motion clips, and class-conditional digits judged by a classifier trained on the real digits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
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


def measure_all() -> dict:
    """Every figure of the model cards, on the installed (float16-stored) demo models."""
    from open_magvit2.checkpoints.hub import demo_sample
    from open_magvit2.data.video_io import read_video
    from open_magvit2.generator import ImageGenerator
    from open_magvit2.tokenizer import ImageTokenizer, VideoTokenizer

    tok = ImageTokenizer.from_pretrained("demo")
    vtok = VideoTokenizer.from_pretrained("demo")
    gen = ImageGenerator.from_pretrained("demo")
    return {
        "image_tokenizer": {"held_out_psnr": photo_psnr(tok), "codebook": codebook_usage(tok)},
        "video_tokenizer": {
            "held_out_clip_psnr": clip_psnr(vtok, read_video(demo_sample(DEMO_CLIP))),
            "chelsea_clip_psnr": clip_psnr(vtok, held_out_clip("chelsea")),
            "image_tokenizer_per_frame_psnr": frames_psnr(tok, read_video(demo_sample(DEMO_CLIP))),
        },
        "image_generator": {
            "svc_accuracy_default_cfg": digits_accuracy(gen),
            "svc_accuracy_cfg_1": digits_accuracy(gen, cfg_scale=1.0),
            "cfg_scale": list(gen.config.sample_cfg_scale),
        },
    }
