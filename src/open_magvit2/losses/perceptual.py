"""LPIPS for tokenizer training (docs/design.md O-19): the ``lpips`` package's VGG16 v0.1, frozen, always in eval mode.

The official loss uses the same network (VGG16 ``features`` sliced at relu1_2 … relu5_3, the v0.1 linear heads).
Two departures, both on purpose (``docs/design.md``, "Tokenizer losses"):

* the heads' Dropout(0.5) stays off: the official training leaves it on, because Lightning's ``model.train()``
  reaches the LPIPS module (docs/design.md O-19), which makes the perceptual term random;
* the weights are not part of any checkpoint: they are read from the torchvision VGG16 file (``lpips_path`` or the
  torch hub cache) and the heads shipped with ``lpips``. They are held as non-persistent buffers, so the module
  moves with ``.to()`` but has no parameters (no optimiser, no DDP, no gradient) and no ``state_dict`` entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from open_magvit2.lpips_net import VGG16, load_lpips
from open_magvit2.weight_files import hub_checkpoint_dir


def _parameters_to_buffers(module: nn.Module) -> None:
    """Turn every parameter and buffer of ``module`` into a non-persistent buffer (frozen, never saved)."""
    for m in module.modules():
        for name, p in list(m.named_parameters(recurse=False)):
            delattr(m, name)
            m.register_buffer(name, p.detach(), persistent=False)
        for name, b in list(m.named_buffers(recurse=False)):
            delattr(m, name)
            m.register_buffer(name, b, persistent=False)


def frames(x: Tensor) -> Tensor:
    """(B, C, T, H, W) → (B·T, C, H, W), a sample's frames consecutive (docs/design.md O-29: L1, LPIPS per frame)."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


class PerceptualLoss(nn.Module):
    """LPIPS-VGG v0.1 distance, per image.

    ``forward(x, y)``: two float batches in [−1, 1] of the same shape, (B, 3, H, W) or clips (B, 3, T, H, W) scored
    frame by frame → (N,) distances with N = B or B·T. Gradients flow into both inputs, never into the network.
    Raises ``FileNotFoundError`` naming ``vgg16-397923af.pth``, its URL and where to put it when the file is missing.
    """

    def __init__(self, *, path: str | Path | None = None) -> None:
        super().__init__()
        try:
            model = load_lpips("vgg", path)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"the LPIPS perceptual loss needs the torchvision VGG16 ImageNet weights {VGG16.filename} "
                f"({VGG16.url}): put the file in {hub_checkpoint_dir()} or set `lpips_path` in the loss config to "
                f"its path (or set `perceptual_weight` to 0 to train without LPIPS). {e}"
            ) from None
        self.weights_path = Path(model.weights_path)
        _parameters_to_buffers(model)
        self.lpips = model.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Always eval: the heads' dropout stays off in training (docs/design.md O-19, fixed on purpose)."""
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape or x.dim() not in (4, 5) or x.shape[1] != 3:
            raise ValueError(
                "LPIPS expects two RGB batches of the same shape, (B, 3, H, W) or (B, 3, T, H, W); got "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        if x.dim() == 5:
            x, y = frames(x), frames(y)
        return self.lpips(x, y).flatten()  # (N, 1, 1, 1) → (N,)

    def official_keys(self) -> list[str]:
        """Tensor names in the official layout (``loss.perceptual_loss.`` stripped): ``scaling_layer.shift``, …,
        ``net.slice3.12.weight``, …, ``lin4.model.1.weight``."""
        return [name for name, _ in self.lpips.named_buffers()]

    @torch.no_grad()
    def load_official_weights(self, state_dict: Mapping[str, Tensor]) -> None:
        """Copy an official ``loss.perceptual_loss.*`` state dict (prefix stripped) into the network, strictly.

        Not needed for training (the weights come from the VGG16 file and ``lpips``); used to compare with
        official numbers computed with other LPIPS weights.
        """
        own = dict(self.lpips.named_buffers())
        missing, unexpected = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
        shapes = [k for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
        if missing or unexpected or shapes:
            raise ValueError(
                f"LPIPS weights do not match: missing {missing[:4]}, unexpected {unexpected[:4]}, shapes {shapes[:4]}"
            )
        for k, t in own.items():
            t.copy_(state_dict[k])
