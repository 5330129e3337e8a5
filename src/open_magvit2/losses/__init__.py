"""Tokenizer training losses: discriminators, GAN terms with LeCAM, LPIPS, and the combined loss
(docs/design.md O-17–O-20)."""

from open_magvit2.losses.discriminator import (
    DISCRIMINATORS,
    BlurDiscriminator,
    PatchGAN,
    build_discriminator,
    discriminator_dims,
)
from open_magvit2.losses.gan import (
    D_LOSSES,
    LeCAM,
    adaptive_weight,
    disc_factor,
    hinge_d_loss,
    non_saturating_d_loss,
    non_saturating_g_loss,
    vanilla_d_loss,
)
from open_magvit2.losses.perceptual import PerceptualLoss
from open_magvit2.losses.tokenizer_loss import (
    DISCRIMINATOR_LOG_KEYS,
    GENERATOR_LOG_KEYS,
    LOSS_PRESETS,
    LossOutput,
    TokenizerLoss,
    TokenizerLossConfig,
    loss_config,
)

__all__ = [
    "DISCRIMINATORS",
    "DISCRIMINATOR_LOG_KEYS",
    "D_LOSSES",
    "GENERATOR_LOG_KEYS",
    "LOSS_PRESETS",
    "BlurDiscriminator",
    "LeCAM",
    "LossOutput",
    "PatchGAN",
    "PerceptualLoss",
    "TokenizerLoss",
    "TokenizerLossConfig",
    "adaptive_weight",
    "build_discriminator",
    "disc_factor",
    "discriminator_dims",
    "hinge_d_loss",
    "loss_config",
    "non_saturating_d_loss",
    "non_saturating_g_loss",
    "vanilla_d_loss",
]
