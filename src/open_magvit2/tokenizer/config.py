"""The tokenizer configuration: one typed dataclass for the image (dims=2) and causal-3D video (dims=3) models."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from open_magvit2.quantize.entropy import entropy_groups

GROUPS = 32  # every GroupNorm of the official model uses 32 groups (docs/design.md O-05)


@dataclass(frozen=True)
class TokenizerConfig:
    """Architecture of an Open-MAGVIT2 tokenizer (docs/design.md O-07, O-25, O-26).

    ``ch_mult[i]`` scales ``ch`` at level i; every level but the last halves H and W. For ``dims=3`` a level
    also halves time when ``ch_mult[i] != 1`` (docs/design.md O-26). ``z_channels`` is the number of LFQ bits K; the
    codebook has 2^K entries. ``factorized_bits`` only configures token factorisation of the indices (the AR
    first stage uses ``(6, 12)``); it changes no weight. ``entropy_group_bits`` is the LFQ's (None: the exact
    codebook entropy, up to 28 bits; g: the sum of the codebook entropies of groups of g bits, any K ≤ 62,
    docs/quantizer.md); it only changes the training loss, no weight.
    """

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 4
    z_channels: int = 18
    dims: int = 2
    in_channels: int = 3
    out_channels: int = 3
    factorized_bits: tuple[int, ...] | None = None
    entropy_group_bits: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        if self.factorized_bits is not None:
            object.__setattr__(self, "factorized_bits", tuple(int(k) for k in self.factorized_bits))
        if self.dims not in (2, 3):
            raise ValueError(f"dims must be 2 (images) or 3 (video), got {self.dims}")
        if not self.ch_mult or min(self.ch_mult) < 1:
            raise ValueError(f"ch_mult must be a non-empty tuple of positive ints, got {self.ch_mult}")
        bad = [self.ch * m for m in self.ch_mult if (self.ch * m) % GROUPS]
        if self.ch % GROUPS or bad:
            raise ValueError(
                f"every width ch·ch_mult[i] must be a multiple of {GROUPS} (GroupNorm groups); got ch={self.ch}"
            )
        if self.num_res_blocks < 1 or self.z_channels < 1:
            raise ValueError("num_res_blocks and z_channels must be >= 1")
        if self.factorized_bits is not None and sum(self.factorized_bits) != self.z_channels:
            raise ValueError(f"factorized_bits {self.factorized_bits} must sum to z_channels={self.z_channels}")
        if self.z_channels > 62:
            raise ValueError(f"z_channels must be <= 62 (an int64 index holds 62 bits), got {self.z_channels}")
        entropy_groups(self.z_channels, self.entropy_group_bits)  # the LFQ's checks, before any model is built
        if self.entropy_group_bits is not None:
            object.__setattr__(self, "entropy_group_bits", self.entropy_group_bits.__index__())

    # ---- derived sizes -------------------------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return len(self.ch_mult)

    @property
    def spatial_factor(self) -> int:
        """H and W are divided by this: one stride-2 conv per level but the last."""
        return 2 ** (self.num_levels - 1)

    @property
    def temporal_strides(self) -> tuple[int, ...]:
        """Temporal stride of the downsampler of each level i < L−1 (1 for images)."""
        if self.dims == 2:
            return tuple(1 for _ in self.ch_mult[:-1])
        return tuple(1 if m == 1 else 2 for m in self.ch_mult[:-1])

    @property
    def num_temporal_downsamples(self) -> int:
        return sum(s == 2 for s in self.temporal_strides)

    @property
    def codebook_size(self) -> int:
        return 2**self.z_channels

    # ---- (de)serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        d["factorized_bits"] = None if self.factorized_bits is None else list(self.factorized_bits)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenizerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TokenizerConfig keys {unknown}; allowed: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> TokenizerConfig:
        return dataclasses.replace(self, **changes)


def infer_tokenizer_config(weights: Mapping[str, Tensor], **overrides: Any) -> TokenizerConfig:
    """The architecture of encoder/decoder weights (official or ours: same names), read off the tensor shapes:
    ch, ch_mult, num_res_blocks, z_channels, dims (2-D, or 3-D ``.conv_1`` convs) and the channel counts.
    ``overrides`` set fields the weights cannot tell (``factorized_bits``)."""
    conv = "conv_1.weight" if "encoder.conv_in.conv_1.weight" in weights else "weight"
    try:
        conv_in = weights[f"encoder.conv_in.{conv}"]
        conv_out = weights[f"encoder.conv_out.{conv}"]
        dec_out = weights[f"decoder.conv_out.{conv}"]
    except KeyError as e:
        raise ValueError(f"cannot infer the tokenizer architecture: key {e} is missing") from None
    levels = sorted({int(k.split(".")[2]) for k in weights if k.startswith("encoder.down.")})
    blocks = {int(k.split(".")[4]) for k in weights if k.startswith("encoder.down.0.block.")}
    ch = conv_in.shape[0]
    ch_mult = tuple(weights[f"encoder.down.{i}.block.0.conv1.{conv}"].shape[0] // ch for i in levels)
    fields: dict[str, Any] = dict(
        ch=ch,
        ch_mult=ch_mult,
        num_res_blocks=len(blocks),
        z_channels=conv_out.shape[0],
        dims=conv_in.dim() - 2,
        in_channels=conv_in.shape[1],
        out_channels=dec_out.shape[0],
    )
    fields.update(overrides)
    return TokenizerConfig(**fields)
