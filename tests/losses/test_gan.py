"""GAN terms in closed form on hand-sized tensors: hinge / vanilla / non-saturating losses, LeCAM (EMA first, no
host syncs, checkpointed state), the adaptive weight against a brute-force autograd computation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from open_magvit2.losses import (
    LeCAM,
    TokenizerLoss,
    TokenizerLossConfig,
    adaptive_weight,
    disc_factor,
    hinge_d_loss,
    non_saturating_d_loss,
    non_saturating_g_loss,
    vanilla_d_loss,
)
from open_magvit2.losses.gan import without_parameter_grads

REAL = torch.tensor([[0.5, 2.0], [-1.0, 0.0]]).reshape(2, 1, 1, 2)
FAKE = torch.tensor([[-2.0, 0.5], [1.0, -0.5]]).reshape(2, 1, 1, 2)


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_hinge_d_loss_closed_form():
    # relu(1 − real) = [0.5, 0, 2, 1] → 0.875; relu(1 + fake) = [0, 1.5, 2, 0.5] → 1.0
    assert hinge_d_loss(REAL, FAKE).item() == pytest.approx(0.5 * (0.875 + 1.0))


def test_vanilla_d_loss_closed_form():
    real = sum(softplus(-v) for v in (0.5, 2.0, -1.0, 0.0)) / 4
    fake = sum(softplus(v) for v in (-2.0, 0.5, 1.0, -0.5)) / 4
    assert vanilla_d_loss(REAL, FAKE).item() == pytest.approx(0.5 * (real + fake), rel=1e-6)


def test_non_saturating_d_loss_closed_form():
    # per-sample means: real [1.25, -0.5], fake [-0.75, 0.25]
    expected = (softplus(-1.25) + softplus(0.5)) / 2 + (softplus(-0.75) + softplus(0.25)) / 2
    assert non_saturating_d_loss(REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)


def test_generator_loss_averages_logits_per_sample_first():
    logits = torch.tensor([[1.0, 3.0, -1.0, 1.0], [-2.0, -2.0, 0.0, 0.0]]).reshape(2, 1, 2, 2)  # means 1, −1
    expected = (softplus(-1.0) + softplus(1.0)) / 2
    assert non_saturating_g_loss(logits).item() == pytest.approx(expected, rel=1e-6)
    per_patch = sum(softplus(-v) for v in logits.flatten().tolist()) / 8
    assert abs(per_patch - expected) > 0.05  # not the mean of per-patch losses
    # clips: the mean runs over (t, h, w)
    assert non_saturating_g_loss(logits.reshape(2, 1, 2, 1, 2)).item() == pytest.approx(expected, rel=1e-6)
    assert non_saturating_g_loss(logits.bfloat16()).dtype == torch.float32


def test_disc_factor():
    assert [disc_factor(s, 2) for s in (0, 1, 2, 3)] == [0.0, 0.0, 1.0, 1.0]
    assert disc_factor(0, 0) == 1.0


# ---- LeCAM ----------------------------------------------------------------------------------------------------------


def test_lecam_state_is_checkpointed_float32():
    lecam = LeCAM(decay=0.999)
    sd = lecam.state_dict()
    assert set(sd) == {"ema_real", "ema_fake"}
    assert all(v.dtype == torch.float32 and v.dim() == 0 and v.item() == 0 for v in sd.values())
    lecam.update(torch.tensor([1.0, 3.0]), torch.tensor([-4.0]))
    fresh = LeCAM(decay=0.999)
    fresh.load_state_dict(lecam.state_dict())
    assert fresh.ema_real.item() == pytest.approx(0.002) and fresh.ema_fake.item() == pytest.approx(-0.004)
    with pytest.raises(ValueError, match="decay"):
        LeCAM(decay=1.0)


def test_lecam_update_then_regularise_closed_form():
    lecam = LeCAM(decay=0.9)
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -3.0])
    assert lecam(real, fake).item() == pytest.approx(10.0)  # with the initial EMA 0: mean(1, 9) + mean(1, 9)
    lecam.update(real, fake)
    assert (lecam.ema_real.item(), lecam.ema_fake.item()) == (pytest.approx(0.2), pytest.approx(-0.2))
    # relu(real − ema_fake)² = [1.44, 10.24], relu(ema_real − fake)² = [1.44, 10.24]
    assert lecam(real, fake).item() == pytest.approx(11.68)
    lecam.update(real, fake)
    assert lecam.ema_real.item() == pytest.approx(0.9 * 0.2 + 0.1 * 2.0)


def test_lecam_batch_mean_called_once_with_both_means():
    seen = []

    def all_ranks_mean(t: torch.Tensor) -> torch.Tensor:
        seen.append(t.clone())
        return t + 10.0  # pretend the other ranks' logits were larger

    lecam = LeCAM(decay=0.5)
    lecam.update(torch.tensor([2.0]), torch.tensor([-2.0]), all_ranks_mean)
    assert len(seen) == 1 and seen[0].tolist() == [2.0, -2.0]
    assert (lecam.ema_real.item(), lecam.ema_fake.item()) == (6.0, 4.0)


class LogitsFromFirstChannel(nn.Module):
    """A stand-in discriminator: its logits are the input's first channel (so they are set by hand)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x[:, :1]


def test_discriminator_step_updates_lecam_first_without_host_syncs(monkeypatch):
    loss = TokenizerLoss(TokenizerLossConfig(perceptual_weight=0.0, lecam_decay=0.9, lecam_weight=0.5))
    loss.discriminator = LogitsFromFirstChannel()
    x = torch.zeros(2, 3, 1, 1)
    x[:, 0, 0, 0] = torch.tensor([1.0, 3.0])  # real logits, mean 2
    xrec = -x  # fake logits [−1, −3]
    for name in ("item", "tolist", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, lambda *a, **k: pytest.fail("host sync in the D step"))
    out = loss.discriminator_loss(x, xrec, step=0)
    monkeypatch.undo()
    hinge = 0.5 * ((0 + 0) / 2 + (0 + 0) / 2)  # relu(1 − [1, 3]) = 0, relu(1 + [−1, −3]) = 0
    assert out.logs["lecam"].item() == pytest.approx(11.68)  # the EMA was updated before R
    assert out.loss.item() == pytest.approx(0.5 * 11.68 + hinge)
    assert out.logs["lecam_ema_real"].item() == pytest.approx(0.2)


# ---- adaptive weight ------------------------------------------------------------------------------------------------


def test_adaptive_weight_equals_brute_force():
    torch.manual_seed(0)
    last = nn.Conv2d(4, 3, 3, padding=1)  # the "decoder's last layer"
    h, x = torch.randn(2, 4, 32, 32), torch.rand(2, 3, 32, 32) * 2 - 1
    loss = TokenizerLoss(TokenizerLossConfig(perceptual_weight=0.0, gen_loss_weight=None, disc_weight=0.8))
    quant_zero = torch.zeros(())

    class Quant:  # the LFQOutput fields the loss reads
        entropy_loss = per_sample_entropy = codebook_entropy = commitment = quant_zero

    out = loss.generator_loss(x, last(h), Quant(), step=0, last_layer=last.weight)

    def grad_of(term: str) -> torch.Tensor:  # a fresh graph for each term
        xrec = last(h)
        value = (x - xrec).abs().mean() if term == "nll" else non_saturating_g_loss(loss.discriminator(xrec))
        return torch.autograd.grad(value, last.weight)[0]

    expected = grad_of("nll").norm() / (grad_of("g").norm() + 1e-4) * 0.8
    assert out.logs["d_weight"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.logs["g_adv_weighted"].item() == pytest.approx(expected.item() * out.logs["g_adv"].item(), rel=1e-5)
    # the functional form: clamped to [0, 1e4] before disc_weight
    nll = (last.weight.sum() * 1e3) ** 2
    g = last.weight.sum() * 0.0 + last.bias.sum()
    assert adaptive_weight(nll, g, last.weight, disc_weight=0.5).item() == pytest.approx(0.5e4)
    with pytest.raises(ValueError, match="last_layer"):
        loss.generator_loss(x, last(h), Quant(), step=0)


def test_without_parameter_grads_restores_flags():
    m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    m[1].bias.requires_grad_(False)
    with pytest.raises(RuntimeError), without_parameter_grads(m):
        assert not any(p.requires_grad for p in m.parameters())
        raise RuntimeError("inside")
    assert [p.requires_grad for p in m.parameters()] == [True, True, True, False]
