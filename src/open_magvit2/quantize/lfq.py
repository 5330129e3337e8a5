"""Lookup-free quantisation (LFQ), paper §2.2 (eq. 1–3) / docs/design.md O-10–O-14.

Each latent channel is quantised independently to ±1; a token with K channels is an integer in [0, 2^K) whose
bit k is channel k (LSB first, docs/design.md O-11 — the official docstrings say big-endian, the code is LSB-first).
There is no codebook lookup and no learnable state.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from open_magvit2.quantize.codes import (
    _normalize_factorized_bits,
    codes_to_indices,
    factorize_indices,
    indices_to_codes,
    quantize_signs,
    unfactorize_indices,
)
from open_magvit2.quantize.entropy import entropy_groups, entropy_terms


class LFQOutput(NamedTuple):
    """What :class:`LFQ` returns. Every field is always present; the losses are 0-d and zero in eval mode."""

    codes: Tensor  # (B, K, *spatial), exactly ±1 forward, straight-through gradient into z
    indices: Tensor  # (B, *spatial) int64, LSB-first full indices in [0, 2^K)
    entropy_loss: Tensor  # sample_weight·H_s − codebook_weight·H_c
    per_sample_entropy: Tensor  # H_s
    codebook_entropy: Tensor  # H_c
    commitment: Tensor  # mean((z − sg(codes))²)


class LFQ(nn.Module):
    """Lookup-free quantiser with the Open-MAGVIT2 entropy penalty.

    Input z: (B, K, *spatial) float (any real values; the encoder's raw output). Output: :class:`LFQOutput`.
    ``factorized_bits`` (e.g. ``(6, 12)``, what the official AR first stage uses) only configures
    :meth:`factorize` / :meth:`unfactorize`; ``indices`` are always full indices.
    ``entropy_group_bits`` (None: the exact codebook entropy, up to 28 bits) sums the codebook entropies of
    consecutive groups of that many bits instead (:func:`~open_magvit2.quantize.entropy.entropy_terms`), for any K ≤ 62.
    """

    def __init__(
        self,
        *,
        bits: int = 18,
        factorized_bits: tuple[int, ...] | None = None,
        temperature: float = 0.01,
        sample_weight: float = 1.0,
        codebook_weight: float = 1.0,
        eps: float = 1e-5,
        entropy_group_bits: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(bits, bool) or not hasattr(bits, "__index__"):  # numpy/torch ints pass; floats, str do not
            raise TypeError(f"bits must be an int in [1, 62], got {bits!r}")
        bits = bits.__index__()
        if not 1 <= bits <= 62:
            raise ValueError(f"bits must be in [1, 62], got {bits}")
        if factorized_bits is not None:
            factorized_bits = _normalize_factorized_bits(factorized_bits)
            if sum(factorized_bits) != bits:
                raise ValueError(f"factorized_bits {factorized_bits} must sum to bits={bits}, e.g. (6, 12) for 18")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0 (official 1e-5; 0 gives the exact codebook entropy), got {eps}")
        entropy_groups(bits, entropy_group_bits)  # validates: a g outside [1, K]; an exact H_c past 28 bits
        self.bits = bits
        self.factorized_bits = factorized_bits
        self.entropy_group_bits = None if entropy_group_bits is None else entropy_group_bits.__index__()
        self.temperature = temperature
        self.sample_weight = sample_weight
        self.codebook_weight = codebook_weight
        self.eps = eps

    @property
    def codebook_size(self) -> int:
        return 2**self.bits

    def forward(self, z: Tensor, *, sync_codebook: bool = False) -> LFQOutput:
        """Quantise z (B, K, *spatial). In train mode also compute the entropy terms and the commitment.

        ``sync_codebook=True`` averages the codebook distribution p̄ over all ranks of the default process group (one
        all-reduce of 2^K + 1 floats; with entropy groups, of Σ_groups 2^g + 1): every rank must then make the same
        call, so only the training step passes it (issue: a train-mode call made by one rank alone, for logging or a
        picture, must never wait on the others).
        The default computes everything locally and calls no collective.
        """
        if z.dim() < 2 or z.shape[1] != self.bits:
            raise ValueError(
                f"LFQ(bits={self.bits}) expects z of shape (B, {self.bits}, *spatial), got {tuple(z.shape)}; "
                "the encoder's z_channels must equal the quantiser's bits"
            )
        q = quantize_signs(z)
        codes = z + (q - z).detach()  # straight-through estimator (docs/design.md O-10)
        indices = codes_to_indices(q)
        zero = z.new_zeros((), dtype=torch.float32)
        if not self.training:
            return LFQOutput(codes, indices, zero, zero, zero, zero)
        h_s, h_c = entropy_terms(
            z, temperature=self.temperature, eps=self.eps, sync=sync_codebook, group_bits=self.entropy_group_bits
        )
        entropy_loss = self.sample_weight * h_s - self.codebook_weight * h_c
        dtype = torch.promote_types(z.dtype, torch.float32)  # float32 under autocast, float64 stays float64
        commitment = (z.to(dtype) - q.detach().to(dtype)).square().mean()  # gradient into z only (docs/design.md O-13)
        return LFQOutput(codes, indices, entropy_loss, h_s, h_c, commitment)

    def indices_to_codes(self, indices: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        return indices_to_codes(indices, self.bits, dtype)

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        return codes_to_indices(codes)

    def factorize(self, indices: Tensor) -> tuple[Tensor, ...]:
        if self.factorized_bits is None:
            raise ValueError("this LFQ has no factorized_bits; construct it with e.g. factorized_bits=(6, 12)")
        return factorize_indices(indices, self.factorized_bits)

    def unfactorize(self, parts: tuple[Tensor, ...] | list[Tensor]) -> Tensor:
        if self.factorized_bits is None:
            raise ValueError("this LFQ has no factorized_bits; construct it with e.g. factorized_bits=(6, 12)")
        return unfactorize_indices(parts, self.factorized_bits)

    def extra_repr(self) -> str:
        return (
            f"bits={self.bits}, factorized_bits={self.factorized_bits}, temperature={self.temperature}, "
            f"entropy_group_bits={self.entropy_group_bits}"
        )
