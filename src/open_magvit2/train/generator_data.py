"""What the generator trainer reads: tokens, from shards or encoded on the fly, and the facts about them that the
architecture depends on (``generator_arch.py`` turns them into a ``GeneratorConfig``).

* **Token shards** (``--data TOKENS_DIR`` from ``tokenize-dataset``): the tokenizer never runs in the loop. A
  video token set ((t, h, w) grids of clips, made with a video tokenizer) trains a video generator; its
  ``VideoTokenizer`` decodes the sample grids.
* **On the fly** (``data.tokenizer`` set; ``--data`` an image folder or WebDataset shards): each batch of images
  is encoded by the frozen tokenizer, as the official loop does (docs/design.md O-30; random crops, O-45). Kept
  for parity; it costs a tokenizer forward per image per step (``benchmarks/bench_train_generator.py``).

"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from open_magvit2.data.pretokenize import load_image_tokenizer, weights_sha256
from open_magvit2.data.stream import BatchStream
from open_magvit2.data.tokens import INDEX_NAME, TokenShards, build_token_stream, read_index, token_set_tokenizer
from open_magvit2.distributed import DistContext
from open_magvit2.tokenizer import ImageTokenizer, VideoTokenizer


@dataclass
class TrainData:
    """The token stream of this rank and the facts the architecture depends on."""

    stream: BatchStream
    grid: tuple[int, ...]  # tokens per sample: (h, w) for images, (t, h, w) for video clips
    bits: int  # K: full tokens lie in [0, 2^K)
    num_classes: int | None  # None: the data cannot tell (WebDataset shards encoded on the fly)
    split: tuple[int, int] | None  # the tokenizer's own (k1, k2), when it has one
    tokenizer: ImageTokenizer | VideoTokenizer | None  # decodes sample grids; encodes batches when ``on_the_fly``
    tokenizer_info: dict[str, Any] | None  # what made the tokens: source, weights, config, sha256
    on_the_fly: bool

    def next_batch(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The next micro-batch: (full LFQ indices int64 (B, h, w), or (B, t, h, w) for video, labels int64 (B,)),
        on ``device``."""
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
        info = read_index(data).get("tokenizer")
        if info is not None and tok_dir is None:
            raise FileNotFoundError(f"--data {data}: the token set's tokenizer folder is missing; the generator needs "
                                    "it to draw its samples and to export. Restore it, or make the token set again")
        tokenizer_class = VideoTokenizer if len(shards.grid) == 3 else ImageTokenizer  # (t, h, w): a video set
        tokenizer = None if tok_dir is None else tokenizer_class.from_pretrained(tok_dir).to(ctx.device)
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
