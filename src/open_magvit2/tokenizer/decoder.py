"""The tokenizer decoder (docs/design.md O-07, O-26): ±1 code maps → images or clips (unbounded, not tanh'ed)."""

from __future__ import annotations

from torch import Tensor, nn

from open_magvit2.tokenizer.config import TokenizerConfig
from open_magvit2.tokenizer.layers import (
    AdaptiveGroupNorm,
    ResBlock,
    Upsampler,
    conv_nd,
    group_norm,
    inference_layout,
    norm_silu,
)


class DecoderLevel(nn.Module):
    """R ResBlocks, then (for levels i ≥ 1) an :class:`Upsampler` named ``upsample``."""

    def __init__(self, dims: int, cin: int, cout: int, num_blocks: int, block: tuple[int, ...] | None) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResBlock(dims, cin if j == 0 else cout, cout) for j in range(num_blocks))
        self.upsample = None if block is None else Upsampler(dims, cout, block)

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.block:
            x = blk(x)
        return x if self.upsample is None else self.upsample(x)


class Decoder(nn.Module):
    """``conv_in`` → ``mid_block`` → for i = L−1 … 0: AGN(i), level i (with upsampling for i ≥ 1) → GN → swish →
    ``conv_out``. Every AGN is conditioned on the decoder's input code map (docs/design.md O-06).

    ``up`` and ``adaptive`` are indexed by level in ascending order, as the official state dict is.
    """

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        d, r, z = config.dims, config.num_res_blocks, config.z_channels
        widths = [config.ch * m for m in config.ch_mult]
        n = len(widths)
        c_in = [widths[i + 1] if i < n - 1 else widths[-1] for i in range(n)]  # input width of level i
        self.conv_in = conv_nd(d, z, widths[-1], 3, bias=True)
        self.mid_block = nn.ModuleList(ResBlock(d, widths[-1], widths[-1]) for _ in range(r))
        self.up = nn.ModuleList()
        for i in range(n):
            block = None
            if i > 0:  # time upsampling mirrors the encoder's time downsampling of level i − 1 (docs/design.md O-26)
                block = (2, 2) if d == 2 else (config.temporal_strides[i - 1], 2, 2)
            self.up.append(DecoderLevel(d, c_in[i], widths[i], r, block))
        self.adaptive = nn.ModuleList(AdaptiveGroupNorm(z, c_in[i]) for i in range(n))
        self.norm_out = group_norm(widths[0])
        self.conv_out = conv_nd(d, widths[0], config.out_channels, 3, bias=True)

    def forward(self, codes: Tensor) -> Tensor:
        codes = inference_layout(codes)  # (B, K, h, w), ±1
        x = self.conv_in(codes)  # (B, ch·m[L−1], h, w)
        for blk in self.mid_block:
            x = blk(x)
        for i in reversed(range(len(self.up))):
            x = self.adaptive[i](x, codes)
            x = self.up[i](x)  # levels i ≥ 1 double H and W (and T where the encoder halved it)
        return self.conv_out(norm_silu(self.norm_out, x)).contiguous()  # (B, C_out, H, W), unbounded
