"""``ImageGenerator``: the AR transformer with the tokenizer that decodes its tokens (docs/design.md O-30, O-44).

>>> gen = ImageGenerator.from_pretrained("AR_256_B.ckpt")       # official file: transformer + its own first stage
>>> idx = gen.generate(torch.tensor([207, 360]))                 # (2, 16, 16) int64 full LFQ indices
>>> img = gen.sample_images(torch.tensor([207]))                 # (1, 3, 256, 256) in [-1, 1]
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from open_magvit2.checkpoints.hub import save_pretrained_dir
from open_magvit2.checkpoints.loading import Checkpoint, build_and_load, check_model_type, open_checkpoint
from open_magvit2.checkpoints.official import tokenizer_weights
from open_magvit2.generator.model import (
    GENERATOR_PRESETS,
    SAMPLING_DEFAULTS,
    GeneratorConfig,
    VideoGeneratorConfig,
    check_labels,
    spread_over_sub_tokens,
    swiglu_hidden,
    transformer_for,
)
from open_magvit2.generator.sampling import generate_tokens
from open_magvit2.quantize import factorize_indices, unfactorize_indices
from open_magvit2.tokenizer import ImageTokenizer, TokenizerConfig
from open_magvit2.tokenizer.config import infer_tokenizer_config
from open_magvit2.tokenizer.model import Tokenizer

Device = str | torch.device | None
DType = str | torch.dtype | None

TRANSFORMER_PREFIX = "transformer."
FIRST_STAGE_PREFIX = "first_stage_model."


class TokenGenerator(nn.Module):
    """What the image and the video generator share: ``.transformer`` (a :class:`GeneratorTransformer`, the
    video one for a video config) predicts LFQ tokens, ``.tokenizer`` (or None for a tokens-only model) decodes
    them; token checks, teacher-forced logits, sampling, decoding and ``save_pretrained``/``from_pretrained``.
    The subclasses set the model type, the config and tokenizer classes and their own ``generate``."""

    model_type: ClassVar[str]
    config_class: ClassVar[type[GeneratorConfig]]
    tokenizer_class: ClassVar[type[Tokenizer]]

    def __init__(self, *, config: GeneratorConfig, tokenizer_config: TokenizerConfig | None = None) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        if tokenizer_config is not None and tokenizer_config.z_channels != config.bits:
            raise ValueError(
                f"the tokenizer has {tokenizer_config.z_channels} bits but factorized_bits {config.factorized_bits} "
                f"sum to {config.bits}; they must match"
            )
        self.config = config
        self.transformer = transformer_for(config)
        self.tokenizer = None if tokenizer_config is None else self.tokenizer_class(tokenizer_config)

    @property
    def grid(self) -> tuple[int, ...]:
        """Tokens per sample: (h, w) for images, (t, h, w) for video."""
        return (self.config.grid_size,) * 2

    # ---- tokens ---------------------------------------------------------------------------------------------
    def _split(self, indices: Tensor) -> tuple[Tensor, ...]:
        """Full indices (B, N) or (B, *grid) → the M sub-tokens, each (B, N), with input checks."""
        c, grid = self.config, self.grid
        shape = f"(B, {c.seq_len}) or (B, {', '.join(map(str, grid))})"
        if not isinstance(indices, Tensor) or indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise ValueError(f"indices must be an integer tensor of full LFQ indices, {shape}")
        if indices.dim() == 1 + len(grid) and indices.dim() > 2:
            if tuple(indices.shape[1:]) != grid:
                raise ValueError(f"indices must be {shape}, got {tuple(indices.shape)}")
            indices = indices.flatten(1)
        if indices.dim() != 2 or indices.shape[1] != c.seq_len:
            raise ValueError(f"indices must be {shape}, got {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= 2**c.bits):
            raise ValueError(
                f"indices must lie in [0, 2^{c.bits}); got [{int(indices.min())}, {int(indices.max())}]. Pass full LFQ "
                "indices (s_1 + 2^k1·s_2 + …), not sub-tokens, from a tokenizer with the same number of bits"
            )
        return factorize_indices(indices.long(), c.factorized_bits)

    def logits(self, indices: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
        """Teacher-forced logits of full indices: one (B, N, 2^k_i) tensor per sub-token, in order
        (``(logits_pre, logits_post)`` for the released models).

        No dropout and no label drop in eval mode; in train mode the training regularisation applies.
        """
        tokens = self._split(indices)
        check_labels(labels, self.config.num_classes)
        if labels.shape[0] != tokens[0].shape[0]:
            raise ValueError(f"got {labels.shape[0]} labels for {tokens[0].shape[0]} token sequences")
        device = self.transformer.pre_emb.weight.device
        return self.transformer(*(t.to(device) for t in tokens), labels.to(device))

    def _sample(
        self,
        labels: Tensor,
        prefix: Tensor | None,
        cfg_scale: float | tuple[float, ...] | None,
        temperature: float | tuple[float, ...] | None,
        top_k: int | tuple[int, ...] | None,
        top_p: float | tuple[float, ...] | None,
        generator: torch.Generator | None,
        progress: bool,
        compile: bool | dict[str, Any],
    ) -> Tensor:
        """Full indices (B, *grid) int64; ``prefix``: the first P full indices (B, P), given, not sampled."""
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}; for a seed "
                            "pass generator=torch.Generator(device).manual_seed(seed)")
        c = self.config
        out = generate_tokens(
            self.transformer,
            labels,
            cfg_scale=c.sample_cfg_scale if cfg_scale is None else cfg_scale,
            temperature=c.sample_temperature if temperature is None else temperature,
            top_k=c.sample_top_k if top_k is None else top_k,
            top_p=c.sample_top_p if top_p is None else top_p,
            generator=generator,
            progress=progress,
            compile=compile,
            prefix=None if prefix is None else factorize_indices(prefix, c.factorized_bits),
        )
        return unfactorize_indices(out.tokens, c.factorized_bits).view(-1, *self.grid)

    @torch.no_grad()
    def decode(self, indices: Tensor) -> Tensor:
        """Full indices (B, *grid) → pixels clamped to [−1, 1] through this model's own tokenizer: images
        (B, 3, H, W), or clips (B, 3, T, H, W) for video."""
        if self.tokenizer is None:
            raise ValueError("this generator has no tokenizer (tokens-only checkpoint); decode the indices with one")
        return self.tokenizer.decode(indices).clamp(-1.0, 1.0)

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors``; reload with :meth:`from_pretrained`."""
        tok = None if self.tokenizer is None else self.tokenizer.config.to_dict()
        config = {"generator": self.config.to_dict(), "tokenizer": tok}
        return save_pretrained_dir(directory, self.model_type, config, self.state_dict())

    @classmethod
    def from_weights(
        cls: type[G],
        config: GeneratorConfig,
        tokenizer_config: TokenizerConfig | None,
        state_dict: Mapping[str, Tensor],
        *,
        device: Device = None,
        dtype: DType = None,
        release_source: bool = False,
    ) -> G:
        """Build on the meta device and load ``state_dict`` (our key names) strictly, straight onto ``device``
        (default CPU) in ``dtype`` (default float32); the RoPE table stays float32 (``precision.py``)."""
        return build_and_load(
            lambda: cls(config=config, tokenizer_config=tokenizer_config), state_dict, device=device, dtype=dtype,
            what=cls.__name__, release_source=release_source,
        )

    @classmethod
    def from_pretrained(
        cls: type[G], path_or_id: str | Path, revision: str | None = None, *, device: Device = None,
        dtype: DType = None, **overrides: Any,
    ) -> G:
        """Load a ``save_pretrained`` directory, ``"demo"`` (the bundled demo model), a released name, a Hugging
        Face repo id or (image generator) an official AR ``.ckpt``, strictly, straight onto ``device`` in ``dtype``
        (no float32 copy on the host first).

        For an official file the architecture is read from the tensor shapes; ``head_dim`` (default 64) and
        ``grid_size`` (default 16) cannot be, so pass them if yours differ. Other ``GeneratorConfig`` fields can be
        overridden too (e.g. ``sample_cfg_scale``). Its ``first_stage_model`` (raw weights) becomes ``.tokenizer``.
        """
        checkpoint = open_checkpoint(path_or_id, revision, model_type=cls.model_type)
        return cls.from_checkpoint(checkpoint, device=device, dtype=dtype, **overrides)

    @classmethod
    def from_checkpoint(
        cls: type[G], checkpoint: Checkpoint, *, device: Device = None, dtype: DType = None, **overrides: Any
    ) -> G:
        """:meth:`from_pretrained` for an already opened :class:`~open_magvit2.checkpoints.loading.Checkpoint`."""
        check_model_type(checkpoint, (cls.model_type,), cls.__name__)
        place = dict(device=device, dtype=dtype, release_source=checkpoint.file_backed)
        if checkpoint.config is None:
            return cls.from_official_state_dict(checkpoint.state_dict, **place, **overrides)
        cfg = checkpoint.config
        config = cls.config_class.from_dict({**cfg["generator"], **overrides})
        tok = None if cfg.get("tokenizer") is None else TokenizerConfig.from_dict(cfg["tokenizer"])
        return cls.from_weights(config, tok, checkpoint.state_dict, **place)

    @classmethod
    def from_official_state_dict(cls: type[G], state_dict: Mapping[str, Tensor], **kwargs: Any) -> G:
        """Official AR checkpoints hold image generators only (:meth:`ImageGenerator.from_official_state_dict`)."""
        raise ValueError(f"official AR checkpoints hold image generators; a {cls.__name__} loads from a "
                         "save_pretrained folder")


G = TypeVar("G", bound=TokenGenerator)


class ImageGenerator(TokenGenerator):
    """Class-conditional image generator: ``.transformer`` (a :class:`GeneratorTransformer`) predicts LFQ tokens,
    ``.tokenizer`` (an :class:`ImageTokenizer`, or None for a tokens-only model) decodes them.

    Tokens are full LFQ indices, int64 (B, h, w) with h = w = ``config.grid_size``, in [0, 2^K); labels are int64
    (B,) in [0, num_classes], where ``num_classes`` is the null (unconditional) class.
    """

    model_type: ClassVar[str] = "image_generator"
    config_class: ClassVar[type[GeneratorConfig]] = GeneratorConfig
    tokenizer_class: ClassVar[type[Tokenizer]] = ImageTokenizer

    def __init__(self, *, config: GeneratorConfig, tokenizer_config: TokenizerConfig | None = None) -> None:
        if isinstance(config, VideoGeneratorConfig):
            raise TypeError("a VideoGeneratorConfig makes a VideoGenerator, not an ImageGenerator")
        super().__init__(config=config, tokenizer_config=tokenizer_config)

    def generate(
        self,
        labels: Tensor,
        cfg_scale: float | tuple[float, ...] | None = None,
        temperature: float | tuple[float, ...] | None = None,
        top_k: int | tuple[int, ...] | None = None,
        top_p: float | tuple[float, ...] | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        compile: bool | dict[str, Any] = False,
    ) -> Tensor:
        """Sample full LFQ indices (B, h, w) int64 for labels (B,).

        Every setting is one number for all sub-tokens or one value per sub-token (a (pre, post) pair for the
        released models); None takes the model's default (``config.sample_cfg_scale`` / ``sample_temperature`` /
        ``sample_top_k`` / ``sample_top_p``; docs/design.md O-31; top-k and top-p are off unless the config says
        otherwise). A scale ≤ 1 means no guidance for that sub-token (1.0 included). ``top_k=0`` / ``top_p=1.0`` are
        off; ``top_k=1`` is greedy.
        ``generator``: a seeded ``torch.Generator``, best on the model's device (one on another device works and
        gives the same tokens everywhere, but syncs per draw). ``compile=True`` compiles the decode step once
        (``torch.compile``; CUDA graphs on a GPU), see :func:`~open_magvit2.generator.sampling.generate_tokens`.
        """
        return self._sample(labels, None, cfg_scale, temperature, top_k, top_p, generator, progress, compile)

    def sample_images(self, labels: Tensor, **sampling: Any) -> Tensor:
        """``generate`` then ``decode``: images (B, 3, H, W) in [−1, 1]. Keyword arguments go to ``generate``."""
        if self.tokenizer is None:
            raise ValueError("this generator has no tokenizer (tokens-only checkpoint); use generate() instead")
        return self.decode(self.generate(labels, **sampling))

    @classmethod
    def from_official_state_dict(
        cls, state_dict: Mapping[str, Tensor], *, device: Device = None, dtype: DType = None,
        release_source: bool = False, **overrides: Any,
    ) -> ImageGenerator:
        """An official ``Net2NetTransformer`` state dict (``transformer.*``, ``first_stage_model.*``) → model."""
        others = sorted(k for k in state_dict if not k.startswith((TRANSFORMER_PREFIX, FIRST_STAGE_PREFIX)))
        if others:
            raise ValueError(
                f"unexpected keys in the AR checkpoint (expected transformer.* and first_stage_model.*): {others[:8]}"
            )
        tsd = {k[len(TRANSFORMER_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(TRANSFORMER_PREFIX)}
        config = infer_generator_config(tsd, **overrides)
        weights = {TRANSFORMER_PREFIX + k: v for k, v in tsd.items()}
        tok_config = None
        if any(k.startswith(FIRST_STAGE_PREFIX) for k in state_dict):  # raw first stage (docs/design.md O-44)
            tw = tokenizer_weights(state_dict, weights="raw", prefix=FIRST_STAGE_PREFIX)
            tok_config = infer_tokenizer_config(tw, factorized_bits=config.factorized_bits)
            weights.update({"tokenizer." + k: v for k, v in tw.items()})
        return cls.from_weights(
            config, tok_config, weights, device=device, dtype=dtype, release_source=release_source
        )


CLASSES_NAME = "classes.json"  # class names: of a token set, a training run and an exported generator folder


def read_class_names(checkpoint: str | Path | None, num_classes: int) -> list[str] | None:
    """The class names a generator's folder records: ``classes.json``, a JSON list with the name of label i at i.
    None when the checkpoint is not a folder or has no such file, and, with a warning on stderr, when the file does
    not hold ``num_classes`` names; ``ValueError`` when it is not JSON."""
    path = Path(checkpoint) / CLASSES_NAME if checkpoint is not None and Path(checkpoint).is_dir() else None
    if path is None or not path.is_file():
        return None
    try:
        names = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a JSON list of class names ({e})") from None
    if isinstance(names, list) and len(names) == num_classes:
        return [str(n) for n in names]
    print(f"warning: {path} does not hold {num_classes} class names; numbering the classes instead", file=sys.stderr)
    return None


def _count_blocks(sd: Mapping[str, Tensor], name: str) -> int:
    ids = {int(m.group(1)) for k in sd if (m := re.match(rf"{name}\.(\d+)\.", k))}
    if ids != set(range(len(ids))):
        raise ValueError(f"{name}.* block numbers are not contiguous from 0: {sorted(ids)}")
    return len(ids)


def _bits(rows: int, what: str) -> int:
    k = rows.bit_length() - 1
    if k < 1 or 2**k != rows:
        raise ValueError(f"{what} has {rows} rows, not a power of two: not a factorised Open-MAGVIT2 AR model")
    return k


def infer_generator_config(
    tsd: Mapping[str, Tensor], *, head_dim: int = 64, grid_size: int = 16, **overrides: Any
) -> GeneratorConfig:
    """Architecture of ``transformer.*`` weights (prefix removed) from their shapes (docs/design.md O-32).

    head_dim and grid size leave no trace in the weights (RoPE is not stored); the official models use 64 and 16.
    The sub-tokens are ``pre_emb``, ``mid_emb.*`` and ``post_emb`` (any of the last two may be absent: M = 1, 2).
    Sampling defaults come from the matching official preset (B/L/XL, docs/design.md O-31) when the sizes match one.
    """
    try:
        dim = tsd["pre_emb.weight"].shape[1]
        embs = ["pre_emb", *(f"mid_emb.{j}" for j in range(_count_blocks(tsd, "mid_emb"))), "post_emb"]
        fields: dict[str, Any] = dict(
            dim=dim,
            n_layers=_count_blocks(tsd, "spatial_blocks"),
            n_intra_layers=_count_blocks(tsd, "factorized_blocks"),
            factorized_bits=tuple(_bits(tsd[f"{e}.weight"].shape[0], e) for e in embs if f"{e}.weight" in tsd),
            num_classes=tsd["class_emb.embedding_table.weight"].shape[0] - 1,
        )
        hidden = tsd["spatial_blocks.0.feed_forward.w1.weight"].shape[0]
    except KeyError as e:
        raise ValueError(f"cannot infer the generator architecture: key transformer.{e.args[0]} is missing") from None
    if dim % head_dim:
        raise ValueError(f"model width {dim} is not a multiple of head_dim={head_dim}; pass head_dim=...")
    fields.update(n_heads=dim // head_dim, grid_size=grid_size)
    if hidden != swiglu_hidden(dim):  # not the official SwiGLU width rule
        fields["ffn_hidden"] = hidden
    for preset in (GENERATOR_PRESETS[n] for n in ("B", "L", "XL")):
        if (preset.dim, preset.n_layers, preset.n_intra_layers) == (dim, fields["n_layers"], fields["n_intra_layers"]):
            m = len(fields["factorized_bits"])
            fields.update({name: spread_over_sub_tokens(getattr(preset, name), m) for name in SAMPLING_DEFAULTS})
    fields.update(overrides)
    return GeneratorConfig.from_dict(fields)
