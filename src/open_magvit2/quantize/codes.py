"""LFQ tokens as integers: ±1 codes ↔ LSB-first indices, and the factorisation into sub-tokens
(docs/design.md O-11, O-12).

A low module (no model code): the quantiser, the entropy reference and the data/token code all use it.
"""

from __future__ import annotations

import operator

import torch
from torch import Tensor


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
    return unchecked_indices_to_codes(indices, bits, dtype)


def unchecked_indices_to_codes(indices: Tensor, bits: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """:func:`indices_to_codes` without the range check, for tracing and export: the check reads values (a
    data-dependent branch ``torch.export`` cannot follow), and the bit test is ``I & 2^k`` rather than a shift,
    because ONNX has no right shift of signed integers. Indices outside [0, 2^K) give meaningless codes."""
    w = _bit_weights(bits, indices.device).view(1, bits, *([1] * (indices.dim() - 1)))
    one = torch.ones((), dtype=dtype, device=indices.device)
    return torch.where((indices.long().unsqueeze(1) & w) != 0, one, -one)  # (B, K, *spatial)


def factorize_indices(indices: Tensor, factorized_bits: tuple[int, ...] = (6, 12)) -> tuple[Tensor, ...]:
    """Split full indices into sub-tokens (docs/design.md O-12): for (6, 12), ``pre = I & 63`` and ``post = I >> 6``."""
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
