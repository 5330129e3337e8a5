"""The models a web app serves: an image tokenizer, a video tokenizer and a generator, each optional.

Each is named as everywhere in the package (a ``save_pretrained`` folder, an official ``.ckpt``, a released name, a
hub repo id), or ``"demo"`` for the bundled demo model of its kind, or ``"none"`` for no model (its tab is left
out). ``None`` (the ``serve`` default) means the demo model if this installation bundles it, else none.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from open_magvit2.checkpoints.auto import load_pretrained
from open_magvit2.checkpoints.hub import DEMO_NAME, demo_model_dir
from open_magvit2.data.tokens import CLASSES_NAME
from open_magvit2.device import pick_device
from open_magvit2.generator import ImageGenerator
from open_magvit2.precision import set_tf32
from open_magvit2.tokenizer import ImageTokenizer, VideoTokenizer

NONE = "none"
_KINDS = {  # model_type: (class, the serve flag, what to pass instead)
    "image_tokenizer": (ImageTokenizer, "--tokenizer", "pass it to --video-tokenizer or --generator"),
    "video_tokenizer": (VideoTokenizer, "--video-tokenizer", "pass it to --tokenizer or --generator"),
    "image_generator": (ImageGenerator, "--generator", "pass it to --tokenizer or --video-tokenizer"),
}


@dataclass
class ServedModels:
    """What the app serves; a missing model (None) leaves its tab out. ``sources`` name what was loaded (paths),
    ``demo`` which of them are the bundled demo models."""

    tokenizer: ImageTokenizer | None = None
    video_tokenizer: VideoTokenizer | None = None
    generator: ImageGenerator | None = None
    class_names: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    demo: set[str] = field(default_factory=set)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def resolve(spec: str | Path | None, model_type: str) -> str | Path | None:
    """What to load for one model: a checkpoint, the demo folder, or None (no model)."""
    if spec is None:  # the default: the bundled demo model if there is one
        try:
            return demo_model_dir(model_type)
        except FileNotFoundError:
            return None
    if str(spec) == NONE:
        return None
    return demo_model_dir(model_type) if str(spec) == DEMO_NAME else spec


def class_names(checkpoint: str | Path | None, num_classes: int) -> list[str]:
    """The generator's class names: ``classes.json`` (a JSON list, one name per label) in the checkpoint's folder
    when it has one with ``num_classes`` names, else ``class 0``, ``class 1``, …"""
    path = Path(checkpoint) / CLASSES_NAME if checkpoint is not None and Path(checkpoint).is_dir() else None
    if path is not None and path.is_file():
        try:
            names = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a JSON list of class names ({e})") from None
        if isinstance(names, list) and len(names) == num_classes:
            return [str(n) for n in names]
        print(f"warning: {path} does not hold {num_classes} class names; numbering the classes instead",
              file=sys.stderr)
    return [f"class {i}" for i in range(num_classes)]


def _load(checkpoint: str | Path, model_type: str, device: torch.device) -> nn.Module:
    cls, flag, hint = _KINDS[model_type]
    model = load_pretrained(checkpoint, device=device)
    if not isinstance(model, cls):
        raise ValueError(f"{flag} {checkpoint}: it holds a {type(model).__name__}, not a {cls.__name__}; {hint}")
    return model.to(device).eval()


def load_models(tokenizer: str | Path | None = None, video_tokenizer: str | Path | None = None,
                generator: str | Path | None = None, device: str | None = None) -> ServedModels:
    """Load the three models (module docstring for what each argument may be) onto ``device`` in float32."""
    dev = pick_device(device)
    set_tf32(False)  # the inference precision policy (precision.py): float32 means float32
    served = ServedModels(device=dev)
    for attr, spec, model_type in (("tokenizer", tokenizer, "image_tokenizer"),
                                   ("video_tokenizer", video_tokenizer, "video_tokenizer"),
                                   ("generator", generator, "image_generator")):
        checkpoint = resolve(spec, model_type)
        if checkpoint is None:
            continue
        setattr(served, attr, _load(checkpoint, model_type, dev))
        served.sources[attr] = str(checkpoint)
        if spec is None or str(spec) == DEMO_NAME:
            served.demo.add(attr)
    if served.generator is not None:
        served.class_names = class_names(served.sources["generator"], served.generator.config.num_classes)
        if served.generator.tokenizer is None:
            raise ValueError(f"--generator {served.sources['generator']}: a tokens-only checkpoint has no tokenizer "
                             "to draw its samples")
    if not served.sources:
        raise ValueError("no model to serve: the bundled demo models are missing from this installation; pass "
                         "--tokenizer, --video-tokenizer or --generator")
    return served
