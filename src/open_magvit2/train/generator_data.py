"""What the generator trainer reads: tokens (from shards, or encoded on the fly), the architecture they imply,
and the weights a fine-tuning run starts from.

* **Token shards** (``--data TOKENS_DIR`` from ``tokenize-dataset``): the tokenizer never runs in the loop.
* **On the fly** (``data.tokenizer`` set; ``--data`` an image folder or WebDataset shards): each batch of images
  is encoded by the frozen tokenizer, as the official loop does (spec §5.1; random crops, spec §6.1). Kept for
  parity; it costs a tokenizer forward per image per step (``benchmarks/bench_train_generator.py``).

The token grid, the bit split and the number of classes come from the data where the recipe's ``model_args``
leave them unset; a value set there that disagrees is an error naming both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from open_magvit2.data.stream import BatchStream
from open_magvit2.data.tokens import INDEX_NAME, TokenShards, build_token_stream, read_index
from open_magvit2.distributed import DistContext
from open_magvit2.generator import GENERATOR_PRESETS, GeneratorConfig, ImageGenerator
from open_magvit2.tokenizer import ImageTokenizer
from open_magvit2.train.checkpoint import META_NAME, STATE_NAME, list_checkpoints, read_meta, read_state_file
from open_magvit2.train.pretokenize import load_image_tokenizer, token_set_tokenizer, weights_sha256

ARCH_FIELDS = ("dim", "n_layers", "n_intra_layers", "n_heads", "grid_size", "num_classes", "factorized_bits",
               "ffn_dim")


@dataclass
class TrainData:
    """The token stream of this rank and the facts the architecture depends on."""

    stream: BatchStream
    grid: tuple[int, int]  # tokens per image, (h, w)
    bits: int  # K: full tokens lie in [0, 2^K)
    num_classes: int | None  # None: the data cannot tell (WebDataset shards encoded on the fly)
    split: tuple[int, int] | None  # the tokenizer's own (k1, k2), when it has one
    tokenizer: ImageTokenizer | None  # decodes sample grids; encodes batches when ``on_the_fly``
    tokenizer_info: dict[str, Any] | None  # what made the tokens: source, weights, config, sha256
    on_the_fly: bool

    def next_batch(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The next micro-batch: (full LFQ indices int64 (B, h, w), labels int64 (B,)), on ``device``."""
        batch = next(self.stream)
        labels = batch["label"].to(device, non_blocking=True)
        if not self.on_the_fly:
            return batch["tokens"].to(device, non_blocking=True), labels
        with torch.no_grad():  # float32, outside autocast: the same indices tokenize-dataset would write
            return self.tokenizer.encode(batch["image"].to(device, non_blocking=True)), labels


def open_train_data(data: str | Path, dcfg: Any, ctx: DistContext, seed: int) -> TrainData:
    """Token shards when ``data.tokenizer`` is unset, else images encoded on the fly (module docstring)."""
    split = dict(batch_size=dcfg.batch_size, rank=ctx.rank, world_size=ctx.world_size, seed=seed,
                 num_workers=dcfg.num_workers, pin_memory=ctx.device.type == "cuda")
    if dcfg.tokenizer is None:
        if not (Path(data) / INDEX_NAME).is_file():
            raise FileNotFoundError(
                f"--data {data}: not a token set (no {INDEX_NAME}); make one with `open-magvit2 tokenize-dataset`, "
                "or set data.tokenizer in the recipe to encode images on the fly")
        shards = TokenShards(data)
        tok_dir = token_set_tokenizer(data)
        tokenizer = None if tok_dir is None else ImageTokenizer.from_pretrained(tok_dir).to(ctx.device)
        info = read_index(data).get("tokenizer")
        split_bits = (info or {}).get("config", {}).get("factorized_bits")
        return TrainData(build_token_stream(data, **split), shards.grid, shards.bits, shards.num_classes,
                         None if split_bits is None else tuple(split_bits), tokenizer, info, on_the_fly=False)
    from open_magvit2.data.images import build_image_stream

    tokenizer, which = load_image_tokenizer(dcfg.tokenizer, dcfg.tokenizer_weights)
    f = tokenizer.config.spatial_factor
    if dcfg.size % f:
        raise ValueError(f"data.size {dcfg.size} must be a multiple of {f}, the tokenizer's downsampling factor")
    stream = build_image_stream(data, size=dcfg.size, random_crop=dcfg.random_crop, flip=dcfg.flip, **split)
    info = {"source": dcfg.tokenizer, "weights": which, "model_type": tokenizer.model_type,
            "config": tokenizer.config.to_dict(), "sha256": weights_sha256(tokenizer)}
    names = stream.class_names
    split_bits = tokenizer.config.factorized_bits
    return TrainData(stream, (dcfg.size // f,) * 2, tokenizer.config.z_channels, None if names is None else len(names),
                     None if split_bits is None else tuple(split_bits), tokenizer.to(ctx.device), info,
                     on_the_fly=True)


def _default_split(bits: int, preset: GeneratorConfig, tokenizer_split: tuple[int, int] | None) -> tuple[int, int]:
    """The tokenizer's own split, else the preset's when it fits K, else (K // 3, K − K // 3): (6, 12) for 18."""
    if tokenizer_split is not None and len(tokenizer_split) == 2:
        return tokenizer_split
    if preset.bits == bits:
        return preset.factorized_bits
    return bits // 3, bits - bits // 3


def resolve_generator_config(model: str, model_args: Mapping[str, Any], data: TrainData) -> GeneratorConfig:
    """The preset ``model`` with ``model_args``, and the grid, bit split and classes taken from the data."""
    if model not in GENERATOR_PRESETS:
        raise ValueError(f"unknown generator preset model={model!r}; choose one of {sorted(GENERATOR_PRESETS)}")
    preset, args = GENERATOR_PRESETS[model], dict(model_args)
    h, w = data.grid
    if h != w:
        raise ValueError(f"the data has a {h}×{w} token grid; the generator's 2D RoPE needs a square grid")
    if "grid_size" in args and int(args["grid_size"]) != h:
        raise ValueError(f"model_args.grid_size={args['grid_size']} but the data has a {h}×{w} token grid")
    args.setdefault("grid_size", h)
    if "factorized_bits" in args and sum(args["factorized_bits"]) != data.bits:
        raise ValueError(f"model_args.factorized_bits={list(args['factorized_bits'])} sums to "
                         f"{sum(args['factorized_bits'])} but the data's tokens have {data.bits} bits")
    args.setdefault("factorized_bits", _default_split(data.bits, preset, data.split))
    if "num_classes" in args and data.num_classes is not None and int(args["num_classes"]) != data.num_classes:
        raise ValueError(f"model_args.num_classes={args['num_classes']} but the data has {data.num_classes} classes")
    if "num_classes" not in args:
        if data.num_classes is None:
            raise ValueError("the data does not say how many classes it has; set model_args.num_classes")
        args["num_classes"] = data.num_classes
    try:
        return dataclasses.replace(preset, **args)
    except TypeError as e:
        names = [f.name for f in dataclasses.fields(GeneratorConfig) if f.init]
        raise ValueError(f"model_args: {e}; the allowed keys are {', '.join(names)}") from None


def _run_checkpoint(path: Path) -> Path | None:
    if (path / META_NAME).is_file():
        return path
    found = list_checkpoints(path / "checkpoints")
    return found[-1] if found else None


def checkpoint_weights(ckpt: Path, state: Mapping[str, Any], weights: str) -> tuple[dict[str, Tensor], str]:
    """(transformer state dict, "ema" or "raw") of a generator run checkpoint; sharded ones are gathered."""
    if weights == "ema" and state.get("ema") is not None:
        return dict(state["ema"]), "ema"
    if state.get("sharded"):
        from open_magvit2.train.fsdp import gather_shards

        return gather_shards(ckpt, read_meta(ckpt)["world_size"]), "raw"
    return dict(state["model"]), "raw"


def load_generator_init(init: Any, config: GeneratorConfig) -> dict[str, Tensor] | None:
    """The recipe's ``init`` → transformer weights (None: start from the official initialisation).

    ``init.checkpoint``: an official AR ``.ckpt`` (its ``transformer.*``), a ``save_pretrained`` generator folder,
    or a generator run (its newest checkpoint) / run checkpoint. The architecture must match ``config``.
    """
    if init.inflate_from:
        raise ValueError("init.inflate_from is for video tokenizers; a generator starts from init.checkpoint")
    if not init.checkpoint:
        return None
    path = Path(init.checkpoint).expanduser()
    ckpt = _run_checkpoint(path) if path.is_dir() else None
    if ckpt is not None:
        state = read_state_file(ckpt / STATE_NAME)
        if state.get("kind") != "generator":
            raise ValueError(f"init.checkpoint {ckpt} is a {state.get('kind')} run checkpoint, not a generator one")
        found = GeneratorConfig.from_dict(state["generator_config"])
        sd = checkpoint_weights(ckpt, state, init.weights)[0]
    else:
        gen = ImageGenerator.from_pretrained(path if path.exists() else str(init.checkpoint))  # or demo, a name
        found, sd = gen.config, gen.transformer.state_dict()
    diff = [f for f in ARCH_FIELDS if getattr(found, f) != getattr(config, f)]
    if diff:
        said = ", ".join(f"{f}={getattr(found, f)} vs {getattr(config, f)}" for f in diff)
        raise ValueError(f"init.checkpoint {init.checkpoint} has another architecture than the recipe and data "
                         f"give ({said}); pick the matching preset, or set model_args")
    return sd
