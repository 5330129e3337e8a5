"""The models a web app serves: an image tokenizer, a video tokenizer and a generator, each optional.

Each is named as everywhere in the package (a ``save_pretrained`` folder, an official ``.ckpt``, a released name, a
hub repo id), or ``"demo"`` for the bundled demo model of its kind, or ``"none"`` for no model (its tab is left
out). ``None`` (the ``serve`` default) means the demo model if this installation bundles it, else none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from open_magvit2.checkpoints.hub import DEMO_NAME, demo_model_dir
from open_magvit2.device import pick_device
from open_magvit2.generator import ImageGenerator
from open_magvit2.generator.api import read_class_names
from open_magvit2.precision import set_tf32
from open_magvit2.registry import load_pretrained, model_kind
from open_magvit2.tokenizer import ImageTokenizer, VideoTokenizer

NONE = "none"
_MODEL_TYPES = {"tokenizer": "image_tokenizer", "video_tokenizer": "video_tokenizer", "generator": "image_generator"}
_FLAGS = {  # model_type: (the serve flag, what to pass instead); the class is registry.MODEL_KINDS'
    "image_tokenizer": ("--tokenizer", "pass it to --video-tokenizer or --generator"),
    "video_tokenizer": ("--video-tokenizer", "pass it to --tokenizer or --generator"),
    "image_generator": ("--generator", "pass it to --tokenizer or --video-tokenizer"),
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
    """The generator's class names (:func:`~open_magvit2.generator.api.read_class_names`), else ``class 0``, …"""
    return read_class_names(checkpoint, num_classes) or [f"class {i}" for i in range(num_classes)]


def _load(checkpoint: str | Path, model_type: str, device: torch.device) -> nn.Module:
    cls, (flag, hint) = model_kind(model_type).cls, _FLAGS[model_type]
    model = load_pretrained(checkpoint, device=device)
    if not isinstance(model, cls):
        raise ValueError(f"{flag} {checkpoint}: it holds a {type(model).__name__}, not a {cls.__name__}; {hint}")
    return model.to(device).eval()


def plan_models(tokenizer: str | Path | None = None, video_tokenizer: str | Path | None = None,
                generator: str | Path | None = None) -> dict[str, str | Path]:
    """What :func:`load_models` will load: attribute → checkpoint, reading no weights. ``ValueError`` saying why
    when that is nothing (every model 'none', or left to bundled demo models this installation lacks)."""
    specs = {"tokenizer": tokenizer, "video_tokenizer": video_tokenizer, "generator": generator}
    plan = {attr: checkpoint for attr, spec in specs.items()
            if (checkpoint := resolve(spec, _MODEL_TYPES[attr])) is not None}
    if plan:
        return plan
    off = [_FLAGS[_MODEL_TYPES[attr]][0] for attr, spec in specs.items() if spec is not None]  # the 'none' ones
    if len(off) == len(_FLAGS):
        raise ValueError("no model to serve: --tokenizer, --video-tokenizer and --generator are all 'none'; "
                         "name at least one model (a checkpoint, or demo)")
    unset = [flag for flag, _ in _FLAGS.values() if flag not in off]
    also = f" and {' and '.join(off)} {'is' if len(off) == 1 else 'are'} 'none'" if off else ""
    raise ValueError(f"no model to serve: the bundled demo models are missing from this installation{also}; "
                     f"pass a checkpoint to {' or '.join(unset)}")


def load_models(tokenizer: str | Path | None = None, video_tokenizer: str | Path | None = None,
                generator: str | Path | None = None, device: str | None = None) -> ServedModels:
    """Load the three models (module docstring for what each argument may be) onto ``device`` in float32."""
    plan = plan_models(tokenizer, video_tokenizer, generator)
    dev = pick_device(device)
    set_tf32(False)  # the inference precision policy (precision.py): float32 means float32
    served = ServedModels(device=dev)
    specs = {"tokenizer": tokenizer, "video_tokenizer": video_tokenizer, "generator": generator}
    for attr, checkpoint in plan.items():
        setattr(served, attr, _load(checkpoint, _MODEL_TYPES[attr], dev))
        served.sources[attr] = str(checkpoint)
        if specs[attr] is None or str(specs[attr]) == DEMO_NAME:
            served.demo.add(attr)
    if served.generator is not None:
        served.class_names = class_names(served.sources["generator"], served.generator.config.num_classes)
        if served.generator.tokenizer is None:
            raise ValueError(f"--generator {served.sources['generator']}: a tokens-only checkpoint has no tokenizer "
                             "to draw its samples")
    return served
