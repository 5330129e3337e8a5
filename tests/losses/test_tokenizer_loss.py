"""TokenizerLoss: config validation, what is checkpointed, the G and D steps' values and gradients, LeCAM update
rules (training only; for clips only once the discriminator is on), images and clips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from open_magvit2.losses import (
    DISCRIMINATOR_LOG_KEYS,
    GENERATOR_LOG_KEYS,
    LOSS_PRESETS,
    TokenizerLoss,
    TokenizerLossConfig,
    loss_config,
)
from open_magvit2.quantize import LFQOutput

NO_LPIPS = TokenizerLossConfig(perceptual_weight=0.0)


def quant_output(entropy_loss: float = -2.0, commitment: float = 0.5) -> LFQOutput:
    t = torch.tensor
    return LFQOutput(t(0.0), t(0), t(entropy_loss), t(1.0), t(3.0), t(commitment))


def pair(shape=(2, 3, 32, 32), seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) * 2 - 1
    xrec = (x + 0.3 * torch.randn(shape, generator=g)).requires_grad_()
    return x, xrec


# ---- config -------------------------------------------------------------------------------------------------------


def test_config_defaults_are_the_128_L_recipe():
    c = TokenizerLossConfig()
    assert (c.discriminator, c.disc_loss, c.disc_start) == ("patchgan", "hinge", 0)
    assert (c.gen_loss_weight, c.disc_weight, c.lecam_weight, c.lecam_decay) == (0.1, 0.8, 0.01, 0.999)
    assert (c.entropy_weight, c.commit_weight, c.l1_weight, c.perceptual_weight) == (0.1, 0.25, 1.0, 1.0)
    assert c.lpips_path is None and LOSS_PRESETS["imagenet_128_L"] == c
    assert TokenizerLossConfig.from_dict(c.to_dict()) == c
    assert loss_config("ucf101_128_L_tiny").discriminator == "patchgan3d"
    assert loss_config("pretrain_256_16384").discriminator == "blur"
    assert loss_config("ucf101_128_L").gen_loss_weight == 0.3


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"discrimnator": "blur"}, "unknown TokenizerLossConfig keys \\['discrimnator'\\]"),
        ({"discriminator": "stylegan"}, "discriminator must be one of"),
        ({"disc_loss": "wgan"}, "disc_loss must be one of"),
        ({"disc_start": -1}, "disc_start"),
        ({"disc_start": "0"}, "disc_start"),
        ({"commit_weight": -0.25}, "commit_weight"),
        ({"gen_loss_weight": "0.1"}, "gen_loss_weight"),
        ({"lecam_decay": 1.0}, "lecam_decay"),
        ({"perceptual_weight": float("nan")}, "perceptual_weight"),
    ],
)
def test_config_errors_name_the_key(changes, match):
    with pytest.raises(ValueError, match=match):
        TokenizerLossConfig.from_dict(changes)
    with pytest.raises(ValueError, match=r"loss preset"):
        loss_config("imagenet_512")


def test_discriminator_must_fit_dims():
    with pytest.raises(ValueError, match="patchgan3d"):
        TokenizerLoss(NO_LPIPS, dims=3)
    with pytest.raises(ValueError, match="does not fit dims=2"):
        TokenizerLoss(NO_LPIPS.replace(discriminator="patchgan3d"), dims=2)


# ---- state ----------------------------------------------------------------------------------------------------------


def test_state_dict_holds_discriminator_and_lecam_but_not_lpips(vgg_file):
    loss = TokenizerLoss(TokenizerLossConfig(lpips_path=str(vgg_file)))
    lecam = {"lecam.ema_real", "lecam.ema_fake"}
    assert set(loss.state_dict()) == lecam | {f"discriminator.{k}" for k in loss.discriminator.state_dict()}
    assert {id(p) for p in loss.parameters()} == {id(p) for p in loss.discriminator.parameters()}
    loss.to(torch.float64)  # LPIPS moves with the module although it is not saved
    assert all(b.dtype == torch.float64 for b in loss.perceptual.buffers())
    loss.float()
    x, xrec = pair()
    out = loss.generator_loss(x, xrec, quant_output(), step=0)
    assert out.logs["lpips"].item() == pytest.approx(loss.perceptual(x, xrec).mean().item(), rel=1e-6)
    assert out.logs["nll"].item() == pytest.approx(out.logs["l1"].item() + out.logs["lpips"].item(), rel=1e-6)
    out.loss.backward()
    assert xrec.grad is not None


def test_lecam_off_has_no_state():
    loss = TokenizerLoss(NO_LPIPS.replace(lecam_weight=None))
    assert loss.lecam is None and not any(k.startswith("lecam") for k in loss.state_dict())
    x, xrec = pair()
    out = loss.discriminator_loss(x, xrec, step=0)
    assert out.logs["lecam"].item() == 0 and out.loss.item() == pytest.approx(out.logs["d_adv"].item())
    assert tuple(out.logs) == DISCRIMINATOR_LOG_KEYS


def test_perceptual_weight_zero_loads_nothing(monkeypatch):
    def refuse(**_):
        raise AssertionError("LPIPS must not be loaded when perceptual_weight is 0")

    monkeypatch.setattr("open_magvit2.losses.tokenizer_loss.PerceptualLoss", refuse)
    loss = TokenizerLoss(NO_LPIPS.replace(lpips_path="/nonexistent/vgg16.pth"))
    assert loss.perceptual is None
    x, xrec = pair()
    assert loss.generator_loss(x, xrec, quant_output(), step=0).logs["lpips"].item() == 0


# ---- the generator step ---------------------------------------------------------------------------------------------


def test_generator_loss_value_and_gradients():
    torch.manual_seed(0)
    loss = TokenizerLoss(NO_LPIPS).train()
    loss.discriminator.main[0].weight.requires_grad_(True)
    loss.discriminator.main[2].weight.requires_grad_(False)  # a flag the caller set: restored as it was
    x, xrec = pair()
    out = loss.generator_loss(x, xrec, quant_output(-2.0, 0.5), step=0)
    logs = out.logs
    assert tuple(logs) == GENERATOR_LOG_KEYS
    assert all(v.dim() == 0 and v.dtype == torch.float32 and not v.requires_grad for v in logs.values())
    assert logs["l1"].item() == pytest.approx((x - xrec).abs().mean().item())
    assert logs["g_adv_weighted"].item() == pytest.approx(0.1 * logs["g_adv"].item())
    expected = logs["nll"] + logs["g_adv_weighted"] + 0.1 * -2.0 + 0.25 * 0.5
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.discriminator.main[3].num_batches_tracked.item() == 1  # D ran in train mode: BN statistics moved
    out.loss.backward()
    assert xrec.grad is not None and xrec.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.discriminator.parameters())  # D gets nothing from the G step
    assert loss.discriminator.main[0].weight.requires_grad and not loss.discriminator.main[2].weight.requires_grad


def test_before_disc_start_the_adversarial_term_is_off():
    loss = TokenizerLoss(NO_LPIPS.replace(disc_start=5))
    x, xrec = pair()
    out = loss.generator_loss(x, xrec, quant_output(0.0, 0.0), step=4)
    assert out.logs["disc_factor"].item() == 0 and out.logs["g_adv_weighted"].item() == 0
    assert out.logs["g_adv"].item() == 0  # the discriminator does not run before disc_start
    assert loss.discriminator.main[3].num_batches_tracked.item() == 0
    assert out.loss.item() == pytest.approx(out.logs["nll"].item())
    out.loss.backward()
    torch.testing.assert_close(xrec.grad, torch.sign(xrec - x).detach() / x.numel())  # the L1 gradient alone
    d = loss.discriminator_loss(x, xrec, step=4)
    assert d.loss.item() == 0 and d.logs["disc_factor"].item() == 0
    adaptive = TokenizerLoss(NO_LPIPS.replace(disc_start=5, gen_loss_weight=None))
    with pytest.raises(ValueError, match="last_layer"):  # fails at the first step, not at disc_start
        adaptive.generator_loss(x, xrec, quant_output(), step=0)


# ---- the discriminator step -----------------------------------------------------------------------------------------


class CountingWrapper(nn.Module):
    """Stands in for the training loop's DDP wrapper of the discriminator."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module, self.calls = module, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.module(x)


def test_discriminator_loss_trains_d_only():
    torch.manual_seed(0)
    loss = TokenizerLoss(NO_LPIPS).train()
    x, xrec = pair()
    wrapper = CountingWrapper(loss.discriminator)
    out = loss.discriminator_loss(x, xrec, step=0, discriminator=wrapper)
    assert wrapper.calls == 2  # real and fake separately (BatchNorm normalises each on its own)
    logs = out.logs
    assert tuple(logs) == DISCRIMINATOR_LOG_KEYS
    assert out.loss.item() == pytest.approx(0.01 * logs["lecam"].item() + logs["d_adv"].item(), rel=1e-6)
    assert logs["lecam_ema_real"].item() == pytest.approx(0.001 * logs["d_logits_real"].item(), rel=1e-5)
    out.loss.backward()
    assert xrec.grad is None
    assert all(p.grad is not None for p in loss.discriminator.parameters())


def test_lecam_is_updated_only_by_training_d_steps():
    loss = TokenizerLoss(NO_LPIPS)
    x, xrec = pair()
    loss.eval()  # validation / logging
    loss.discriminator_loss(x, xrec, step=0)
    loss.generator_loss(x, xrec, quant_output(), step=0)
    assert loss.lecam.ema_real.item() == 0 and loss.lecam.ema_fake.item() == 0
    loss.train()
    loss.generator_loss(x, xrec, quant_output(), step=0)
    assert loss.lecam.ema_real.item() == 0
    loss.discriminator_loss(x, xrec, step=0)
    assert loss.lecam.ema_real.item() != 0


def test_lecam_before_disc_start_images_always_video_never():
    """docs/design.md O-18: the image loss updates the EMA in every D step, the video loss only once D is on."""
    image = TokenizerLoss(NO_LPIPS.replace(disc_start=10))
    x, xrec = pair()
    image.discriminator_loss(x, xrec, step=0)
    assert image.lecam.ema_real.item() != 0
    video = TokenizerLoss(NO_LPIPS.replace(disc_start=10, discriminator="patchgan3d"), dims=3)
    xv, xvrec = pair((1, 3, 5, 32, 32))
    video.discriminator_loss(xv, xvrec, step=0)
    assert video.lecam.ema_real.item() == 0
    video.discriminator_loss(xv, xvrec, step=10)
    assert video.lecam.ema_real.item() != 0


def test_video_clips_end_to_end():
    torch.manual_seed(0)
    loss = TokenizerLoss(loss_config("ucf101_128_L").replace(perceptual_weight=0.0), dims=3)
    x, xrec = pair((1, 3, 5, 32, 32))
    g = loss.generator_loss(x, xrec, quant_output(), step=0)
    assert g.logs["d_weight"].item() == pytest.approx(0.3)
    g.loss.backward()
    assert xrec.grad.shape == xrec.shape and all(p.grad is None for p in loss.discriminator.parameters())
    d = loss.discriminator_loss(x, xrec, step=0)
    d.loss.backward()
    assert all(p.grad is not None for p in loss.discriminator.parameters())
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        loss.generator_loss(x[:, :, 0], xrec[:, :, 0], quant_output(), step=0)


def test_l2_weight_adds_the_mean_squared_error():
    """``l2_weight`` adds w·mean (x − x̂)² to nll (closed form); at the default 0 the loss is bit-identical to the
    official sum, and the logged ``l2`` is the mean squared error either way."""
    x, xrec = pair()
    torch.manual_seed(0)  # the same discriminator in both losses
    base = TokenizerLoss(NO_LPIPS).generator_loss(x, xrec, quant_output(), step=0)
    mse = (x - xrec).square().mean()
    assert torch.equal(base.logs["nll"], (x - xrec).abs().mean())
    assert base.logs["l2"].item() == pytest.approx(mse.item(), rel=1e-6)
    torch.manual_seed(0)
    out = TokenizerLoss(NO_LPIPS.replace(l2_weight=2.5)).generator_loss(x, xrec, quant_output(), step=0)
    assert out.logs["nll"].item() == pytest.approx((base.logs["l1"] + 2.5 * mse).item(), rel=1e-6)
    assert out.loss.item() - base.loss.item() == pytest.approx(2.5 * mse.item(), rel=1e-5)
    with pytest.raises(ValueError, match="l2_weight must be a number >= 0"):
        TokenizerLossConfig(l2_weight=-1.0)
