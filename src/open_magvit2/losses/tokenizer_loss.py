"""The tokenizer training loss: reconstruction, LPIPS, GAN with LeCAM, LFQ entropy and commitment
(docs/design.md O-17, O-29).

:class:`TokenizerLoss` has two entry points that the training loop calls once each per iteration, in this order:

* :meth:`TokenizerLoss.generator_loss` for the G step: ``l1_weight·mean|x − x̂| + l2_weight·mean (x − x̂)²
  + perceptual_weight·mean LPIPS
  + d_weight·disc_factor·g + entropy_weight·entropy_loss + commit_weight·commitment``;
* :meth:`TokenizerLoss.discriminator_loss` for the D step on the same (detached) reconstruction:
  ``disc_factor·(lecam_weight·R + hinge)``. Unlike the official D step it does not recompute L1 and LPIPS, which
  it never used (docs/design.md O-24).

The module's ``state_dict`` holds the discriminator (official key names, ``discriminator.*``) and the LeCAM EMA
(``lecam.*``); LPIPS is loaded from a file and never checkpointed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from open_magvit2.checkpoints.official import load_strict
from open_magvit2.losses.discriminator import DISCRIMINATORS, build_discriminator, discriminator_dims
from open_magvit2.losses.gan import (
    D_LOSSES,
    LeCAM,
    adaptive_weight,
    disc_factor,
    non_saturating_g_loss,
    without_parameter_grads,
)
from open_magvit2.losses.perceptual import PerceptualLoss
from open_magvit2.quantize import LFQOutput

GENERATOR_LOG_KEYS = (
    "g_total", "l1", "l2", "lpips", "nll", "entropy_loss", "per_sample_entropy", "codebook_entropy", "commitment",
    "g_adv", "g_adv_weighted", "d_weight", "disc_factor", "g_logits_fake",
)  # fmt: skip
DISCRIMINATOR_LOG_KEYS = (
    "d_total", "d_adv", "lecam", "d_logits_real", "d_logits_fake", "lecam_ema_real", "lecam_ema_fake", "disc_factor",
)  # fmt: skip


@dataclass(frozen=True)
class TokenizerLossConfig:
    """Every knob of the official loss (docs/design.md O-21); the defaults are the ``imagenet_128_L`` recipe.

    ``gen_loss_weight=None`` switches to the adaptive weight (needs ``last_layer``); ``lecam_weight`` None or 0
    turns LeCAM off; ``perceptual_weight=0`` never loads LPIPS. ``entropy_weight`` is the official
    ``codebook_weight``; ``l1_weight`` weights the L1 term (the official ``pixelloss_weight`` is unused, i.e. 1).
    ``l2_weight`` adds a mean-squared-error term (not in the official loss; default 0, which leaves the official
    sum bit for bit): where the model cannot yet place sparse content (a bright digit on black), L1's per-pixel
    optimum is the median, black, while the squared error's is the mean, which rewards a blurred guess
    (docs/training.md, "Video tokenizers from scratch").
    """

    discriminator: str = "patchgan"  # "patchgan" | "blur" | "patchgan3d"
    disc_loss: str = "hinge"  # "hinge" | "vanilla" | "non_saturate"
    disc_start: int = 0
    disc_weight: float = 0.8
    gen_loss_weight: float | None = 0.1
    lecam_weight: float | None = 0.01
    lecam_decay: float = 0.999
    entropy_weight: float = 0.1
    commit_weight: float = 0.25
    l1_weight: float = 1.0
    l2_weight: float = 0.0
    perceptual_weight: float = 1.0
    lpips_path: str | None = None

    def __post_init__(self) -> None:
        if self.discriminator not in DISCRIMINATORS:
            raise ValueError(f"discriminator must be one of {DISCRIMINATORS}, got {self.discriminator!r}")
        if self.disc_loss not in D_LOSSES:
            raise ValueError(f"disc_loss must be one of {tuple(D_LOSSES)}, got {self.disc_loss!r}")
        if isinstance(self.disc_start, bool) or not isinstance(self.disc_start, int) or self.disc_start < 0:
            raise ValueError(f"disc_start must be an integer step >= 0, got {self.disc_start!r}")
        for name in ("disc_weight", "entropy_weight", "commit_weight", "l1_weight", "l2_weight", "perceptual_weight",
                     "gen_loss_weight", "lecam_weight"):  # fmt: skip
            v = getattr(self, name)
            if v is None and name in ("gen_loss_weight", "lecam_weight"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        if isinstance(self.lecam_decay, bool) or not isinstance(self.lecam_decay, (int, float)):
            raise ValueError(f"lecam_decay must be a number in [0, 1), got {self.lecam_decay!r}")
        if not 0.0 <= self.lecam_decay < 1.0:
            raise ValueError(f"lecam_decay must be in [0, 1), got {self.lecam_decay}")
        if self.lpips_path is not None:
            object.__setattr__(self, "lpips_path", str(self.lpips_path))

    @property
    def lecam_enabled(self) -> bool:
        return bool(self.lecam_weight)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TokenizerLossConfig:
        """Build from a plain dict (a YAML section); an unknown key is a ``ValueError`` that names it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TokenizerLossConfig keys {unknown}; allowed: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> TokenizerLossConfig:
        return dataclasses.replace(self, **changes)


# The loss of each official recipe (docs/design.md O-21), named like the tokenizer presets.
LOSS_PRESETS: dict[str, TokenizerLossConfig] = {
    "imagenet_128_L": TokenizerLossConfig(),
    "imagenet_256_L": TokenizerLossConfig(lecam_weight=0.05),
    "pretrain_256_262144": TokenizerLossConfig(lecam_weight=0.05),
    "pretrain_256_16384": TokenizerLossConfig(discriminator="blur", lecam_weight=0.05),
    "ucf101_128_L": TokenizerLossConfig(discriminator="patchgan3d", gen_loss_weight=0.3, lecam_weight=0.05),
}


def loss_config(name: str) -> TokenizerLossConfig:
    """The loss of official recipe ``name`` (a ``*_tiny`` tokenizer preset name maps to its parent's loss)."""
    base = name.removesuffix("_tiny")
    if base not in LOSS_PRESETS:
        raise ValueError(f"unknown loss preset {name!r}; choose one of {sorted(LOSS_PRESETS)}")
    return LOSS_PRESETS[base]


class LossOutput(NamedTuple):
    """A loss to back-propagate and its parts for logging."""

    loss: Tensor  # 0-d float32, differentiable
    logs: dict[str, Tensor]  # flat: name → detached 0-d tensor (GENERATOR_LOG_KEYS / DISCRIMINATOR_LOG_KEYS)


class TokenizerLoss(nn.Module):
    """The Open-MAGVIT2 tokenizer loss for images (``dims=2``) or clips (``dims=3``).

    ``TokenizerLoss(config, dims=2)``; the config (default: the 128_L recipe) is the only positional argument, as
    for ``Tokenizer(config)``. Submodules: ``discriminator`` (official names) and ``lecam`` (EMA buffers; absent
    when LeCAM is off). LPIPS is :attr:`perceptual` (``None`` when ``perceptual_weight`` is 0), held as
    non-persistent buffers: it moves with ``.to()`` but is not in ``state_dict()`` or ``parameters()``.
    """

    def __init__(self, config: TokenizerLossConfig | None = None, *, dims: int = 2) -> None:
        super().__init__()
        config = config if config is not None else TokenizerLossConfig()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 (images) or 3 (video), got {dims}")
        if discriminator_dims(config.discriminator) != dims:
            raise ValueError(
                f"discriminator {config.discriminator!r} does not fit dims={dims}: use 'patchgan' or 'blur' for "
                "images (dims=2) and 'patchgan3d' for video (dims=3)"
            )
        self.config = config
        self.dims = dims
        self.discriminator = build_discriminator(config.discriminator)
        self.lecam = LeCAM(decay=config.lecam_decay) if config.lecam_enabled else None
        self.perceptual = PerceptualLoss(path=config.lpips_path) if config.perceptual_weight > 0 else None
        self._d_loss = D_LOSSES[config.disc_loss]

    # ---- helpers ------------------------------------------------------------------------------------------------
    def _check_pair(self, x: Tensor, xrec: Tensor) -> None:
        layout = "(B, 3, H, W)" if self.dims == 2 else "(B, 3, T, H, W)"
        if x.shape != xrec.shape or x.dim() != self.dims + 2 or x.shape[1] != 3:
            raise ValueError(
                f"x and xrec must both be {layout} (dims={self.dims}); got {tuple(x.shape)} and {tuple(xrec.shape)}"
            )

    def _reconstruction_terms(self, x: Tensor, xrec: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(mean L1, mean squared error, mean LPIPS, nll) in float32; L1 and LPIPS per frame for clips
        (docs/design.md O-17, O-29)."""
        diff = x.float() - xrec.float()
        l1 = diff.abs().mean()
        l2 = diff.square().mean()
        if self.perceptual is None:
            p = l1.new_zeros(())
        else:
            p = self.perceptual(x, xrec).float().mean()
        nll = self.config.l1_weight * l1 + self.config.perceptual_weight * p
        if self.config.l2_weight:  # only when asked, so the official sum stays bit-identical
            nll = nll + self.config.l2_weight * l2
        return l1, l2, p, nll

    def _generator_weight(self, nll: Tensor, g: Tensor, factor: float, last_layer: Tensor | None) -> Tensor:
        """d_weight: the constant ``gen_loss_weight``, or the adaptive weight when it is None (docs/design.md O-17)."""
        c = self.config
        if c.gen_loss_weight is not None:
            return nll.new_tensor(c.gen_loss_weight)
        if last_layer is None:
            raise ValueError(
                "gen_loss_weight is None (adaptive weight): pass last_layer=<the decoder's last conv weight>, e.g. "
                "tokenizer.decoder.conv_out.weight"
            )
        if factor == 0.0 or not (torch.is_grad_enabled() and g.requires_grad):
            return nll.new_zeros(())  # no adversarial term, or no graph (validation): the official fallback 0
        return adaptive_weight(nll, g, last_layer, disc_weight=c.disc_weight)

    # ---- the two steps ------------------------------------------------------------------------------------------
    def generator_loss(
        self, x: Tensor, xrec: Tensor, quant: LFQOutput, step: int, last_layer: Tensor | None = None
    ) -> LossOutput:
        """Loss of the G step (docs/design.md O-17).

        x: inputs, xrec: the decoder output (unclamped); both (B, 3, H, W) or (B, 3, T, H, W), in [−1, 1].
        quant: the tokenizer forward's :class:`~open_magvit2.quantize.LFQOutput`. step: the global step (for
        ``disc_start``). last_layer: the decoder's last conv weight, needed only for the adaptive weight.
        The discriminator sees xrec in its current mode (BatchNorm statistics update, as officially) but its
        parameters get no gradient; gradients flow into xrec. Before ``disc_start`` the adversarial term is left
        out of the loss (the official code multiplies it by 0) and D runs without a graph.
        """
        self._check_pair(x, xrec)
        c = self.config
        factor = disc_factor(step, c.disc_start)
        l1, l2, p, nll = self._reconstruction_terms(x, xrec)
        if factor > 0:
            with without_parameter_grads(self.discriminator):
                logits_fake = self.discriminator(xrec)
            g = non_saturating_g_loss(logits_fake)
        else:  # before disc_start the discriminator does not run (officially it runs and is multiplied by 0)
            logits_fake = g = nll.new_zeros(())
        d_weight = self._generator_weight(nll, g, factor, last_layer)
        g_weighted = d_weight * factor * g
        loss = nll + g_weighted if factor > 0 else nll  # the official order of the sum
        loss = loss + c.entropy_weight * quant.entropy_loss + c.commit_weight * quant.commitment
        logs = {
            "g_total": loss, "l1": l1, "l2": l2, "lpips": p, "nll": nll, "entropy_loss": quant.entropy_loss,
            "per_sample_entropy": quant.per_sample_entropy, "codebook_entropy": quant.codebook_entropy,
            "commitment": quant.commitment, "g_adv": g, "g_adv_weighted": g_weighted, "d_weight": d_weight,
            "disc_factor": nll.new_tensor(factor), "g_logits_fake": logits_fake.float().mean(),
        }  # fmt: skip
        return LossOutput(loss, _detached(logs))

    def discriminator_loss(
        self,
        x: Tensor,
        xrec: Tensor,
        step: int,
        discriminator: nn.Module | None = None,
        batch_mean: Callable[[Tensor], Tensor] | None = None,
    ) -> LossOutput:
        """Loss of the D step (docs/design.md O-17, O-29): ``disc_factor·(lecam_weight·R + D loss)``.

        x, xrec as in :meth:`generator_loss`; both are detached here. Real and fake go through D in two calls, so
        BatchNorm normalises them separately, as officially. ``discriminator``: the module to call, e.g. the
        training loop's DDP wrapper of :attr:`discriminator` (default: :attr:`discriminator` itself).
        ``batch_mean``: averages a tensor over ranks, so every rank keeps the same LeCAM state (None: local).
        The LeCAM EMA is updated first, then used, and only in training mode (``self.training``): validation and
        logging calls under ``.eval()`` read it without changing it (the official code updates it in validation too,
        docs/design.md O-18). For clips it is updated only once ``disc_factor > 0`` (O-29), for images
        always.
        """
        self._check_pair(x, xrec)
        c = self.config
        factor = disc_factor(step, c.disc_start)
        d = discriminator if discriminator is not None else self.discriminator
        logits_real = d(x.detach())
        logits_fake = d(xrec.detach())
        d_adv = self._d_loss(logits_real, logits_fake)
        if self.lecam is not None:
            if self.training and (self.dims == 2 or factor > 0):
                self.lecam.update(logits_real, logits_fake, batch_mean)
            reg = self.lecam(logits_real, logits_fake)
            loss = factor * (c.lecam_weight * reg + d_adv)
            ema_real, ema_fake = self.lecam.ema_real, self.lecam.ema_fake
        else:
            reg = ema_real = ema_fake = d_adv.new_zeros(())
            loss = factor * d_adv
        logs = {
            "d_total": loss, "d_adv": d_adv, "lecam": reg, "d_logits_real": logits_real.float().mean(),
            "d_logits_fake": logits_fake.float().mean(), "lecam_ema_real": ema_real, "lecam_ema_fake": ema_fake,
            "disc_factor": d_adv.new_tensor(factor),
        }  # fmt: skip
        return LossOutput(loss, _detached(logs))

    # ---- official checkpoints -----------------------------------------------------------------------------------
    def load_official_discriminator(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load the ``loss.discriminator.*`` tensors of an official training checkpoint's state dict, strictly.

        Everything else (``encoder.*``, ``loss.perceptual_loss.*``, ``model_ema.*``) is ignored. The official code
        keeps no LeCAM state, so :attr:`lecam` starts from 0, as an official resume does.
        """
        prefix = "loss.discriminator."
        sd = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not sd:
            raise ValueError(
                "the state dict has no loss.discriminator.* keys: released tokenizer files do not contain the "
                "discriminator, so it starts from its initialisation"
            )
        load_strict(self.discriminator, sd, what=f"discriminator {self.config.discriminator!r}")


def _detached(logs: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().float().reshape(()) for k, v in logs.items()}
