"""Official-style baselines for the speed benchmarks: the official forward and sampler, op for op, on our weights.

The official Open-MAGVIT2 code (TencentARC/SEED-Voken) is not a dependency, so the benchmarks compare against
re-implementations that run the *same operations in the same order* as the official modules
(``improved_model.py``, ``lookup_free_quantize.py``, ``gpt.py``: docs/design.md O-05–O-07, O-10, O-33, O-39):

* :class:`OfficialStyleTokenizer` — swish as ``x·sigmoid(x)``, depth-to-space by view/permute/contiguous, the AGN
  statistics through ``rearrange``, the eval-mode LFQ with ``pack``/``reduce`` and its channels-last strided
  ``quant`` fed straight to the decoder (which therefore runs channels-last, as the official decoder does), and
  ``style = z.clone()``. Same state-dict keys as ours, so it loads ``ImageTokenizer.state_dict()`` strictly.
* :func:`official_style_sample` — ``sample_Open_MAGVIT2``: spatial caches of 264 slots attached per run, a
  (rows, 264, 264) boolean causal-mask table gathered at every step, intra-block caches of 264 slots
  **re-allocated at every step** (docs/design.md O-40), the official RoPE (``contiguous`` + float32 views),
  ``repeat_interleave`` of keys/values, masked SDPA over all 264 slots, ``torch.cat`` of the growing sequences,
  and ``torch.multinomial`` on the global RNG in the official order (pre, then post, per step).

``tests/benchmarks/test_official_style.py`` pins both to the golden fixtures of the official code, so a speed-up
measured against them is a speed-up over the official computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import pack, rearrange, reduce, unpack
from torch import Tensor, nn

from open_magvit2.generator.model import GeneratorTransformer, find_multiple
from open_magvit2.tokenizer import TokenizerConfig

# ------------------------------------------------------------------------------------------------ tokenizer


def swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)  # the official activation: two kernels and one extra tensor


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.cin, self.cout = cin, cout
        self.norm1 = nn.GroupNorm(32, cin, eps=1e-6)
        self.norm2 = nn.GroupNorm(32, cout, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        residual = x
        x = self.conv1(swish(self.norm1(x)))
        x = self.conv2(swish(self.norm2(x)))
        if self.cin != self.cout:
            residual = self.nin_shortcut(residual)
        return x + residual


def depth_to_space(x: Tensor, block: int) -> Tensor:
    c, h, w = x.shape[-3:]
    x = x.view(-1, block, block, c // block**2, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.contiguous().view(*x.shape[:1], c // block**2, h * block, w * block)


class Upsampler(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim * 4, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return depth_to_space(self.conv1(x), 2)


class AdaptiveGroupNorm(nn.Module):
    def __init__(self, z: int, c: int) -> None:
        super().__init__()
        self.gn = nn.GroupNorm(32, c, eps=1e-6, affine=False)
        self.gamma, self.beta = nn.Linear(z, c), nn.Linear(z, c)

    def forward(self, x: Tensor, quantizer: Tensor) -> Tensor:
        B, C = x.shape[:2]
        scale = (rearrange(quantizer, "b c h w -> b c (h w)").var(dim=-1) + 1e-6).sqrt()
        scale = self.gamma(scale).view(B, C, 1, 1)
        bias = self.beta(rearrange(quantizer, "b c h w -> b c (h w)").mean(dim=-1)).view(B, C, 1, 1)
        return scale * self.gn(x) + bias


def _level(cin: int, cout: int, r: int) -> nn.ModuleList:
    return nn.ModuleList(ResBlock(cin if j == 0 else cout, cout) for j in range(r))


class Encoder(nn.Module):
    def __init__(self, c: TokenizerConfig) -> None:
        super().__init__()
        widths = [c.ch * m for m in c.ch_mult]
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1, bias=False)
        self.down = nn.ModuleList()
        for i, w in enumerate(widths):
            down = nn.Module()
            down.block = _level(c.ch if i == 0 else widths[i - 1], w, c.num_res_blocks)
            if i < len(widths) - 1:
                down.downsample = nn.Conv2d(w, w, 3, stride=2, padding=1)
            self.down.append(down)
        self.mid_block = _level(widths[-1], widths[-1], c.num_res_blocks)
        self.norm_out = nn.GroupNorm(32, widths[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(widths[-1], c.z_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for i, down in enumerate(self.down):
            for blk in down.block:
                x = blk(x)
            if i < len(self.down) - 1:
                x = down.downsample(x)
        for blk in self.mid_block:
            x = blk(x)
        return self.conv_out(swish(self.norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, c: TokenizerConfig) -> None:
        super().__init__()
        widths = [c.ch * m for m in c.ch_mult]
        n = len(widths)
        self.conv_in = nn.Conv2d(c.z_channels, widths[-1], 3, padding=1)
        self.mid_block = _level(widths[-1], widths[-1], c.num_res_blocks)
        self.up, self.adaptive = nn.ModuleList(), nn.ModuleList()
        block_in = widths[-1]
        for i in reversed(range(n)):
            self.adaptive.insert(0, AdaptiveGroupNorm(c.z_channels, block_in))
            up = nn.Module()
            up.block = _level(block_in, widths[i], c.num_res_blocks)
            block_in = widths[i]
            if i > 0:
                up.upsample = Upsampler(block_in)
            self.up.insert(0, up)
        self.norm_out = nn.GroupNorm(32, widths[0], eps=1e-6)
        self.conv_out = nn.Conv2d(widths[0], c.out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        style = z.clone()
        z = self.conv_in(z)
        for blk in self.mid_block:
            z = blk(z)
        for i in reversed(range(len(self.up))):
            z = self.adaptive[i](z, style)
            for blk in self.up[i].block:
                z = blk(z)
            if i > 0:
                z = self.up[i].upsample(z)
        return self.conv_out(swish(self.norm_out(z)))


class OfficialStyleLFQ(nn.Module):
    """Eval-mode official LFQ: signs, indices by a masked sum, straight-through codes (strided like the official)."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.register_buffer("mask", 2 ** torch.arange(bits), persistent=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = rearrange(x, "b d ... -> b ... d")
        x, ps = pack([x], "b * d")
        x = rearrange(x, "b n (c d) -> b n c d", c=1)
        one = torch.tensor([1.0], device=x.device, dtype=x.dtype)
        quantized = torch.where(x > 0, one, -one)
        indices = reduce((quantized > 0).int() * self.mask.int(), "b n c d -> b n c", "sum")
        quantized = x + (quantized - x).detach()
        quantized = rearrange(quantized, "b n c d -> b n (c d)")
        quantized = rearrange(unpack(quantized, ps, "b * d")[0], "b ... d -> b d ...")
        return quantized, unpack(indices, ps, "b * c")[0].flatten()


class OfficialStyleTokenizer(nn.Module):
    """The official ``VQModel`` inference path: ``encode`` → (quant, indices), ``decode(quant)``."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.encoder, self.decoder = Encoder(config), Decoder(config)
        self.quantize = OfficialStyleLFQ(config.z_channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, 3, H, W) in [−1, 1] → (decoded (B, 3, H, W), indices (B·h·w,) int32 sums as in the official)."""
        quant, indices = self.quantize(self.encoder(x))
        return self.decoder(quant), indices


# ---------------------------------------------------------------------------------------------------- sampler


class _Cache:
    """The official ``KVCache``: zero buffers of find_multiple(257, 8) = 264 slots, written at ``input_pos``."""

    def __init__(self, rows: int, heads: int, length: int, head_dim: int, dtype: torch.dtype, device) -> None:
        self.k = torch.zeros(rows, heads, length, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros(rows, heads, length, head_dim, dtype=dtype, device=device)

    def update(self, input_pos: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.k[:, :, input_pos] = k
        self.v[:, :, input_pos] = v
        return self.k, self.v


def _rope(x: Tensor, freqs: Tensor) -> Tensor:
    """Official ``apply_rotary_emb``: contiguous, float32, and the float32 result is not cast back."""
    if not x.is_contiguous():
        x = x.contiguous()
    xs = x.float().view(*x.shape[:-1], -1, 2)
    f = freqs.view(1, xs.size(1), 1, xs.size(3), 2).to(xs.dtype)
    out = torch.stack(
        [xs[..., 0] * f[..., 0] - xs[..., 1] * f[..., 1], xs[..., 1] * f[..., 0] + xs[..., 0] * f[..., 1]], dim=-1
    )
    return out.flatten(3)


def _rmsnorm(norm: nn.Module, x: Tensor) -> Tensor:
    xf = x.float()
    return (xf * torch.rsqrt(torch.mean(xf * xf, dim=-1, keepdim=True) + norm.eps)).type_as(x) * norm.weight


def _linear(layer: nn.Module, x: Tensor) -> Tensor:
    return F.linear(x, layer.weight)  # the official plain nn.Linear (bias-free), not our decode path


def _block(block: nn.Module, x: Tensor, freqs: Tensor, input_pos: Tensor, mask: Tensor, cache: _Cache) -> Tensor:
    attn, ffn = block.attention, block.feed_forward
    u = _rmsnorm(block.attention_norm, x)
    bsz, seqlen, dim = u.shape
    q, k, v = _linear(attn.wqkv, u).split([dim, dim, dim], dim=-1)
    q = _rope(q.view(bsz, seqlen, attn.n_heads, attn.head_dim), freqs)
    k = _rope(k.view(bsz, seqlen, attn.n_heads, attn.head_dim), freqs)
    v = v.view(bsz, seqlen, attn.n_heads, attn.head_dim)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    keys, values = cache.update(input_pos, k, v)
    keys, values = keys.repeat_interleave(1, dim=1), values.repeat_interleave(1, dim=1)
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=False)
    h = x + _linear(attn.wo, out.transpose(1, 2).contiguous().view(bsz, seqlen, dim))
    u = _rmsnorm(block.ffn_norm, h)
    return h + _linear(ffn.w2, F.silu(_linear(ffn.w1, u)) * _linear(ffn.w3, u))


def _filter(logits: Tensor, top_k: int, top_p: float) -> Tensor:
    """The official ``top_k_top_p_filtering`` (HF), modifying ``logits`` in place."""
    if top_k > 0:
        logits[logits < torch.topk(logits, min(top_k, logits.size(-1)))[0][..., -1, None]] = -float("inf")
    if top_p < 1.0:
        sorted_logits, sorted_indices = torch.sort(logits, descending=True)
        remove = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1) > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = 0
        logits[remove.scatter(1, sorted_indices, remove)] = -float("inf")
    return logits


def _sample(logits: Tensor, temperature: float, top_k: int, top_p: float) -> Tensor:
    logits = logits[:, -1, :] / temperature
    if top_k > 0 or top_p < 1.0:
        logits = _filter(logits, top_k, top_p)
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)


@torch.no_grad()
def official_style_sample(
    model: GeneratorTransformer,
    labels: Tensor,
    cfg_scale: tuple[float, float],
    temperature: tuple[float, float] = (1.0, 1.0),
    top_k: tuple[int, int] = (0, 0),
    top_p: tuple[float, float] = (1.0, 1.0),
) -> tuple[Tensor, Tensor]:
    """``sample_Open_MAGVIT2`` on our weights: labels (B,) → (pre, post), each (B, N) int64, global RNG.

    Like the official function, CFG needs both scales > 1 or both ≤ 1 (docs/design.md O-41).
    """
    c, device = model.config, labels.device
    dtype = model.class_emb.embedding_table.weight.dtype
    cfg = cfg_scale[0] > 1.0
    cond = labels[:, None]  # (B, 1)
    x = torch.cat([cond, torch.full_like(cond, c.num_classes)]) if cfg else cond
    rows, length = x.shape[0], find_multiple(1 + c.seq_len, 8)  # 264 slots for 1 + 256 positions
    spatial = [_Cache(rows, c.n_heads, length, c.head_dim, dtype, device) for _ in model.spatial_blocks]
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=device))[None].repeat(rows, 1, 1)
    freqs = model.rope
    sample_pre, sample_post = cond, cond
    input_pos = torch.tensor([0], device=device)
    for n in range(c.seq_len):
        if n > 0:
            input_pos = input_pos + 1
        # generate_context: the class token first, then the sum of the previous step's sub-token embeddings
        h = model.class_emb.embedding_table(x[:, 0])[:, None] if n == 0 else model.pre_emb(x[0]) + model.post_emb(x[1])
        mask = causal[:rows, None, input_pos]
        for block, cache in zip(model.spatial_blocks, spatial):
            h = _block(block, h, freqs[input_pos], input_pos, mask, cache)
        intra = [_Cache(rows, c.n_heads, length, c.head_dim, dtype, device) for _ in model.factorized_blocks]
        x, factor_x = [], None
        for i in range(2):  # decode_subtoken: intra position 0 (pre) then 1 (post given pre)
            pos = torch.tensor([i], device=device)
            ctx = h.reshape(rows, -1, c.dim) if i == 0 else model.pre_emb(factor_x[0]).reshape(rows, -1, c.dim)
            for block, cache in zip(model.factorized_blocks, intra):
                ctx = _block(block, ctx, freqs[pos], pos, causal[:rows, None, pos], cache)
            logits = _linear(model.head[i], _rmsnorm(model.norm, ctx.reshape(rows, 1, -1, c.dim))[:, :, 0, :])
            if cfg_scale[i] > 1.0:
                cond_logits, uncond_logits = torch.split(logits, rows // 2, dim=0)
                logits = uncond_logits + (cond_logits - uncond_logits) * cfg_scale[i]
            tok = _sample(logits, temperature[i], top_k[i], top_p[i])  # (B, 1)
            if i == 0:
                sample_pre = torch.cat((sample_pre, tok), dim=1)
            else:
                sample_post = torch.cat((sample_post, tok), dim=1)
            tok_rows = torch.cat([tok, tok]) if cfg_scale[i] > 1.0 else tok
            factor_x = [tok_rows]
            x.append(tok_rows)
    return sample_pre[:, 1:], sample_post[:, 1:]
