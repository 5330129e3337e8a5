"""The assembled tokenizers: encoder → LFQ → decoder, with checkpoint loading (spec §1.6, §0.2).

:class:`Tokenizer` holds everything; :class:`ImageTokenizer` is its 2D form, and the video tokenizer
(``tokenizer/video.py``) its causal-3D form. State-dict keys are exactly the official ``encoder.*`` /
``decoder.*`` names; the quantiser has no state (spec §0.3).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from open_magvit2.checkpoints.hub import load_pretrained_dir, resolve_pretrained, save_pretrained_dir
from open_magvit2.checkpoints.official import (
    infer_tokenizer_config,
    load_official_state_dict,
    load_strict,
    tokenizer_weights,
)
from open_magvit2.quantize import LFQ, LFQOutput, indices_to_codes
from open_magvit2.tokenizer.config import TokenizerConfig
from open_magvit2.tokenizer.decoder import Decoder
from open_magvit2.tokenizer.encoder import Encoder


class TokenizerOutput(NamedTuple):
    """``forward`` result: the decoder output (unclamped) and everything the quantiser computed."""

    reconstruction: Tensor
    quantizer: LFQOutput


class Tokenizer(nn.Module):
    """Encoder, lookup-free quantiser and decoder of Open-MAGVIT2, for any ``config.dims``.

    Inputs are float tensors in [−1, 1]: (B, C, H, W) for ``dims=2``, (B, C, T, H, W) for ``dims=3``.
    Indices are int64 (B, h, w) / (B, t, h, w), LSB-first (spec §2.2).
    """

    model_type: ClassVar[str] = "tokenizer"
    dims: ClassVar[int | None] = None

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        if self.dims is not None and config.dims != self.dims:
            raise ValueError(f"{type(self).__name__} needs a config with dims={self.dims}, got dims={config.dims}")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = LFQ(bits=config.z_channels, factorized_bits=config.factorized_bits)

    # ---- input checks ---------------------------------------------------------------------------------------
    def _check_frames(self, t: int) -> None:
        """Video tokenizers override this with their frame-count rule."""

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless x is a float batch with the right channels and a multiple of the factor."""
        c = self.config
        layout = "(B, C, H, W)" if c.dims == 2 else "(B, C, T, H, W)"
        if not isinstance(x, Tensor):
            raise TypeError(f"expected a torch.Tensor {layout}, got {type(x).__name__}")
        if x.dim() != c.dims + 2:
            raise ValueError(f"expected a {c.dims + 2}-D tensor {layout}, got shape {tuple(x.shape)}")
        if not x.dtype.is_floating_point:
            raise ValueError(f"expected a float tensor in [-1, 1], got {x.dtype}; convert uint8 with x / 127.5 - 1")
        if x.shape[1] != c.in_channels:
            raise ValueError(f"expected {c.in_channels} channels (RGB) at dim 1 {layout}, got {x.shape[1]}")
        h, w = x.shape[-2:]
        f = c.spatial_factor
        if h % f or w % f:
            raise ValueError(
                f"H and W must be multiples of {f} (the downsampling factor), got {h}×{w}; resize or crop, or pad "
                "with open_magvit2.imaging.pad_to_multiple"
            )
        if c.dims == 3:
            self._check_frames(x.shape[2])

    # ---- the API --------------------------------------------------------------------------------------------
    def encode_latent(self, x: Tensor) -> Tensor:
        """Continuous encoder output z (B, K, *latent): the LFQ logits before quantisation."""
        self.check_input(x)
        return self.encoder(x)

    def encode(self, x: Tensor) -> Tensor:
        """Images/clips in [−1, 1] → int64 indices (B, *latent)."""
        return self.quantize(self.encode_latent(x)).indices

    def decode_codes(self, codes: Tensor) -> Tensor:
        """±1 code maps (B, K, *latent) → decoder output (B, C, *pixels), not clamped."""
        k = self.config.z_channels
        if codes.dim() != self.config.dims + 2 or codes.shape[1] != k:
            raise ValueError(
                f"codes must be (B, {k}, *latent) with {self.config.dims} latent dims, got {tuple(codes.shape)}"
            )
        if not codes.dtype.is_floating_point:
            raise ValueError(f"codes must be a float tensor of ±1, got {codes.dtype}")
        return self.decoder(codes)

    def decode(self, indices: Tensor) -> Tensor:
        """int64 indices (B, *latent) → decoder output (B, C, *pixels), not clamped."""
        if indices.dim() != self.config.dims + 1:
            raise ValueError(
                f"indices must be (B, *latent) with {self.config.dims} latent dims, got {tuple(indices.shape)}"
            )
        dtype = next(self.parameters()).dtype
        return self.decode_codes(
            indices_to_codes(indices.to(next(self.parameters()).device), self.config.z_channels, dtype)
        )

    def forward(self, x: Tensor, *, sync_codebook: bool = False) -> TokenizerOutput:
        """Training/inspection pass: reconstruction through the straight-through codes, and the LFQ output.

        ``sync_codebook=True`` (the training step, on every rank) averages the LFQ codebook distribution over ranks;
        see :meth:`open_magvit2.quantize.LFQ.forward`.
        """
        q = self.quantize(self.encode_latent(x), sync_codebook=sync_codebook)
        return TokenizerOutput(self.decoder(q.codes), q)

    # ---- checkpoints ----------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (atomically); reload with ``from_pretrained``."""
        return save_pretrained_dir(directory, self.model_type, self.config.to_dict(), self.state_dict())

    @classmethod
    def from_config_and_weights(cls, config: TokenizerConfig, weights: dict[str, Tensor]) -> Tokenizer:
        with torch.device("meta"):
            model = cls(config)
        model = model.to_empty(device="cpu")
        load_strict(model, weights, what=f"{cls.__name__} ({cls.model_type})")
        return model.eval()

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, weights: str = "ema", revision: str | None = None) -> Tokenizer:
        """Load an official ``.ckpt`` (EMA weights by default, ``weights="raw"`` for the trained ones), a
        ``save_pretrained`` directory (which holds one set of weights; ``weights`` is then not used), or a Hugging
        Face repo id. Loading is strict: any missing or unexpected key raises ``ValueError`` naming it.
        """
        path = resolve_pretrained(path_or_id, revision)
        if path.is_dir():
            model_type, cfg, sd = load_pretrained_dir(path)
            if model_type != cls.model_type:
                raise ValueError(f"{path} holds a {model_type!r}, not a {cls.model_type!r}")
            return cls.from_config_and_weights(TokenizerConfig.from_dict(cfg), sd)
        w = tokenizer_weights(load_official_state_dict(path), weights=weights)
        config = infer_tokenizer_config(w)
        if cls.dims is not None and config.dims != cls.dims:
            kind = "an image" if config.dims == 2 else "a video"
            raise ValueError(f"{path} is {kind} tokenizer checkpoint; load it with the matching class")
        return cls.from_config_and_weights(config, w)


class ImageTokenizer(Tokenizer):
    """The Open-MAGVIT2 image tokenizer: (B, 3, H, W) in [−1, 1] ↔ int64 indices (B, H/f, W/f)."""

    model_type = "image_tokenizer"
    dims = 2
