"""The model registry: ``model_type`` (what a checkpoint records it holds) → class, the one table of the package,
and :func:`load_pretrained`, which opens any supported checkpoint with the right class, judged from its contents.

It sits above the model packages (it imports them) and below everything that loads "some model": the data
preparation, the CLI, the web app and the package root, which re-exports :func:`load_pretrained`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from open_magvit2.checkpoints.hub import MODEL_TYPES
from open_magvit2.checkpoints.loading import open_checkpoint
from open_magvit2.checkpoints.official import check_weights
from open_magvit2.generator import ImageGenerator, VideoGenerator
from open_magvit2.generator.api import TokenGenerator
from open_magvit2.tokenizer import ImageTokenizer, VideoTokenizer


class ModelKind(NamedTuple):
    """One kind of model: its class and how messages name it."""

    cls: type[ImageTokenizer] | type[VideoTokenizer] | type[ImageGenerator] | type[VideoGenerator]
    label: str


MODEL_KINDS: dict[str, ModelKind] = {
    kind.cls.model_type: kind
    for kind in (
        ModelKind(ImageTokenizer, "image tokenizer"),
        ModelKind(VideoTokenizer, "video tokenizer"),
        ModelKind(ImageGenerator, "generator"),
        ModelKind(VideoGenerator, "video generator"),
    )
}


def model_kind(model_type: str) -> ModelKind:
    """The class and label of ``model_type``; ``ValueError`` naming the known ones otherwise."""
    if model_type not in MODEL_KINDS:
        raise ValueError(f"unknown model_type {model_type!r}; expected one of {MODEL_TYPES}")
    return MODEL_KINDS[model_type]


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
    check_weights(weights)
    checkpoint = open_checkpoint(path_or_id, revision)  # the one folder-or-official-file dispatch
    cls = model_kind(checkpoint.model_type).cls
    if issubclass(cls, TokenGenerator):  # generators hold one set of weights (the official AR files: no EMA)
        return cls.from_checkpoint(checkpoint, device=device, dtype=dtype, **kwargs)
    return cls.from_checkpoint(checkpoint, weights, device=device, dtype=dtype, **kwargs)
