"""Building blocks of the tokenizers, written once for 2D images and causal-3D video (docs/design.md O-05, O-25, O-26).

``dims=2`` gives the image model's plain ``nn.Conv2d`` layers; ``dims=3`` wraps ``nn.Conv3d`` in
:class:`CausalConv3d` (state-dict name ``.conv_1``, docs/design.md O-25) with causal zero padding in time.
Everything else (ResBlock, down/upsampling, adaptive GroupNorm) is shared.

**Inference fast path.** With autograd off (``torch.no_grad`` / ``torch.inference_mode``) the blocks apply SiLU
and the residual add in place and the 2-D model runs channels-last on the devices that ``precision.CHANNELS_LAST``
lists; values are the same (channels-last only changes the convolutions' summation order, within the fixtures'
1e-5). With autograd on, every op is the plain out-of-place one, so training is differentiable and unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from open_magvit2.precision import channels_last
from open_magvit2.tokenizer.config import GROUPS

NORM_EPS = 1e-6  # every GroupNorm and the AGN variance floor (docs/design.md O-05, O-06)


def _triple(v: int | tuple[int, ...], dims: int) -> tuple[int, ...]:
    return (v,) * dims if isinstance(v, int) else tuple(v)


class CausalConv3d(nn.Module):
    """Conv3d with zero padding k//2 in H and W, and k_t − 1 frames in front in time (``ConvBlock3D``,
    docs/design.md O-25).

    A one-frame input (an image through a video tokenizer, single-frame training) sees only zeros under every
    temporal tap but the last, so it runs as the 2-D convolution with that tap: the same sum without the k_t − 1
    products with zero (docs/design.md "One-frame clips"), k_t× fewer operations.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int | tuple[int, int, int] = 1, *, bias: bool) -> None:
        super().__init__()
        self.conv_1 = nn.Conv3d(cin, cout, kernel, stride=stride, padding=0, bias=bias)
        kt, kh, kw = self.conv_1.kernel_size
        self.pad = (kw // 2, kw // 2, kh // 2, kh // 2, kt - 1, 0)  # F.pad order: W, H, T

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T, H, W)
        conv = self.conv_1
        if x.shape[2] == 1:
            kh, kw = conv.kernel_size[1:]
            y = F.conv2d(x[:, :, 0], conv.weight[:, :, -1], conv.bias, conv.stride[1:], (kh // 2, kw // 2))
            return y.unsqueeze(2)
        return conv(F.pad(x, self.pad))


def conv_nd(dims: int, cin: int, cout: int, kernel: int, stride: int | tuple[int, ...] = 1, *, bias: bool) -> nn.Module:
    """The model's convolution: ``nn.Conv2d`` with "same" zero padding for images, :class:`CausalConv3d` for video."""
    if dims == 2:
        return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias)
    return CausalConv3d(cin, cout, kernel, stride=_triple(stride, 3), bias=bias)


def group_norm(c: int, affine: bool = True) -> nn.GroupNorm:
    """GN(32, c, eps 1e-6). On 5D input it normalises each group over (T, H, W) jointly (docs/design.md O-27)."""
    return nn.GroupNorm(GROUPS, c, eps=NORM_EPS, affine=affine)


def norm_silu(norm: nn.Module, x: Tensor) -> Tensor:
    """``swish(norm(x))`` (docs/design.md O-05); the SiLU runs in place on the fresh norm output without autograd."""
    return F.silu(norm(x), inplace=not torch.is_grad_enabled())


def inference_layout(x: Tensor) -> Tensor:
    """x in the memory format of the no-grad fast path: channels-last for 4-D input on ``precision.CHANNELS_LAST``
    devices, else unchanged (autograd on, video, other devices). Same values either way."""
    if x.dim() == 4 and not torch.is_grad_enabled() and channels_last(x.device):
        return x.contiguous(memory_format=torch.channels_last)
    return x


class ResBlock(nn.Module):
    """``h = conv1(swish(norm1(x))); h = conv2(swish(norm2(h))); return h + shortcut(x)`` (docs/design.md O-05).

    Convs have no bias; ``nin_shortcut`` (1×1) exists only when cin != cout. Registration order (norm1, norm2,
    conv1, conv2, nin_shortcut) keeps the official state-dict order.
    """

    def __init__(self, dims: int, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = group_norm(cin)
        self.norm2 = group_norm(cout)
        self.conv1 = conv_nd(dims, cin, cout, 3, bias=False)
        self.conv2 = conv_nd(dims, cout, cout, 3, bias=False)
        self.nin_shortcut = conv_nd(dims, cin, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(norm_silu(self.norm2, self.conv1(norm_silu(self.norm1, x))))
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return h + shortcut if torch.is_grad_enabled() else h.add_(shortcut)  # h is conv2's fresh output


def depth_to_space(x: Tensor, block: tuple[int, ...]) -> Tensor:
    """DCR depth-to-space (docs/design.md O-05, O-26):
    ``out[:, k, b·t+a, b·y+i, b·x+j] = x[:, ((a·bh+i)·bw+j)·c + k, t, y, x]``.

    This is not ``F.pixel_shuffle`` order (which puts the channel index first). The output is contiguous
    whatever the input's memory format, as the official ``view/permute/contiguous`` is.
    """
    if x.dim() == 4:  # (B, 4c, h, w) -> (B, c, 2h, 2w)
        return rearrange(x, "b (i j c) h w -> b c (h i) (w j)", i=block[0], j=block[1])
    return rearrange(x, "b (a i j c) t h w -> b c (t a) (h i) (w j)", a=block[0], i=block[1], j=block[2])


class Upsampler(nn.Module):
    """``conv1`` to c·prod(block) channels, then DCR depth-to-space (docs/design.md O-05, O-26).

    With a temporal block of 2 the first latent frame is emitted once, not twice: T frames become 2T − 1
    (drop frame 1 of the 2T, or keep only frame 0 when T = 1).
    """

    def __init__(self, dims: int, c: int, block: tuple[int, ...]) -> None:
        super().__init__()
        self.block = block
        self.conv1 = conv_nd(dims, c, c * math.prod(block), 3, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        x = depth_to_space(self.conv1(x), self.block)
        if len(self.block) == 3 and self.block[0] == 2:
            x = torch.cat([x[:, :, :1], x[:, :, 2:]], dim=2) if x.shape[2] > 2 else x[:, :, :1]
        return x


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm without affine, modulated by statistics of the quantised latent (docs/design.md O-06, "AGN").

    ``gamma`` sees the per-channel standard deviation of the code map over all latent positions (the
    *unbiased* variance plus 1e-6 — the official comment says otherwise, the code does this; NaN for a single
    latent position), ``beta`` its mean. For video the statistics span all frames (docs/design.md O-27), which is one
    reason the official video model is not causal.

    The statistics and the ``gamma``/``beta`` projections are computed in float32 whatever the weights' dtype
    (``precision.py``): in bf16 the mean k/N of ±1 codes and the variance would be rounded to 8 bits first.
    """

    def __init__(self, z_channels: int, c: int) -> None:
        super().__init__()
        self.gn = group_norm(c, affine=False)
        self.gamma = nn.Linear(z_channels, c)
        self.beta = nn.Linear(z_channels, c)

    def forward(self, x: Tensor, quantized: Tensor) -> Tensor:
        q = quantized.flatten(2).float()  # (B, z, N) over all latent positions; a no-op for float32
        scale = torch.sqrt(q.var(dim=-1) + NORM_EPS)  # unbiased (N − 1), docs/design.md O-06
        bias = q.mean(dim=-1)
        expand = (...,) + (None,) * (x.dim() - 2)
        gamma = _linear_f32(self.gamma, scale).to(x.dtype)[expand]  # (B, c, 1, 1[, 1])
        beta = _linear_f32(self.beta, bias).to(x.dtype)[expand]
        h = self.gn(x)
        return h * gamma + beta if torch.is_grad_enabled() else h.mul_(gamma).add_(beta)


def _linear_f32(linear: nn.Linear, x: Tensor) -> Tensor:
    """``linear(x)`` computed in float32 (the weights are upcast if they are half precision)."""
    return F.linear(x, linear.weight.float(), None if linear.bias is None else linear.bias.float())
