"""The models a web app serves: an image tokenizer, a video tokenizer, an image generator and a video generator,
each optional.

Each is named as everywhere in the package (a ``save_pretrained`` folder, an official ``.ckpt``, a released name, a
hub repo id), or ``"demo"`` for the bundled demo model of its kind, or ``"none"`` for no model (its tab is left
out). ``None`` (the ``serve`` default) means the demo model if this installation bundles it, else none; for the
video generator, whose demo model is newer than the others, the page then says so in its tab
(:attr:`ServedModels.video_generator_missing`) instead of leaving the tab out without a word.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from open_magvit2.checkpoints.hub import DEMO_NAME, demo_model_dir
from open_magvit2.device import pick_device
from open_magvit2.generator import ImageGenerator, VideoGenerator
from open_magvit2.generator.api import read_class_names
from open_magvit2.precision import set_tf32
from open_magvit2.registry import load_pretrained, model_kind
from open_magvit2.tokenizer import ImageTokenizer, VideoTokenizer

NONE = "none"
_MODEL_TYPES = {"tokenizer": "image_tokenizer", "video_tokenizer": "video_tokenizer", "generator": "image_generator",
                "video_generator": "video_generator"}
_FLAGS = {  # model_type: the serve flag that takes it; the class is registry.MODEL_KINDS'
    "image_tokenizer": "--tokenizer",
    "video_tokenizer": "--video-tokenizer",
    "image_generator": "--generator",
    "video_generator": "--video-generator",
}
# the video generator tab's text when serve was started without --video-generator and no demo model is bundled
NO_DEMO_VIDEO_GENERATOR = ("This installation has no bundled demo video generator, so there is nothing to generate "
                           "videos with. Start the app with `--video-generator CKPT` (a VideoGenerator checkpoint: a "
                           "`save_pretrained` folder, a released name or a hub repo id) to use this tab.")


@dataclass
class ServedModels:
    """What the app serves; a missing model (None) leaves its tab out. ``sources`` name what was loaded (paths),
    ``demo`` which of them are the bundled demo models; ``class_names`` are the image generator's,
    ``video_class_names`` the video generator's. ``video_generator_missing`` is the text of a video generator tab
    without a model (:data:`NO_DEMO_VIDEO_GENERATOR`), empty when there is a model or the tab was turned off."""

    tokenizer: ImageTokenizer | None = None
    video_tokenizer: VideoTokenizer | None = None
    generator: ImageGenerator | None = None
    video_generator: VideoGenerator | None = None
    class_names: list[str] = field(default_factory=list)
    video_class_names: list[str] = field(default_factory=list)
    video_generator_missing: str = ""
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
    cls, flag = model_kind(model_type).cls, _FLAGS[model_type]
    model = load_pretrained(checkpoint, device=device)
    if not isinstance(model, cls):
        other = _FLAGS.get(getattr(model, "model_type", ""))
        raise ValueError(f"{flag} {checkpoint}: it holds a {type(model).__name__}, not a {cls.__name__}"
                         f"{f'; pass it to {other}' if other else ''}")
    return model.to(device).eval()


def _names(flags: list[str]) -> str:
    return flags[0] if len(flags) == 1 else f"{', '.join(flags[:-1])} and {flags[-1]}"


def plan_models(tokenizer: str | Path | None = None, video_tokenizer: str | Path | None = None,
                generator: str | Path | None = None, video_generator: str | Path | None = None
                ) -> dict[str, str | Path]:
    """What :func:`load_models` will load: attribute → checkpoint, reading no weights. ``ValueError`` saying why
    when that is nothing (every model 'none', or left to bundled demo models this installation lacks)."""
    specs = {"tokenizer": tokenizer, "video_tokenizer": video_tokenizer, "generator": generator,
             "video_generator": video_generator}
    plan = {attr: checkpoint for attr, spec in specs.items()
            if (checkpoint := resolve(spec, _MODEL_TYPES[attr])) is not None}
    if plan:
        return plan
    off = [_FLAGS[_MODEL_TYPES[attr]] for attr, spec in specs.items() if spec is not None]  # the 'none' ones
    if len(off) == len(_FLAGS):
        raise ValueError(f"no model to serve: {_names(off)} are all 'none'; name at least one model (a checkpoint, "
                         "or demo)")
    unset = [flag for flag in _FLAGS.values() if flag not in off]
    also = f" and {' and '.join(off)} {'is' if len(off) == 1 else 'are'} 'none'" if off else ""
    raise ValueError(f"no model to serve: the bundled demo models are missing from this installation{also}; "
                     f"pass a checkpoint to {' or '.join(unset)}")


def load_models(tokenizer: str | Path | None = None, video_tokenizer: str | Path | None = None,
                generator: str | Path | None = None, device: str | None = None, *,
                video_generator: str | Path | None = None) -> ServedModels:
    """Load the four models (module docstring for what each argument may be) onto ``device`` in float32."""
    plan = plan_models(tokenizer, video_tokenizer, generator, video_generator)
    dev = pick_device(device)
    set_tf32(False)  # the inference precision policy (precision.py): float32 means float32
    served = ServedModels(device=dev)
    specs = {"tokenizer": tokenizer, "video_tokenizer": video_tokenizer, "generator": generator,
             "video_generator": video_generator}
    for attr, checkpoint in plan.items():
        setattr(served, attr, _load(checkpoint, _MODEL_TYPES[attr], dev))
        served.sources[attr] = str(checkpoint)
        if specs[attr] is None or str(specs[attr]) == DEMO_NAME:
            served.demo.add(attr)
    for attr, flag, what in (("generator", "--generator", "draw its samples"),
                             ("video_generator", "--video-generator", "decode its clips")):
        gen = getattr(served, attr)
        if gen is not None and gen.tokenizer is None:
            raise ValueError(f"{flag} {served.sources[attr]}: a tokens-only checkpoint has no tokenizer to {what}")
    if served.generator is not None:
        served.class_names = class_names(served.sources["generator"], served.generator.config.num_classes)
    if served.video_generator is not None:
        served.video_class_names = class_names(served.sources["video_generator"],
                                               served.video_generator.config.num_classes)
    elif video_generator is None:  # the default, and no demo model bundled: the tab says so
        served.video_generator_missing = NO_DEMO_VIDEO_GENERATOR
    return served
