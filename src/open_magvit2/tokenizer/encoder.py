"""The tokenizer encoder (docs/design.md O-07, O-26): images or clips → raw LFQ logits z (no quant_conv)."""

from __future__ import annotations

from torch import Tensor, nn

from open_magvit2.tokenizer.config import TokenizerConfig
from open_magvit2.tokenizer.layers import ResBlock, conv_nd, group_norm, inference_layout, norm_silu


class EncoderLevel(nn.Module):
    """R ResBlocks, then (except at the last level) a stride-2 3×3 conv with bias, named ``downsample``."""

    def __init__(self, dims: int, cin: int, cout: int, num_blocks: int, stride: tuple[int, ...] | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResBlock(dims, cin if j == 0 else cout, cout) for j in range(num_blocks))
        self.downsample = None if stride is None else conv_nd(dims, cout, cout, 3, stride, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.block:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class Encoder(nn.Module):
    """``conv_in`` (no bias) → levels with downsampling → ``mid_block`` → GN → swish → 1×1 ``conv_out``.

    Input (B, C_in, H, W) [or (B, C_in, T, H, W)] in [−1, 1]; output (B, K, H/f, W/f) [(B, K, t, H/f, W/f)].
    """

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        c, d, r = config.ch, config.dims, config.num_res_blocks
        widths = [c * m for m in config.ch_mult]
        self.conv_in = conv_nd(d, config.in_channels, c, 3, bias=False)
        self.down = nn.ModuleList()
        for i, width in enumerate(widths):
            last = i == len(widths) - 1
            stride = None if last else ((2, 2) if d == 2 else (config.temporal_strides[i], 2, 2))
            self.down.append(EncoderLevel(d, c if i == 0 else widths[i - 1], width, r, stride))
        self.mid_block = nn.ModuleList(ResBlock(d, widths[-1], widths[-1]) for _ in range(r))
        self.norm_out = group_norm(widths[-1])
        self.conv_out = conv_nd(d, widths[-1], config.z_channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(inference_layout(x))  # (B, ch, H, W)
        for level in self.down:
            x = level(x)  # each level but the last halves H and W (and T where its temporal stride is 2)
        for blk in self.mid_block:
            x = blk(x)  # (B, ch·m[L−1], H/f, W/f)
        return self.conv_out(norm_silu(self.norm_out, x)).contiguous()  # (B, K, H/f, W/f): the LFQ logits z
