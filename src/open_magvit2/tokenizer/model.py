"""The assembled tokenizers: encoder → LFQ → decoder, with checkpoint loading (docs/design.md O-02, O-08).

:class:`Tokenizer` holds everything; :class:`ImageTokenizer` is its 2D form, and the video tokenizer
(``tokenizer/video.py``) its causal-3D form. State-dict keys are exactly the official ``encoder.*`` /
``decoder.*`` names; the quantiser has no state (docs/design.md O-03).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from open_magvit2.checkpoints.hub import save_pretrained_dir
from open_magvit2.checkpoints.loading import Checkpoint, build_and_load, check_model_type, open_checkpoint
from open_magvit2.checkpoints.official import check_weights, tokenizer_weights
from open_magvit2.quantize import LFQ, LFQOutput, indices_to_codes
from open_magvit2.tokenizer.config import TokenizerConfig, infer_tokenizer_config
from open_magvit2.tokenizer.decoder import Decoder
from open_magvit2.tokenizer.encoder import Encoder

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11


class TokenizerOutput(NamedTuple):
    """``forward`` result: the decoder output (unclamped) and everything the quantiser computed."""

    reconstruction: Tensor
    quantizer: LFQOutput


class Tokenizer(nn.Module):
    """Encoder, lookup-free quantiser and decoder of Open-MAGVIT2, for any ``config.dims``.

    Inputs are float tensors in [−1, 1]: (B, C, H, W) for ``dims=2``, (B, C, T, H, W) for ``dims=3``.
    Indices are int64 (B, h, w) / (B, t, h, w), LSB-first (docs/design.md O-11).
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
        self.quantize = LFQ(
            bits=config.z_channels,
            factorized_bits=config.factorized_bits,
            entropy_group_bits=config.entropy_group_bits,
        )

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
        if x.numel() == 0:
            raise ValueError(f"expected a non-empty batch {layout}, got shape {tuple(x.shape)}")
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
    @staticmethod
    def check_values(x: Tensor) -> None:
        """``ValueError`` for NaN/inf or values far outside [−1, 1] (0..255 images); slack 0.5 for resampling
        overshoot. Costs a reduction (a device sync), so only :meth:`encode` runs it, not the training pass."""
        if not bool(torch.isfinite(x).all()):
            raise ValueError("the input holds NaN or inf values; images must be finite floats in [-1, 1]")
        lo, hi = (float(v) for v in torch.aminmax(x))
        if lo < -1.5 or hi > 1.5:
            raise ValueError(
                f"input values must lie in [-1, 1], got [{lo:g}, {hi:g}]; convert uint8 images with x / 127.5 - 1"
            )

    def encode_latent(self, x: Tensor) -> Tensor:
        """Continuous encoder output z (B, K, *latent): the LFQ logits before quantisation. ``x`` moves to the
        model's device and dtype, as :meth:`decode` moves its indices."""
        self.check_input(x)
        p = next(self.parameters())
        return self.encoder(x.to(device=p.device, dtype=p.dtype))

    def encode(self, x: Tensor) -> Tensor:
        """Images/clips (B, 3, [T,] H, W) float in [−1, 1] → int64 indices (B, *latent) on the model's device."""
        self.check_input(x)
        self.check_values(x)
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
        """int64 indices (B, *latent) → decoder output (B, C, *pixels), not clamped. Indices move to the model's
        device. A grid needs at least 2 latent positions (the adaptive GroupNorm's unbiased variance is NaN for 1)."""
        if not isinstance(indices, Tensor):
            raise TypeError(f"indices must be an integer torch.Tensor (B, *latent), got {type(indices).__name__}; "
                            "convert a numpy array with torch.from_numpy")
        if indices.dim() != self.config.dims + 1:
            raise ValueError(
                f"indices must be (B, *latent) with {self.config.dims} latent dims, got {tuple(indices.shape)}"
            )
        if indices.numel() == 0 or indices[0].numel() < 2:
            raise ValueError(f"cannot decode a token grid of shape {tuple(indices.shape)}: it needs a batch of "
                             "grids with at least 2 positions (a 1×1 grid decodes to NaN, as officially)")
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
    def from_config_and_weights(
        cls,
        config: TokenizerConfig,
        weights: Mapping[str, Tensor],
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        release_source: bool = False,
    ) -> Self:
        """A model of ``config`` built on the meta device and loaded strictly from ``weights`` (our key names)
        straight onto ``device`` (default CPU) in ``dtype`` (default float32), in eval mode."""
        return build_and_load(
            lambda: cls(config), weights, device=device, dtype=dtype, what=f"{cls.__name__} ({cls.model_type})",
            release_source=release_source,
        )

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        weights: str = "ema",
        revision: str | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> Self:
        """Load an official ``.ckpt`` (EMA weights by default, ``weights="raw"`` for the trained ones), a
        ``save_pretrained`` directory (which holds one set of weights; ``weights`` is then not used), a released
        name or a Hugging Face repo id, strictly (any missing or unexpected key raises ``ValueError`` naming it).

        The weights go straight to ``device`` (default CPU) in ``dtype`` (``torch.bfloat16`` or ``"bf16"``, …;
        default float32): no float32 copy is made on the host first (``checkpoints/loading.py``).
        """
        check_weights(weights)  # before any file is opened or downloaded
        checkpoint = open_checkpoint(path_or_id, revision, model_type=cls.model_type)
        return cls.from_checkpoint(checkpoint, weights, device=device, dtype=dtype)

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: Checkpoint,
        weights: str = "ema",
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> Self:
        """:meth:`from_pretrained` for an already opened :class:`~open_magvit2.checkpoints.loading.Checkpoint`."""
        check_weights(weights)  # a saved folder holds one set of weights, but a misspelt choice is still an error
        kinds = (cls.model_type,) if cls.dims is not None else ("image_tokenizer", "video_tokenizer")
        check_model_type(checkpoint, kinds, cls.__name__)
        if checkpoint.config is not None:  # our folder: the saved config, our key names
            config, sd = TokenizerConfig.from_dict(checkpoint.config), checkpoint.state_dict
        else:  # official file: EMA or raw weights under their module names, architecture from the shapes
            sd = tokenizer_weights(checkpoint.state_dict, weights=weights)
            config = infer_tokenizer_config(sd)
        return cls.from_config_and_weights(
            config, sd, device=device, dtype=dtype, release_source=checkpoint.file_backed
        )


class ImageTokenizer(Tokenizer):
    """The Open-MAGVIT2 image tokenizer: (B, 3, H, W) in [−1, 1] ↔ int64 indices (B, H/f, W/f)."""

    model_type = "image_tokenizer"
    dims = 2
