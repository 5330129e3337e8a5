"""Exponential moving average of model weights (docs/design.md O-23), as a frozen copy of the model (DiT's ``ema``).

After each optimiser step: ``shadow ← shadow − (1 − decay)·(shadow − param)`` for every parameter, decay
constant (0.999, no warm-up: the official ``LitEma`` runs with ``use_num_upates=False``). The copy starts equal
to the model, as ``LitEma`` does. Buffers (none in the tokenizers; BatchNorm statistics are only in the
discriminator, which the EMA does not track) are copied.

Why not ``torch.optim.swa_utils.AveragedModel``: its first update copies the weights instead of averaging them,
which departs from the official EMA after step 1; the update here is one ``torch._foreach_lerp_`` call.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` in eval mode, to be updated with :func:`update_ema`."""
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """One EMA step towards ``model``'s current weights (the same parameter names, in the same order)."""
    ema_params = list(ema.parameters())
    params = [p.detach() for p in model.parameters()]
    if len(ema_params) != len(params):
        raise ValueError("the EMA copy and the model have different parameter lists")
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)  # s + (1−d)(p − s) = s − (1−d)(s − p)
    for eb, b in zip(ema.buffers(), model.buffers()):
        eb.copy_(b)
