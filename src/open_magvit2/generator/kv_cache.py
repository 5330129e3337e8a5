"""Static key/value cache for AR decoding (gpt-fast style; spec §5.8, fixing §9 items 8–9).

Allocated once per sampling run with its final size and never attached to the model, so a forward after
``generate`` works and ``state_dict()`` never contains cache buffers (the official sampler attaches caches as
submodules and re-allocates the intra caches at every step).
"""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Keys and values of one attention layer: (batch, heads, max_len, head_dim) each, zero-initialised."""

    def __init__(
        self, batch: int, n_heads: int, max_len: int, head_dim: int, *, dtype: torch.dtype, device: torch.device
    ) -> None:
        shape = (batch, n_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def update(self, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (batch, heads, L, head_dim) at positions [start, start + L); return views of [0, start + L)."""
        end = start + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; cannot write positions [{start}, {end})")
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]
