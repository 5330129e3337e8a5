"""Static key/value cache for AR decoding (gpt-fast style; docs/design.md O-39, fixing O-40).

Allocated once per sampling run with its final size and never attached to the model, so a forward after
``generate`` works and ``state_dict()`` never contains cache buffers (the official sampler attaches caches as
submodules and re-allocates the intra caches at every step). Every step reads the whole cache through a mask
(:meth:`KVCache.mask`) instead of a growing view, so the decode step has one shape from the first token to the
last: what ``torch.compile`` needs to compile it once (and CUDA graphs to replay it). Slots not yet written are
masked out; they hold zeros or values of an earlier run, always finite.
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
        self.slots = torch.arange(max_len, device=device)  # (max_len,) slot index = sequence position

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def update(self, input_pos: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (batch, heads, L, head_dim) at the positions ``input_pos`` (L,) int64 in [0, max_len);
        return the whole cache, (batch, heads, max_len, head_dim) each (read it through :meth:`mask`)."""
        self.k[:, :, input_pos] = k
        self.v[:, :, input_pos] = v
        return self.k, self.v

    def mask(self, input_pos: Tensor) -> Tensor:
        """(L, max_len) bool: the query at ``input_pos[i]`` sees the slots at or before its own position."""
        return self.slots[None, :] <= input_pos[:, None]
