"""``load_pretrained``: open any supported checkpoint with the right class, judged from its contents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from open_magvit2.checkpoints.hub import CONFIG_NAME, resolve_pretrained
from open_magvit2.checkpoints.official import load_official_state_dict

MODEL_TYPES = ("image_tokenizer", "video_tokenizer", "image_generator")


def model_class(model_type: str) -> Any:
    """model_type → class, imported on demand (the model modules import this package)."""
    if model_type == "image_tokenizer":
        from open_magvit2.tokenizer import ImageTokenizer

        return ImageTokenizer
    if model_type == "video_tokenizer":
        from open_magvit2.tokenizer.video import VideoTokenizer

        return VideoTokenizer
    if model_type == "image_generator":
        from open_magvit2.generator import ImageGenerator

        return ImageGenerator
    raise ValueError(f"unknown model_type {model_type!r}; expected one of {MODEL_TYPES}")


def official_model_type(path: str | Path) -> str:
    """Which model an official ``.ckpt`` holds: ``image_generator`` (AR), ``video_tokenizer`` or ``image_tokenizer``."""
    sd = load_official_state_dict(path)
    if any(k.startswith("transformer.") for k in sd):
        return "image_generator"
    conv_in = sd.get("encoder.conv_in.weight", sd.get("encoder.conv_in.conv_1.weight"))
    if conv_in is None:
        raise ValueError(f"{path}: neither a tokenizer (encoder.conv_in) nor an AR model (transformer.*) checkpoint")
    return "video_tokenizer" if conv_in.dim() == 5 else "image_tokenizer"


def load_pretrained(path_or_id: str | Path, weights: str = "ema", **kwargs: Any) -> nn.Module:
    """Load an image tokenizer, video tokenizer or AR generator from an official ``.ckpt``, a
    ``save_pretrained`` directory or a Hugging Face repo id. ``weights`` selects EMA/raw weights of an official
    tokenizer file (AR files store no EMA)."""
    path = resolve_pretrained(path_or_id)
    if path.is_dir():
        cfg = path / CONFIG_NAME
        if not cfg.is_file():
            raise FileNotFoundError(f"{path}: not a save_pretrained directory (no {CONFIG_NAME})")
        return model_class(json.loads(cfg.read_text()).get("model_type")).from_pretrained(path, **kwargs)
    model_type = official_model_type(path)
    if model_type == "image_generator":  # AR files hold no EMA weights (spec §0.1)
        return model_class(model_type).from_pretrained(path, **kwargs)
    return model_class(model_type).from_pretrained(path, weights=weights, **kwargs)
