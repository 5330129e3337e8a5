"""Step 0 of the official training step (``tokenizer_train_step`` fixture) with our loss modules: every logged G
and D value, the gradients of both steps, the LeCAM EMA and the BatchNorm statistics.

The fixture ran the official ``lfqgan.VQModel`` with the 128_L loss and LPIPS dropout off (as we always do). The
full two-iteration test with the optimisers and the EMA belongs to the training loop's tests.
"""

from __future__ import annotations

import pytest
import torch

from open_magvit2.checkpoints.official import load_strict
from open_magvit2.losses import TokenizerLoss, TokenizerLossConfig
from open_magvit2.tokenizer import ImageTokenizer, TokenizerConfig

from official import io_tensors

TRAIN_STEP = "tokenizer_train_step"

# official log name → ours (the official names carry a "train/" prefix)
G_LOGS = {
    "total_loss": "g_total", "per_sample_entropy": "per_sample_entropy", "codebook_entropy": "codebook_entropy",
    "commit_loss": "commitment", "entropy_loss": "entropy_loss", "nll_loss": "nll", "reconstruct_loss": "l1",
    "perceptual_loss": "lpips", "d_weight": "d_weight", "disc_factor": "disc_factor", "g_loss": "g_adv_weighted",
}  # fmt: skip
D_LOGS = {
    "disc_loss": "d_total", "logits_real": "d_logits_real", "logits_fake": "d_logits_fake",
    "disc_factor": "disc_factor", "lecam_loss": "lecam", "non_saturated_d_loss": "d_adv",
}  # fmt: skip
LECAM = {"logits_real_ema": "lecam_ema_real", "logits_fake_ema": "lecam_ema_fake"}


def _rel(ours: float, official: float) -> float:
    return abs(ours - official) / max(abs(official), 1e-12)


def _rel_to_max(ours: torch.Tensor, official: torch.Tensor) -> float:
    """Largest deviation as a fraction of the tensor's largest entry (the fixture's tolerance measure)."""
    return ((ours - official).abs().max() / official.abs().max()).item()


@pytest.fixture(scope="module")
def step0(train_step_sd, lpips_sd, vgg_file):
    """Run step 0: the tokenizer forward, the G loss and its backward, then the D loss and its backward."""
    from official import fixture_json

    fx = fixture_json(TRAIN_STEP)
    assert fx["config"]["lossconfig_params"]["lecam_loss_weight"] == 0.01  # the 128_L loss = our defaults
    tok = ImageTokenizer(TokenizerConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=18))
    load_strict(tok, {k: v for k, v in train_step_sd.items() if k.startswith(("encoder.", "decoder."))})
    loss = TokenizerLoss(TokenizerLossConfig(lpips_path=str(vgg_file)), dims=2)
    loss.perceptual.load_official_weights(lpips_sd)
    loss.load_official_discriminator(train_step_sd)
    tok.train()
    loss.train()

    io = io_tensors(TRAIN_STEP)
    x = io["step0/x"]
    xrec, quant = tok(x)
    g = loss.generator_loss(x, xrec, quant, step=0, last_layer=tok.decoder.conv_out.weight)
    g.loss.backward()
    g_grads = {k: p.grad.clone() for k, p in tok.named_parameters()}
    d_grads_after_g = [p.grad for p in loss.discriminator.parameters()]
    d = loss.discriminator_loss(x, xrec, step=0)
    d.loss.backward()
    d_grads = {f"loss.discriminator.{k}": p.grad.clone() for k, p in loss.discriminator.named_parameters()}
    return {
        "io": io, "logs": fx["logs"]["step0"], "xrec": xrec.detach(), "g": g, "d": d, "g_grads": g_grads,
        "d_grads": d_grads, "d_grads_after_g": d_grads_after_g, "loss": loss,
    }  # fmt: skip


def test_reconstruction_matches(step0):
    torch.testing.assert_close(step0["xrec"], step0["io"]["step0/xrec"], atol=1e-5, rtol=0)


def test_generator_logs_match(step0):
    official = step0["logs"]["g_step"]
    errors = {ours: _rel(step0["g"].logs[ours].item(), official[f"train/{name}"]) for name, ours in G_LOGS.items()}
    assert max(errors.values()) < 2e-5, errors
    assert step0["g"].loss.item() == pytest.approx(step0["logs"]["g_loss_total"], rel=2e-5)


def test_discriminator_logs_and_lecam_match(step0):
    official = step0["logs"]["d_step"]
    errors = {ours: _rel(step0["d"].logs[ours].item(), official[f"train/{name}"]) for name, ours in D_LOGS.items()}
    ema = step0["logs"]["lecam_ema_after"]
    errors.update({ours: _rel(step0["d"].logs[ours].item(), ema[name]) for name, ours in LECAM.items()})
    assert max(errors.values()) < 2e-5, errors
    assert step0["d"].loss.item() == pytest.approx(step0["logs"]["d_loss_total"], rel=2e-5)


def test_generator_gradients_match(step0):
    io, grads = step0["io"], step0["g_grads"]
    keys = [k.removeprefix("step0/g_step/grad/") for k in io if k.startswith("step0/g_step/grad/")]
    assert sorted(keys) == ["decoder.conv_out.bias", "decoder.conv_out.weight", "encoder.conv_in.weight"]
    errors = {k: _rel_to_max(grads[k], io[f"step0/g_step/grad/{k}"]) for k in keys}
    assert max(errors.values()) < 5e-4, errors


def test_discriminator_gradients_match_and_g_step_leaves_d_alone(step0):
    assert all(g is None for g in step0["d_grads_after_g"])  # the issue: D gets no gradients from the G step
    io, grads = step0["io"], step0["d_grads"]
    keys = [k.removeprefix("step0/d_step/grad/") for k in io if k.startswith("step0/d_step/grad/")]
    assert len(keys) == 2
    errors = {k: _rel_to_max(grads[k], io[f"step0/d_step/grad/{k}"]) for k in keys}
    assert max(errors.values()) < 5e-4, errors


def test_batchnorm_statistics_match(step0):
    """Three D calls in iteration 0 (G step on x̂, D step on x then x̂) update the running statistics as officially;
    the optimiser steps do not touch them."""
    bn = step0["loss"].discriminator.main[3]
    official = step0["io"]["step0/after/loss.discriminator.main.3.running_mean"]
    assert _rel_to_max(bn.running_mean, official) < 5e-4
    assert bn.num_batches_tracked.item() == 3
