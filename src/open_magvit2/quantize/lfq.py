"""Lookup-free quantisation (LFQ), paper §3.1 / spec §2.

Each latent channel is quantised independently to ±1; a token with K channels is an integer in [0, 2^K) whose
bit k is channel k (LSB first, spec §2.2 — the official docstrings say big-endian, the code is LSB-first).
There is no codebook lookup and no learnable state.
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import torch
from torch import Tensor, nn

from open_magvit2.quantize.entropy import entropy_terms


class LFQOutput(NamedTuple):
    """What :class:`LFQ` returns. Every field is always present; the losses are 0-d and zero in eval mode."""

    codes: Tensor  # (B, K, *spatial), exactly ±1 forward, straight-through gradient into z
    indices: Tensor  # (B, *spatial) int64, LSB-first full indices in [0, 2^K)
    entropy_loss: Tensor  # sample_weight·H_s − codebook_weight·H_c
    per_sample_entropy: Tensor  # H_s
    codebook_entropy: Tensor  # H_c
    commitment: Tensor  # mean((z − sg(codes))²)


def _bit_weights(bits: int, device: torch.device | None = None) -> Tensor:
    return torch.pow(2, torch.arange(bits, device=device, dtype=torch.int64))  # (K,) 1, 2, 4, ... (LSB first)


def quantize_signs(z: Tensor) -> Tensor:
    """±1 codes of z (same dtype); z == 0 (also −0.0) maps to −1, as in the official code."""
    return torch.where(z > 0, torch.ones_like(z), -torch.ones_like(z))


def codes_to_indices(codes: Tensor) -> Tensor:
    """(B, K, *spatial) codes (or any real z: bit = z > 0) → (B, *spatial) int64 LSB-first indices."""
    if codes.dim() < 2:
        raise ValueError(f"codes must be (B, K, *spatial), got shape {tuple(codes.shape)}")
    bits = codes.shape[1]
    if bits > 62:
        raise ValueError(f"at most 62 bits fit an int64 index, got {bits} channels")
    w = _bit_weights(bits, codes.device).view(1, bits, *([1] * (codes.dim() - 2)))
    return ((codes > 0).long() * w).sum(dim=1)


def _check_indices(indices: Tensor, bits: int, what: str = "indices") -> None:
    if not isinstance(indices, Tensor):
        raise TypeError(f"{what} must be an integer torch.Tensor, got {type(indices).__name__}")
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise TypeError(f"{what} must be an integer tensor, got {indices.dtype}; convert with .long()")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= 2**bits):
        raise ValueError(
            f"{what} must lie in [0, 2^{bits}) = [0, {2**bits}); got range [{int(indices.min())}, "
            f"{int(indices.max())}]. Are they from a tokenizer with a different codebook size?"
        )


def _normalize_factorized_bits(factorized_bits: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """Validate sub-token sizes such as (6, 12) (any int-like values) and return them as a tuple of ints."""
    try:
        out = tuple(operator.index(k) for k in factorized_bits)
    except TypeError:
        out = ()
    if len(out) == 0 or min(out) < 1 or any(isinstance(k, bool) for k in factorized_bits):
        raise ValueError(f"factorized_bits must be positive ints such as (6, 12), got {factorized_bits!r}")
    if sum(out) > 62:
        raise ValueError(f"at most 62 bits fit an int64 index, factorized_bits {out} has {sum(out)}")
    return out


def indices_to_codes(indices: Tensor, bits: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(B, *spatial) integer indices → (B, K, *spatial) ±1 codes: channel k = 2·((I >> k) & 1) − 1."""
    _check_indices(indices, bits)
    shifts = torch.arange(bits, device=indices.device, dtype=torch.int64)
    b = (indices.long().unsqueeze(1) >> shifts.view(1, bits, *([1] * (indices.dim() - 1)))) & 1  # (B, K, *spatial)
    return (2 * b - 1).to(dtype)


def factorize_indices(indices: Tensor, factorized_bits: tuple[int, ...] = (6, 12)) -> tuple[Tensor, ...]:
    """Split full indices into sub-tokens (spec §2.3): for (6, 12), ``pre = I & 63`` and ``post = I >> 6``."""
    factorized_bits = _normalize_factorized_bits(factorized_bits)
    _check_indices(indices, sum(factorized_bits))
    out, shift = [], 0
    for k in factorized_bits:
        out.append((indices >> shift) & ((1 << k) - 1))
        shift += k
    return tuple(out)


def unfactorize_indices(parts: tuple[Tensor, ...] | list[Tensor], factorized_bits: tuple[int, ...] = (6, 12)) -> Tensor:
    """Inverse of :func:`factorize_indices`: ``I = pre + 2^6 · post`` for (6, 12)."""
    factorized_bits = _normalize_factorized_bits(factorized_bits)
    if len(parts) != len(factorized_bits):
        raise ValueError(
            f"expected {len(factorized_bits)} sub-token tensors for factorized_bits {factorized_bits}, got {len(parts)}"
        )
    out, shift = torch.zeros_like(parts[0], dtype=torch.int64), 0
    for p, k in zip(parts, factorized_bits):
        _check_indices(p, k, what=f"a {k}-bit sub-token")
        out = out + (p.long() << shift)
        shift += k
    return out


class LFQ(nn.Module):
    """Lookup-free quantiser with the Open-MAGVIT2 entropy penalty.

    Input z: (B, K, *spatial) float (any real values; the encoder's raw output). Output: :class:`LFQOutput`.
    ``factorized_bits`` (e.g. ``(6, 12)``, what the official AR first stage uses) only configures
    :meth:`factorize` / :meth:`unfactorize`; ``indices`` are always full indices.
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
        sync_codebook: bool = True,
    ) -> None:
        super().__init__()
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
        self.bits = bits
        self.factorized_bits = factorized_bits
        self.temperature = temperature
        self.sample_weight = sample_weight
        self.codebook_weight = codebook_weight
        self.eps = eps
        self.sync_codebook = sync_codebook

    @property
    def codebook_size(self) -> int:
        return 2**self.bits

    def forward(self, z: Tensor) -> LFQOutput:
        if z.dim() < 2 or z.shape[1] != self.bits:
            raise ValueError(
                f"LFQ(bits={self.bits}) expects z of shape (B, {self.bits}, *spatial), got {tuple(z.shape)}; "
                "the encoder's z_channels must equal the quantiser's bits"
            )
        q = quantize_signs(z)
        codes = z + (q - z).detach()  # straight-through estimator (spec §2.1)
        indices = codes_to_indices(q)
        zero = z.new_zeros((), dtype=torch.float32)
        if not self.training:
            return LFQOutput(codes, indices, zero, zero, zero, zero)
        h_s, h_c = entropy_terms(z, temperature=self.temperature, eps=self.eps, sync=self.sync_codebook)
        entropy_loss = self.sample_weight * h_s - self.codebook_weight * h_c
        dtype = torch.promote_types(z.dtype, torch.float32)  # float32 under autocast, float64 stays float64
        commitment = (z.to(dtype) - q.detach().to(dtype)).square().mean()  # gradient into z only (spec §2.4)
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
        return f"bits={self.bits}, factorized_bits={self.factorized_bits}, temperature={self.temperature}"
