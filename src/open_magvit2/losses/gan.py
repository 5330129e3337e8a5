"""Adversarial loss terms of the tokenizer training (docs/design.md O-17, O-29).

Logit maps are (B, 1, h, w) for images and (B, 1, t, h, w) for clips. Every function returns a 0-d tensor, computed
in float32 whatever the logits' dtype (bf16 under autocast).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ---- discriminator losses -----------------------------------------------------------------------------------------


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """``0.5·(mean relu(1 − l_r) + mean relu(1 + l_f))``: the D loss of every official config (docs/design.md O-17)."""
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def vanilla_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """``0.5·(mean softplus(−l_r) + mean softplus(l_f))``: the official "vanilla" option."""
    return 0.5 * (F.softplus(-logits_real.float()).mean() + F.softplus(logits_fake.float()).mean())


def non_saturating_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """The official "non_saturate" option: binary cross-entropy of each sample's mean logit, real + fake (no ½)."""
    return F.softplus(-_per_sample_mean(logits_real)).mean() + F.softplus(_per_sample_mean(logits_fake)).mean()


D_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "hinge": hinge_d_loss,
    "vanilla": vanilla_d_loss,
    "non_saturate": non_saturating_d_loss,
}


# ---- generator loss -----------------------------------------------------------------------------------------------


def _per_sample_mean(logits: Tensor) -> Tensor:
    """(B, 1, *positions) → (B,): each sample's mean logit over its spatial (and temporal) positions."""
    return logits.float().flatten(1).mean(1)


def non_saturating_g_loss(logits_fake: Tensor) -> Tensor:
    """``mean_b softplus(−mean_{[t,]h,w} logits_fake[b])`` (docs/design.md O-17, O-29).

    The official non-saturating generator loss averages the logits of each sample first, then applies the
    log-sigmoid: it is not the mean of per-patch losses.
    """
    return F.softplus(-_per_sample_mean(logits_fake)).mean()


def adaptive_weight(nll: Tensor, g_loss: Tensor, last_layer: Tensor, *, disc_weight: float) -> Tensor:
    """The VQGAN adaptive generator weight ``clamp(‖∇nll‖ / (‖∇g‖ + 1e-4), 0, 1e4) · disc_weight``
    (docs/design.md O-17).

    Gradients are taken w.r.t. ``last_layer`` (the decoder's last conv weight) and the graph is kept for the
    backward pass that follows; the result is detached. As officially, the clamp applies before ``disc_weight``.
    """
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    ratio = nll_grad.float().norm() / (g_grad.float().norm() + 1e-4)
    return ratio.clamp(0.0, 1e4).detach() * disc_weight


def disc_factor(step: int, disc_start: int) -> float:
    """1 once ``step`` ≥ ``disc_start``, else 0: the official ``adopt_weight`` with disc_factor 1."""
    return 1.0 if step >= disc_start else 0.0


@contextmanager
def without_parameter_grads(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` with ``requires_grad`` off on all its parameters, restoring each flag afterwards.

    Gradients still flow through the module into its input; its parameters get none, and autograd records no
    parameter-gradient work (the official G step back-propagates into D and throws that away: docs/design.md O-24).
    """
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


# ---- LeCAM --------------------------------------------------------------------------------------------------------


class LeCAM(nn.Module):
    """LeCAM regulariser with its EMA state (docs/design.md O-18; Tseng et al. 2021).

    ``ema_real`` / ``ema_fake`` are persistent float32 0-d buffers (initial 0), so they are checkpointed and a
    resumed run continues with them (the official state is a Python float that resets on resume: docs/design.md O-18).
    :meth:`update` uses tensor ops only (no ``.item()`` host sync). The training D step calls :meth:`update` with
    the batch logits first, then :meth:`forward` with the same logits, which reads the updated EMA.
    """

    ema_real: Tensor
    ema_fake: Tensor

    def __init__(self, *, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"LeCAM decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.register_buffer("ema_real", torch.zeros((), dtype=torch.float32))
        self.register_buffer("ema_fake", torch.zeros((), dtype=torch.float32))

    @torch.no_grad()
    def update(
        self, logits_real: Tensor, logits_fake: Tensor, batch_mean: Callable[[Tensor], Tensor] | None = None
    ) -> None:
        """``ema ← decay·ema + (1 − decay)·mean(logits)`` for real and fake.

        ``batch_mean``, if given, maps the stacked local means (a (2,) float32 tensor) to their average over all
        ranks, so every rank keeps the same state; it is called once per update.
        """
        means = torch.stack([logits_real.detach().float().mean(), logits_fake.detach().float().mean()])
        if batch_mean is not None:
            means = batch_mean(means)
        self.ema_real.mul_(self.decay).add_(means[0].to(self.ema_real), alpha=1.0 - self.decay)
        self.ema_fake.mul_(self.decay).add_(means[1].to(self.ema_fake), alpha=1.0 - self.decay)

    def forward(self, logits_real: Tensor, logits_fake: Tensor) -> Tensor:
        """``R = mean(relu(l_r − ema_fake)²) + mean(relu(ema_real − l_f)²)`` with the current EMA."""
        reg_real = F.relu(logits_real.float() - self.ema_fake).square().mean()
        reg_fake = F.relu(self.ema_real - logits_fake.float()).square().mean()
        return reg_real + reg_fake

    def extra_repr(self) -> str:
        return f"decay={self.decay}"
