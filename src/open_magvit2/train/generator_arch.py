"""The generator architecture a recipe and its data give: the preset with ``model_args``, and the grid, bit split
and number of classes taken from the data where ``model_args`` leaves them unset (a value set there that disagrees
with the data is an error naming both). A bit split with another number of sub-tokens than the preset's spreads
the preset's sampling defaults over them (:func:`~open_magvit2.generator.model.spread_over_sub_tokens`) unless
``model_args`` sets them. A video token set ((t, h, w) grids) gives a :class:`VideoGeneratorConfig` of the preset
with ``frames = t`` (docs/design.md "Video generation").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from open_magvit2.generator import GENERATOR_PRESETS, GeneratorConfig, VideoGeneratorConfig
from open_magvit2.generator.model import SAMPLING_DEFAULTS, spread_over_sub_tokens
from open_magvit2.quantize.codes import _normalize_factorized_bits
from open_magvit2.train.config import with_model_args
from open_magvit2.train.generator_data import TrainData

# the fields that make two generators' weights interchangeable (fine-tuning checks them; video ones also ``frames``)
ARCH_FIELDS = ("dim", "n_layers", "n_intra_layers", "n_heads", "grid_size", "num_classes", "factorized_bits",
               "ffn_dim")
VIDEO_ARCH_FIELDS = (*ARCH_FIELDS, "frames")


WIDE_SUB_TOKEN_BITS = 8  # past 18 bits, the default split uses sub-tokens of this many bits


def _default_split(bits: int, preset: GeneratorConfig, tokenizer_split: tuple[int, ...] | None) -> tuple[int, ...]:
    """The tokenizer's own split, else the preset's when it fits K, else (K // 3, K − K // 3) up to K = 18 ((6, 12)
    for 18), and past 18 bits sub-tokens of 8 bits, LSB first, the last one shorter if 8 does not divide K ((8, 8, 8,
    8) for 32; a two-way split would need a 2^22-row head and embedding at K = 32)."""
    if tokenizer_split is not None:
        return tokenizer_split
    if preset.bits == bits:
        return preset.factorized_bits
    if bits <= 18:
        return bits // 3, bits - bits // 3
    g = WIDE_SUB_TOKEN_BITS
    return (g,) * (bits // g) + ((bits % g,) if bits % g else ())


def resolve_generator_config(model: str, model_args: Mapping[str, Any], data: TrainData) -> GeneratorConfig:
    """The preset ``model`` with ``model_args``, and the grid, bit split and classes taken from the data: a
    :class:`GeneratorConfig` for (h, w) grids, a :class:`VideoGeneratorConfig` with ``frames = t`` for (t, h, w)."""
    if model not in GENERATOR_PRESETS:
        raise ValueError(f"unknown generator preset model={model!r}; choose one of {sorted(GENERATOR_PRESETS)}")
    preset, args = GENERATOR_PRESETS[model], dict(model_args)
    *frames, h, w = data.grid
    what, rope = ("clip", "(t, h, w)") if frames else ("image", "2D")
    if h != w:
        raise ValueError(f"the data has a {h}×{w} token grid; the generator's {rope} RoPE needs a square grid")
    if h < 2:
        raise ValueError(f"the data has a {h}×{w} token grid, too small to generate; tokenize larger {what}s "
                         "(tokenize-dataset --size at least 2 × the tokenizer's downsampling factor)")
    if frames:
        (t,) = frames
        if "frames" in args and int(args["frames"]) != t:
            raise ValueError(f"model_args.frames={args['frames']} but the data's clips have {t} latent frames "
                             f"({t}×{h}×{w} token grids)")
        args["frames"] = t
        preset = VideoGeneratorConfig.from_dict({**preset.to_dict(), "frames": t})
    elif "frames" in args:
        raise ValueError(f"model_args.frames is for video generators, but the data is an image token set ({h}×{w} "
                         "token grids); drop it, or give a token set made by a video tokenizer")
    if "grid_size" in args and int(args["grid_size"]) != h:
        raise ValueError(f"model_args.grid_size={args['grid_size']} but the data has a {h}×{w} token grid"
                         + (f" per frame ({frames[0]}×{h}×{w} per clip)" if frames else ""))
    args.setdefault("grid_size", h)
    if "factorized_bits" in args:
        bits = _normalize_factorized_bits(args["factorized_bits"])
        if sum(bits) != data.bits:
            raise ValueError(f"model_args.factorized_bits={list(bits)} sums to {sum(bits)} but the data's tokens "
                             f"have {data.bits} bits; the sub-token bits must add up to the tokenizer's")
    args.setdefault("factorized_bits", _default_split(data.bits, preset, data.split))
    m = len(args["factorized_bits"])
    for name in SAMPLING_DEFAULTS:
        if name not in args and m != preset.sub_tokens:
            args[name] = spread_over_sub_tokens(getattr(preset, name), m)
    if "num_classes" in args and data.num_classes is not None and int(args["num_classes"]) != data.num_classes:
        raise ValueError(f"model_args.num_classes={args['num_classes']} but the data has {data.num_classes} classes")
    if "num_classes" not in args:
        if data.num_classes is None:
            raise ValueError("the data does not say how many classes it has; set model_args.num_classes")
        args["num_classes"] = data.num_classes
    return with_model_args(preset, args)

