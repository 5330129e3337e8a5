"""Static key/value cache for AR decoding (gpt-fast style; docs/design.md O-39, fixing O-40).

Allocated once per sampling run with its final size and never attached to the model, so a forward after
``generate`` works and ``state_dict()`` never contains cache buffers (the official sampler attaches caches as
submodules and re-allocates the intra caches at every step). Two ways to read it, chosen by the type of the
position (docs/design.md "Decode-step speed on CPU"):

* a tensor position (the compiled path): every step reads the whole cache through a mask (:meth:`KVCache.mask`),
  so the decode step has one shape from the first token to the last — what ``torch.compile`` needs to compile it
  once (and CUDA graphs to replay it). Slots not yet written are masked out; they hold zeros or values of an
  earlier run, always finite;
* an int position (eager decoding, where the position is known on the host): a step reads only the filled prefix
  of the cache, a view of its first ``position + L`` slots, without a mask — half the cache traffic over a run and
  no masked attention.

Both give the same attention up to float summation order.
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

    def update(self, input_pos: Tensor | int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v (batch, heads, L, head_dim) at the positions ``input_pos``: a tensor (L,) int64 in
        [0, max_len), or an int p for the positions p … p + L − 1.

        A tensor returns the whole cache, (batch, heads, max_len, head_dim) each (read it through :meth:`mask`);
        an int returns views of the filled prefix, (batch, heads, p + L, head_dim) each."""
        if isinstance(input_pos, int):
            end = input_pos + k.shape[2]
            self.k[:, :, input_pos:end] = k
            self.v[:, :, input_pos:end] = v
            return self.k[:, :, :end], self.v[:, :, :end]
        self.k[:, :, input_pos] = k
        self.v[:, :, input_pos] = v
        return self.k, self.v

    def mask(self, input_pos: Tensor | int, length: int = 1) -> Tensor | None:
        """Which slots the ``length`` queries at ``input_pos`` see: themselves and the positions before them.

        A tensor (L,): (L, max_len) bool over the whole cache. An int p: None for one query (the prefix
        :meth:`update` returns is exactly what it sees), else (L, p + L) bool, causal over the new positions."""
        if isinstance(input_pos, int):
            if length == 1:
                return None
            end = input_pos + length
            return self.slots[None, :end] <= torch.arange(input_pos, end, device=self.slots.device)[:, None]
        return self.slots[None, :] <= input_pos[:, None]
