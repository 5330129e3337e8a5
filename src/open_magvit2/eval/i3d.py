"""Inflated Inception-V1 (I3D, Carreira & Zisserman 2017) as the ``pytorch_i3d`` port the official rFVD uses.

Written here because no package ships it (see docs/design.md, "Evaluation"). State-dict keys and arithmetic match
the port's ``InceptionI3d(400, in_channels=3)`` loading ``i3d_pretrained_400.pt`` (the VideoGPT release, copied
by the official ``metrics/pytorch_i3d.py``): TensorFlow "SAME" padding computed per input size and applied with
zeros before every conv and max-pool, BatchNorm eps 1e-5, and the output = 400 Kinetics logits after
AvgPool3d(2, 7, 7), the 1×1×1 logits conv, spatial squeeze and a mean over the remaining time steps
(docs/design.md O-50).

Input (B, 3, T, 224, 224) in [−1, 1]; output (B, 400).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BN_EPS = 1e-5  # the port used by the official code (VideoGPT lineage); piergiaj's original has 1e-3


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding of one dimension as (front, back): the extra pixel goes to the back."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad_same(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> Tensor:
    t, h, w = x.shape[2:]
    pt, ph, pw = (same_padding(s, k, st) for s, k, st in zip((t, h, w), kernel, stride))
    return F.pad(x, (*pw, *ph, *pt))  # zeros, as the port


class Unit3D(nn.Module):
    """SAME-padded Conv3d → BatchNorm3d → ReLU (the logits layer: conv with bias only)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), *, bn_relu: bool = True) -> None:
        super().__init__()
        self.kernel, self.stride, self.bn_relu = kernel, stride, bn_relu
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, padding=0, bias=not bn_relu)
        if bn_relu:
            self.bn = nn.BatchNorm3d(cout, eps=BN_EPS, momentum=0.001)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        return F.relu(self.bn(x)) if self.bn_relu else x


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches: 1×1; 1×1→3×3×3; 1×1→3×3×3; max-pool→1×1. ``c`` = the port's six channel counts."""

    def __init__(self, cin: int, c: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.b0 = Unit3D(cin, c[0])
        self.b1a, self.b1b = Unit3D(cin, c[1]), Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(cin, c[3]), Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a, self.b3b = MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, c[5])

    def forward(self, x: Tensor) -> Tensor:
        branches = (self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x)))
        return torch.cat(branches, dim=1)


class InceptionI3d(nn.Module):
    """I3D up to the Kinetics logits; module names are the port's end-point names (= its state-dict keys)."""

    def __init__(self, num_classes: int = 400, in_channels: int = 3) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(192, (64, 96, 128, 16, 32, 32))
        self.Mixed_3c = InceptionModule(256, (128, 128, 192, 32, 96, 64))
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionModule(480, (192, 96, 208, 16, 48, 64))
        self.Mixed_4c = InceptionModule(512, (160, 112, 224, 24, 64, 64))
        self.Mixed_4d = InceptionModule(512, (128, 128, 256, 24, 64, 64))
        self.Mixed_4e = InceptionModule(512, (112, 144, 288, 32, 64, 64))
        self.Mixed_4f = InceptionModule(528, (256, 160, 320, 32, 128, 128))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(832, (256, 160, 320, 32, 128, 128))
        self.Mixed_5c = InceptionModule(832, (384, 192, 384, 48, 128, 128))
        self.avg_pool = nn.AvgPool3d((2, 7, 7), stride=(1, 1, 1))
        self.dropout = nn.Dropout(0.5)  # inactive in eval mode; kept for the port's structure
        self.logits = Unit3D(1024, num_classes, bn_relu=False)

    def features(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) → (B, 1024, T', H/32, W/32) before the average pool."""
        for module in list(self.children())[:-3]:
            x = module(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.logits(self.dropout(self.avg_pool(self.features(x))))  # (B, 400, T'', 1, 1) at 224²
        return x.squeeze(4).squeeze(3).mean(dim=2)  # (B, 400)


def i3d_input_uint8(clips: Tensor) -> Tensor:
    """uint8 (B, 3, T, H, W) → I3D input (B, 3, T, 224, 224) with the official arithmetic (docs/design.md O-50):
    per-frame bilinear resize (no antialias) of the uint8 values, then ``2x/255 − 1``."""
    b, c, t, h, w = clips.shape
    frames = clips.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w).float()  # (B·T, 3, H, W)
    frames = F.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False)
    return (2.0 * frames / 255.0 - 1).view(b, t, c, 224, 224).transpose(1, 2)
