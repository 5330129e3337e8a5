"""``load_pretrained``: open any supported checkpoint with the right class, judged from its contents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from open_magvit2.checkpoints.loading import MODEL_TYPES, open_checkpoint


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


def load_pretrained(
    path_or_id: str | Path,
    weights: str = "ema",
    revision: str | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Load an image tokenizer, video tokenizer or AR generator from an official ``.ckpt``, a ``save_pretrained``
    directory, a released name or a Hugging Face repo id, straight onto ``device`` in ``dtype``. ``weights``
    selects EMA/raw weights of an official tokenizer file (AR files store no EMA)."""
    checkpoint = open_checkpoint(path_or_id, revision)  # the one folder-or-official-file dispatch
    cls = model_class(checkpoint.model_type)
    if checkpoint.model_type == "image_generator":  # AR files hold no EMA weights (spec §0.1)
        return cls.from_checkpoint(checkpoint, device=device, dtype=dtype, **kwargs)
    return cls.from_checkpoint(checkpoint, weights, device=device, dtype=dtype, **kwargs)
