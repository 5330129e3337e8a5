"""The three official discriminators (docs/design.md O-20), with the official module names.

Each one's ``state_dict`` keys equal the official ``loss.discriminator.*`` keys with ``loss.discriminator.``
stripped, so the discriminator of an official training checkpoint loads strictly (BatchNorm running statistics
and the blur kernel buffer included).

* ``"patchgan"``: the pix2pix PatchGAN (``NLayerDiscriminator``) of 128_L, 256_L and pretrain 262144;
* ``"blur"``: the MaskBit-style GroupNorm discriminator with blur downsampling (``NLayerDiscriminatorv2``) of
  pretrain 16384;
* ``"patchgan3d"``: the 3D PatchGAN (``NLayerDiscriminator3D``) of the UCF-101 video tokenizer.

Inputs: images (B, C, H, W) or, for ``"patchgan3d"``, clips (B, C, T, H, W), float in about [−1, 1].
Outputs: a map of real/fake logits (B, 1, h, w) or (B, 1, t, h, w).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DISCRIMINATORS = ("patchgan", "blur", "patchgan3d")


def official_init(module: nn.Module) -> nn.Module:
    """The official ``weights_init`` (docs/design.md O-20): conv weights N(0, 0.02), norm weights N(1, 0.02), norm
    bias 0.

    Conv biases keep PyTorch's default initialisation, as officially.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module


# ---- PatchGAN (2D and 3D) -----------------------------------------------------------------------------------------


class PatchGAN(nn.Module):
    """pix2pix PatchGAN with BatchNorm and LeakyReLU(0.2) (docs/design.md O-20), for images (``dims=2``) or clips
    (``dims=3``).

    ``dims=2`` (``NLayerDiscriminator``): 4×4 convs, padding 1, strides 2, 2, 2, 1, 1; 2,765,633 parameters;
    (B, 3, 256, 256) → (B, 1, 30, 30). ``dims=3`` (``NLayerDiscriminator3D``): 3×3×3 convs, padding 1, strides
    2, (2, 2, 2), (1, 2, 2), 1, 1; 4,665,729 parameters; (B, 3, 17, 128, 128) → (B, 1, 5, 16, 16).
    Keys ``main.{0,2,3,5,6,8,9,11}.*``: only the first and the last conv have a bias (BatchNorm follows the others).
    """

    def __init__(self, *, dims: int = 2, in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"PatchGAN dims must be 2 (images) or 3 (video), got {dims}")
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        k = 4 if dims == 2 else 3
        layers: list[nn.Module] = [conv(in_channels, ndf, k, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for n in range(1, n_layers + 1):  # n_layers − 1 strided blocks, then one stride-1 block
            out = ndf * min(2**n, 8)
            if n == n_layers:
                stride: int | tuple[int, ...] = 1
            elif dims == 2:
                stride = 2
            else:
                stride = (2 if n == 1 else 1, 2, 2)  # time is halved once (17 → 9 → 5)
            layers += [conv(width, out, k, stride=stride, padding=1, bias=False), norm(out), nn.LeakyReLU(0.2, True)]
            width = out
        layers.append(conv(width, 1, k, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


# ---- the blur / GroupNorm discriminator (MaskBit style) -----------------------------------------------------------


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Total padding of TensorFlow's "SAME" convolution along one axis (docs/design.md O-20); the left gets half."""
    return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def _pad_same(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]) -> Tensor:
    ph = same_padding(x.shape[-2], kernel[0], stride[0], dilation[0])
    pw = same_padding(x.shape[-1], kernel[1], stride[1], dilation[1])
    if ph or pw:
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
    return x


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TF-"SAME" zero padding computed from the input size (official ``Conv2dSame``)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(_pad_same(x, self.kernel_size, self.stride, self.dilation))  # type: ignore[arg-type]


class BlurDownsample(nn.Module):
    """Depthwise stride-2 blur with the normalised outer product of ``taps`` (official ``BlurBlock``).

    The kernel is a persistent buffer ``kernel`` (1, 1, k, k) summing to 1, as in the official state dict.
    """

    def __init__(self, taps: tuple[int, ...] = (1, 3, 3, 1)) -> None:
        super().__init__()
        t = torch.tensor(taps, dtype=torch.float32)
        kernel = t[None, :] * t[:, None]
        self.register_buffer("kernel", (kernel / kernel.sum())[None, None])

    def forward(self, x: Tensor) -> Tensor:
        k = self.kernel.shape[-1]
        x = _pad_same(x, (k, k), (2, 2), (1, 1))
        weight = self.kernel.to(x.dtype).expand(x.shape[1], -1, -1, -1)  # (C, 1, k, k)
        return F.conv2d(x, weight, stride=2, groups=x.shape[1])


class BlurDiscriminator(nn.Module):
    """The pretrain-16384 discriminator (official ``NLayerDiscriminatorv2``, ``blur_resample``; docs/design.md O-20).

    ``block_in`` = 5×5 SAME conv + LeakyReLU(0.1); ``num_stages`` blocks of 3×3 SAME conv → blur ↓2 → GroupNorm(32)
    → LeakyReLU(0.1), widths hidden·(1, 2, 4); ``to_logits`` = 1×1 conv → LeakyReLU(0.1) → 5×5 conv to 1 channel.
    PyTorch default initialisation (no ``weights_init``). 1,909,889 parameters; (B, 3, 256, 256) → (B, 1, 32, 32).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        hidden_channels: int = 128,
        num_stages: int = 3,
        blur_taps: tuple[int, ...] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        mult = (1, *(2**s for s in range(num_stages)))  # stage s: hidden·mult[s] → hidden·mult[s + 1]
        self.block_in = nn.Sequential(Conv2dSame(in_channels, hidden_channels, 5), nn.LeakyReLU(0.1))
        self.blocks = nn.ModuleList()
        for s in range(num_stages):
            c_in, c_out = hidden_channels * mult[s], hidden_channels * mult[s + 1]
            self.blocks.append(
                nn.Sequential(
                    Conv2dSame(c_in, c_out, 3), BlurDownsample(blur_taps), nn.GroupNorm(32, c_out), nn.LeakyReLU(0.1)
                )
            )
        c = hidden_channels * mult[-1]
        self.to_logits = nn.Sequential(Conv2dSame(c, c, 1), nn.LeakyReLU(0.1), Conv2dSame(c, 1, 5))

    def forward(self, x: Tensor) -> Tensor:
        h = self.block_in(x)
        for block in self.blocks:
            h = block(h)
        return self.to_logits(h)


# ---- factory ------------------------------------------------------------------------------------------------------


def discriminator_dims(kind: str) -> int:
    """2 for the image discriminators, 3 for ``"patchgan3d"``."""
    if kind not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator {kind!r}; choose one of {DISCRIMINATORS}")
    return 3 if kind == "patchgan3d" else 2


def build_discriminator(kind: str, *, in_channels: int = 3) -> nn.Module:
    """The official discriminator ``kind`` (one of :data:`DISCRIMINATORS`), initialised as officially."""
    dims = discriminator_dims(kind)
    if kind == "blur":
        return BlurDiscriminator(in_channels=in_channels)
    return official_init(PatchGAN(dims=dims, in_channels=in_channels))
