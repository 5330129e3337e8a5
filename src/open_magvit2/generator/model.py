"""The class-conditional factorised AR transformer (paper §2.3 "next sub-token prediction"; docs/design.md
O-31–O-34, O-36).

A Llama-style decoder predicts each 2^K-way LFQ token as M sub-tokens of k1, …, kM bits (k1 + … + kM = K,
LSB-first: sub-token 1 holds the lowest k1 bits; the official checkpoints use M = 2, (6, 12), whose sub-tokens are
called pre and post). The spatial transformer reads ``[class, E[0], …, E[N−2]]`` with
``E[n] = emb_1[s_1,n] + … + emb_M[s_M,n]`` and yields h[n]; a small intra transformer then reads the length-M
sequence ``[h[n], emb_1[s_1,n], …, emb_{M−1}[s_{M−1},n]]`` and M heads give p(s_i,n | ctx, s_1,n … s_{i−1},n)
(paper eq. 5–6).

Parameter names (docs/design.md O-32): ``pre_emb`` embeds sub-token 1, ``post_emb`` sub-token M (M ≥ 2),
``mid_emb.{j}`` sub-token j + 2 (M ≥ 3 only), ``head.{i}`` gives sub-token i + 1; for M = 2 these are exactly the
official keys, for M = 1 there is ``pre_emb`` and ``head.0`` only.

Reading order: config + presets, helpers (RMSNorm, 2D RoPE), blocks, model. Module and parameter names are the
official ``transformer.*`` state-dict keys (docs/design.md O-32), registered in the official order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from open_magvit2.generator.kv_cache import KVCache
from open_magvit2.quantize.codes import _normalize_factorized_bits


def find_multiple(n: int, k: int) -> int:
    """Round n up to a multiple of k."""
    return n if n % k == 0 else n + k - n % k


def swiglu_hidden(dim: int, multiple_of: int = 256) -> int:
    """The official SwiGLU width rule (docs/design.md O-31): ``find_multiple(int(2·4·dim/3), multiple_of)``; 2816
    for B."""
    return find_multiple(int(2 * 4 * dim / 3), multiple_of)


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of the factorised AR generator. ``to_dict()`` is what ``save_pretrained`` stores.

    ``num_classes`` real classes; the class table has one more row, the null (unconditional) class
    ``num_classes`` used by label dropout and classifier-free guidance. ``factorized_bits=(k1, …, kM)``: any split
    of the tokenizer's K ≤ 62 bits into M ≥ 1 sub-tokens; the official checkpoints use (6, 12). ``sample_*`` are the
    sampling defaults of ``generate``, one value per sub-token (docs/design.md O-31: they belong to the released
    model, not to the sampler); None gives (1.9, 2.0) and (1.0, 1.0) spread over the M sub-tokens by
    :func:`spread_over_sub_tokens`.
    """

    dim: int = 1024
    n_layers: int = 24  # spatial blocks
    n_intra_layers: int = 2  # "factorized" blocks of the intra (next sub-token) transformer
    n_heads: int = 16
    grid_size: int = 16  # tokens form a grid_size × grid_size raster
    num_classes: int = 1000
    factorized_bits: tuple[int, ...] = (6, 12)
    ffn_hidden: int | None = None  # SwiGLU width; None → the official rule, see ffn_dim
    multiple_of: int = 256
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    # Training-time regularisation (docs/design.md O-31, O-36); none of it is active in eval mode.
    label_dropout: float = 0.1  # labels → null class with this probability
    token_dropout: float = 0.1  # Dropout on the input sequence embeddings
    resid_dropout: float = 0.1  # after the attention output projection
    ffn_dropout: float = 0.1  # after the SwiGLU output projection
    initializer_range: float = 0.02
    sample_cfg_scale: tuple[float, ...] | None = None  # None: (1.9, 2.0) spread over the sub-tokens
    sample_temperature: tuple[float, ...] | None = None  # None: 1.0 for every sub-token
    sample_top_k: tuple[int, ...] | None = None  # None: 0 (off) for every sub-token
    sample_top_p: tuple[float, ...] | None = None  # None: 1.0 (off) for every sub-token
    head_dim: int = field(init=False)
    seq_len: int = field(init=False)  # N = grid_size², tokens per image

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen dataclass: normalise fields and fill the derived ones once
        set_(self, "factorized_bits", _normalize_factorized_bits(self.factorized_bits))
        m = len(self.factorized_bits)
        for name, default in SAMPLING_DEFAULTS.items():
            value = getattr(self, name)
            kind = type(default[0])
            value = spread_over_sub_tokens(default, m) if value is None else tuple(kind(v) for v in value)
            if len(value) != m:
                raise ValueError(f"{name} has {len(value)} values but factorized_bits {self.factorized_bits} makes "
                                 f"{m} sub-tokens; give one value per sub-token")
            set_(self, name, value)
        if self.dim % self.n_heads:
            raise ValueError(f"dim={self.dim} must be divisible by n_heads={self.n_heads}")
        set_(self, "head_dim", self.dim // self.n_heads)
        if self.head_dim % 4:
            raise ValueError(f"head_dim={self.head_dim} must be a multiple of 4 for the 2D RoPE (two axes of pairs)")
        if self.grid_size < 1 or self.num_classes < 1 or self.n_layers < 1 or self.n_intra_layers < 1:
            raise ValueError("grid_size, num_classes, n_layers and n_intra_layers must all be >= 1")
        set_(self, "seq_len", self.grid_size**2)

    @property
    def ffn_dim(self) -> int:
        """SwiGLU hidden width: ``ffn_hidden`` if set, else the official rule :func:`swiglu_hidden`
        (docs/design.md O-31)."""
        return self.ffn_hidden or swiglu_hidden(self.dim, self.multiple_of)

    @property
    def bits(self) -> int:
        """K, bits of a full LFQ token."""
        return sum(self.factorized_bits)

    @property
    def sub_tokens(self) -> int:
        """M, sub-tokens per token."""
        return len(self.factorized_bits)

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        """2^k_i for each sub-token, in order."""
        return tuple(2**k for k in self.factorized_bits)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("head_dim", "seq_len"):
            d.pop(k)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> GeneratorConfig:
        known = {f.name for f in fields(cls) if f.init}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown GeneratorConfig keys {sorted(unknown)}; known keys: {sorted(known)}")
        return cls(**d)


# the sampling defaults a config stores, one value per sub-token; None in a config takes these (a (pre, post)
# pair spread over M sub-tokens by spread_over_sub_tokens); top-k 0 and top-p 1.0 are off
SAMPLING_DEFAULTS: dict[str, tuple] = {"sample_cfg_scale": (1.9, 2.0), "sample_temperature": (1.0, 1.0),
                                       "sample_top_k": (0, 0), "sample_top_p": (1.0, 1.0)}


def spread_over_sub_tokens(values: tuple, m: int) -> tuple:
    """A (pre, post) setting for M sub-tokens: the first value for sub-token 1, the last for every later one;
    ``(1.9, 2.0)`` → ``(1.9, 2.0, 2.0, 2.0)`` for M = 4, ``(1.9,)`` for M = 1 (a pair is itself for M = 2)."""
    values = tuple(values)
    return values[:1] + values[-1:] * (m - 1)


def _preset(dim: int, n_layers: int, n_intra: int, n_heads: int, cfg: tuple, temp: tuple) -> GeneratorConfig:
    return GeneratorConfig(
        dim=dim,
        n_layers=n_layers,
        n_intra_layers=n_intra,
        n_heads=n_heads,
        sample_cfg_scale=cfg,
        sample_temperature=temp,
    )


# Official sizes and sampling settings (docs/design.md O-31). "tiny" is the ar_tiny golden fixture's architecture.
GENERATOR_PRESETS: dict[str, GeneratorConfig] = {
    "B": _preset(1024, 24, 2, 16, (1.9, 2.0), (1.0, 1.0)),
    "L": _preset(1280, 36, 3, 20, (1.9, 1.9), (1.1, 1.0)),
    "XL": _preset(1536, 48, 4, 24, (1.75, 1.85), (1.1, 1.0)),
    "tiny": GeneratorConfig(dim=128, n_layers=2, n_intra_layers=1, n_heads=2, num_classes=10),
}


# --------------------------------------------------------------------------------------------------- helpers


class RMSNorm(nn.Module):
    """``y = (x_f32 · rsqrt(mean(x_f32²) + eps)).to(x.dtype) · weight`` (docs/design.md O-33)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope_2d_table(grid_size: int, head_dim: int, base: float = 10000.0) -> Tensor:
    """The official 2D RoPE table (docs/design.md O-34): (1 + grid², head_dim/2, 2) float32 of (cos, sin).

    Pair j < head_dim/4 rotates by ``y·f_j``, pair j ≥ head_dim/4 by ``x·f_{j−head_dim/4}``, with
    ``f_i = base^(−2i/(head_dim/2))``, for the cell (y, x) of raster position p = y·grid + x at row 1 + p.
    Row 0 (the class token) is all zeros, cos included, so the class token's q and k are exactly 0 — a quirk
    baked into the released weights (docs/design.md O-34). Computed in float32 in the official order of operations.
    """
    half = head_dim // 2
    freqs = 1.0 / (base ** (torch.arange(0, half, 2)[: half // 2].float() / half))  # (head_dim/4,)
    angles = torch.outer(torch.arange(grid_size).float(), freqs)  # (grid, head_dim/4)
    grid = torch.cat(
        [angles[:, None, :].expand(-1, grid_size, -1), angles[None, :, :].expand(grid_size, -1, -1)], dim=-1
    )  # (grid_y, grid_x, head_dim/2): first half by y, second half by x
    table = torch.stack([grid.cos(), grid.sin()], dim=-1).flatten(0, 1)  # (grid², head_dim/2, 2)
    return torch.cat([torch.zeros(1, half, 2), table])  # (1 + grid², head_dim/2, 2)


def apply_rope(x: Tensor, rope: Tensor) -> Tensor:
    """Rotate interleaved pairs (2j, 2j+1) of x (B, L, ..., head_dim) by the rows rope (L, head_dim/2, 2); the
    dims between L and head_dim (heads; q and k stacked) share a row.

    Computed in float32 (or wider) like the official code, but cast back to x's dtype so that a pure bf16/fp16
    model works (the official function returns float32 and then fails in attention, docs/design.md O-35).
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    xp = x.to(dtype).unflatten(-1, (-1, 2))  # (B, L, ..., head_dim/2, 2)
    rows = rope.to(dtype).view(1, rope.shape[0], *([1] * (x.dim() - 3)), *rope.shape[1:])
    cos, sin = rows.unbind(-1)  # (1, L, 1, ..., head_dim/2) each
    a, b = xp.unbind(-1)
    return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2).to(x.dtype)


def rope_axis_pairs(head_dim: int) -> tuple[int, int, int]:
    """How the (t, h, w) RoPE shares a head's head_dim/2 rotation pairs among its axes: (t, h, w) pair counts,
    3/8 of them to each spatial axis and the rest (at least a quarter) to time; 8/12/12 for head_dim 64."""
    pairs = head_dim // 2
    spatial = (3 * pairs) // 8
    return pairs - 2 * spatial, spatial, spatial


def rope_3d_table(frames: int, grid_size: int, head_dim: int, base: float = 10000.0) -> Tensor:
    """The video generator's (t, h, w) RoPE table (docs/design.md "Video generation"): (1 + frames·grid²,
    head_dim/2, 2) float32 of (cos, sin), in the layout of :func:`rope_2d_table`.

    Pairs [0, a_t) rotate by ``t·f^t_j``, the next a_h by ``y·f^h_j``, the last a_w by ``x·f^w_j``
    (:func:`rope_axis_pairs`), with ``f_j = base^(−j/a)`` for an axis of a pairs, for the cell (t, y, x) of raster
    position p = (t·grid + y)·grid + x at row 1 + p. Row 0 (the class token) is all zeros, as in the image table, so
    the intra transformer reads the same rows 0..M−1 (zeros, then position (0, 0, 0): the identity, ...).
    """
    a_t, a_h, a_w = rope_axis_pairs(head_dim)

    def axis(n: int, a: int) -> Tensor:  # (n, a) angles of positions 0..n−1
        return torch.outer(torch.arange(n).float(), 1.0 / (base ** (torch.arange(a).float() / a)))

    t, g = frames, grid_size
    angles = torch.cat([
        axis(t, a_t)[:, None, None, :].expand(t, g, g, a_t),
        axis(g, a_h)[None, :, None, :].expand(t, g, g, a_h),
        axis(g, a_w)[None, None, :, :].expand(t, g, g, a_w),
    ], dim=-1).flatten(0, 2)  # (t·g², head_dim/2)
    table = torch.stack([angles.cos(), angles.sin()], dim=-1)
    return torch.cat([torch.zeros(1, head_dim // 2, 2), table])


# Rows (tokens × batch) for which the CPU float32 no-grad path computes x·Wᵀ as (W·xᵀ)ᵀ (see Linear).
CPU_DECODE_ROWS = range(8, 33)


class Linear(nn.Linear):
    """``nn.Linear`` without bias (same parameter and state-dict key) with a faster decode path on CPU.

    At decode batch sizes (8–32 rows: a few images with CFG) MKL streams the (out, in) weight ~1.3× faster as
    ``W·xᵀ`` than as F.linear's ``x·Wᵀ`` (``benchmarks/bench_sampling.py``); decoding is bound by reading the
    weights, so the step is faster by about as much. Only float32, without autograd, on CPU; the result differs
    from F.linear only in summation order (float rounding).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.numel() // self.in_features
        cpu_f32 = x.device.type == "cpu" and x.dtype == torch.float32
        if cpu_f32 and rows in CPU_DECODE_ROWS and not torch.is_grad_enabled():
            y = torch.mm(self.weight, x.reshape(rows, self.in_features).t())  # (out, rows)
            return y.t().reshape(*x.shape[:-1], self.out_features)
        return F.linear(x, self.weight)


# ---------------------------------------------------------------------------------------------------- blocks


SHORT_CAUSAL = 4  # causal sequences up to this long (the intra transformer's M sub-tokens) skip the SDPA kernels


def short_causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Causal softmax attention over a few positions, written out in float32 (or wider): (B, H, L, hd) →
    (B, H, L, hd), scale 1/√hd, the result in q's dtype.

    The intra transformer attends over its M sub-tokens (2 for the 6 + 12-bit split) in every one of the B × N
    rows of a teacher-forced batch. The SDPA kernels run such a batch of tiny sequences as slowly as a long one
    (CPU flash attention: 60 ms forward + backward for 4,608 × 3 heads × 2 positions, as long as 8 × 3 heads × 577
    positions); these broadcast products are a few fused element-wise kernels. Same values as SDPA up to float32
    rounding (tests/generator/test_model.py).
    """
    L = q.shape[-2]
    wide = torch.promote_types(q.dtype, torch.float32)
    qf, kf, vf = q.to(wide), k.to(wide), v.to(wide)
    scores = (qf.unsqueeze(-2) * kf.unsqueeze(-3)).sum(-1) * qf.shape[-1] ** -0.5  # (B, H, L, L)
    future = torch.ones(L, L, dtype=torch.bool, device=q.device).triu(1)
    weights = scores.masked_fill(future, float("-inf")).softmax(-1)
    return (weights.unsqueeze(-1) * vf.unsqueeze(-3)).sum(-2).to(q.dtype)


class Attention(nn.Module):
    """Multi-head self-attention with fused ``wqkv`` (rows: q, k, v; heads contiguous), no biases
    (docs/design.md O-33)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.wqkv = Linear(config.dim, 3 * config.dim)
        self.wo = Linear(config.dim, config.dim)
        self.resid_dropout = nn.Dropout(config.resid_dropout)

    def forward(
        self, x: Tensor, rope: Tensor, cache: KVCache | None = None, input_pos: Tensor | int | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """x (B, L, D), rope (L, head_dim/2, 2) → (B, L, D).

        Without a cache the L positions attend causally among themselves (teacher forcing). With a cache the new
        keys/values are written at ``input_pos`` and each query attends to itself and the positions before it:
        a tensor (L,) reads the whole fixed-size cache through ``mask`` (L, max_len); an int reads the filled
        prefix (``mask`` None for one query, see :meth:`KVCache.mask`).
        """
        B, L, D = x.shape
        qkv = self.wqkv(x).view(B, L, 3, self.n_heads, self.head_dim)  # rows of wqkv: q, k, v
        q, k = apply_rope(qkv[:, :, :2], rope).unbind(2)  # (B, L, H, hd) each, one rotation for both
        q, k, v = (t.transpose(1, 2) for t in (q, k, qkv[:, :, 2]))  # (B, H, L, hd)
        if cache is not None:
            k, v = cache.update(input_pos, k, v)  # (B, H, max_len, hd): the whole static cache
        causal = cache is None and L > 1
        if causal and mask is None and L <= SHORT_CAUSAL:
            y = short_causal_attention(q, k, v)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # (B, H, L, hd), 1/√hd
        return self.resid_dropout(self.wo(y.transpose(1, 2).reshape(B, L, D)))


class FeedForward(nn.Module):
    """SwiGLU: ``w2(silu(w1 u) ⊙ w3 u)`` (registration order w1, w3, w2 as in the official state dict)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.w1 = Linear(config.dim, config.ffn_dim)
        self.w3 = Linear(config.dim, config.ffn_dim)
        self.w2 = Linear(config.ffn_dim, config.dim)
        self.ffn_dropout = nn.Dropout(config.ffn_dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.ffn_dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class Block(nn.Module):
    """Pre-norm Llama block (docs/design.md O-33); drop-path is identity in every official config, so it is omitted."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.attention = Attention(config)
        self.feed_forward = FeedForward(config)
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)

    def forward(
        self, x: Tensor, rope: Tensor, cache: KVCache | None = None, input_pos: Tensor | int | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        x = x + self.attention(self.attention_norm(x), rope, cache, input_pos, mask)
        return x + self.feed_forward(self.ffn_norm(x))


class LabelEmbedder(nn.Module):
    """Class embedding used as the start token; row ``num_classes`` is the null class (docs/design.md O-32, O-36)."""

    def __init__(self, num_classes: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.num_classes, self.dropout = num_classes, dropout
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: Tensor) -> Tensor:
        """labels (B,) int64 in [0, num_classes] → (B, 1, D). In training, labels drop to the null class."""
        if self.training and self.dropout > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.dropout
            labels = torch.where(drop, self.num_classes, labels)
        return self.embedding_table(labels)[:, None]


# ----------------------------------------------------------------------------------------------------- model


class GeneratorTransformer(nn.Module):
    """The official ``GPT`` with token factorisation (docs/design.md O-31–O-36): the ``transformer.*`` part of an AR
    checkpoint."""

    def __init__(self, *, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        vocab = config.vocab_sizes
        self.pre_emb = nn.Embedding(vocab[0], config.dim)  # sub-token 1
        if len(vocab) > 2:  # sub-tokens 2 … M−1: registered between pre and post, so M = 2 keeps the official order
            self.mid_emb = nn.ModuleList(nn.Embedding(v, config.dim) for v in vocab[1:-1])
        if len(vocab) > 1:  # sub-token M
            self.post_emb = nn.Embedding(vocab[-1], config.dim)
        self.class_emb = LabelEmbedder(config.num_classes, config.dim, config.label_dropout)
        self.token_drop = nn.Dropout(config.token_dropout)
        self.spatial_blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.factorized_blocks = nn.ModuleList(Block(config) for _ in range(config.n_intra_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.head = nn.ModuleList(Linear(config.dim, v) for v in vocab)  # head.i: logits of sub-token i + 1
        # Not part of the state dict: derived from the config, kept in float32 by _apply below.
        self.register_buffer("rope", self.build_rope(), False)
        if self.rope.shape[0] < len(vocab):
            raise ValueError(f"factorized_bits {config.factorized_bits} makes {len(vocab)} sub-tokens but the intra "
                             f"transformer reads RoPE rows 0..M−1 of a {self.rope.shape[0]}-row table; use fewer "
                             "sub-tokens or a larger grid")
        self.init_weights()

    def build_rope(self) -> Tensor:
        """The RoPE table (positions, head_dim/2, 2) float32: row 0 for the class token, row 1 + p for raster
        position p; the intra transformer reuses rows 0..M−1. A model with other positions (e.g. a (t, h, w) grid)
        replaces this method."""
        c = self.config
        return rope_2d_table(c.grid_size, c.head_dim, c.rope_base)

    def init_weights(self) -> None:
        """Official init (docs/design.md O-32): Linear and Embedding weights N(0, 0.02), both heads zero, norms 1."""
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=std)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
        for h in self.head:  # zero heads: every sub-token starts uniform
            nn.init.zeros_(h.weight)

    def _apply(self, fn, recurse=True):
        # ``model.to(torch.bfloat16)`` would round the RoPE table to bf16 and ``to_empty`` would leave it
        # uninitialised: rebuild the exact float32 table on whatever device the module now lives on.
        out = super()._apply(fn, recurse)
        self.rope = self.build_rope().to(self.rope.device)
        return out

    # --- pieces shared by teacher forcing (forward) and sampling (generator/sampling.py) ---

    def sub_emb(self, i: int) -> nn.Embedding:
        """The embedding of sub-token i + 1 (i = 0 … M − 1): ``pre_emb``, ``mid_emb[i − 1]``, ``post_emb``."""
        m = self.config.sub_tokens
        if i == 0:
            return self.pre_emb
        return self.post_emb if i == m - 1 else self.mid_emb[i - 1]

    def embed_tokens(self, *tokens: Tensor) -> Tensor:
        """Sum of the M sub-token embeddings (docs/design.md O-36; paper eq. 5): (B, L) × M → (B, L, D)."""
        x = self.pre_emb(tokens[0])
        for i in range(1, len(tokens)):
            x = x + self.sub_emb(i)(tokens[i])
        return x

    def spatial(
        self, x: Tensor, input_pos: Tensor | int | None = None, caches: list[KVCache] | None = None
    ) -> Tensor:
        """Spatial transformer: x (B, L, D) → h (B, L, D). Teacher forcing (no caches): positions 0..L−1, causal.
        Decoding: x sits at the sequence positions ``input_pos`` and attends through ``caches``: a tensor (L,)
        int64 reads the whole fixed-size caches through a mask (one shape at every step, for ``torch.compile``),
        an int p (positions p … p + L − 1) reads only their filled prefix (eager decoding; :class:`KVCache`)."""
        return self._run(self.spatial_blocks, x, input_pos, caches)

    def intra(self, x: Tensor, input_pos: Tensor | int | None = None, caches: list[KVCache] | None = None) -> Tensor:
        """Intra transformer + final norm on intra positions ⊆ {0, …, M − 1}: (R, L, D) → (R, L, D), as
        :meth:`spatial`.

        It reuses RoPE rows 0..M−1 of the spatial table (zero, then identity, ...), as the official code uses rows 0
        and 1.
        """
        return self.norm(self._run(self.factorized_blocks, x, input_pos, caches))

    def _run(
        self, blocks: nn.ModuleList, x: Tensor, input_pos: Tensor | int | None, caches: list[KVCache] | None
    ) -> Tensor:
        if caches is None:
            rope, mask = self.rope[: x.shape[1]], None
        elif isinstance(input_pos, int):  # eager decoding: the filled prefix, no mask for one query
            rope = self.rope[input_pos : input_pos + x.shape[1]]  # (L, head_dim/2, 2)
            mask = caches[0].mask(input_pos, x.shape[1])
        else:
            rope = self.rope[input_pos]  # (L, head_dim/2, 2)
            mask = caches[0].mask(input_pos)  # (L, max_len): one fixed shape for every decoding step
        for i, block in enumerate(blocks):
            x = block(x, rope, None if caches is None else caches[i], input_pos, mask)
        return x

    def forward(self, *tokens_and_labels: Tensor) -> tuple[Tensor, ...]:
        """Teacher forcing (docs/design.md O-36): ``model(s_1, …, s_M, labels)``, the M sub-tokens (B, N) int64 in
        [0, 2^k_i) then labels (B,) int64 in [0, num_classes]; ``model(pre, post, labels)`` for M = 2.

        Returns the M logits ``(B, N, 2^k_i)``, in order; sub-token i at position n is conditioned on the class,
        the tokens < n and the sub-tokens 1 … i − 1 of token n.
        """
        *tokens, labels = tokens_and_labels
        m = self.config.sub_tokens
        if len(tokens) != m:
            raise ValueError(f"expected {m} sub-token tensors then the labels, got {len(tokens_and_labels)} tensors")
        B, N = tokens[0].shape
        seq = torch.cat([self.class_emb(labels), self.embed_tokens(*tokens)[:, :-1]], dim=1)  # (B, N, D)
        h = self.spatial(self.token_drop(seq))  # (B, N, D)
        # (B·N, M, D): [h_n, emb_1(s_1,n), …, emb_{M−1}(s_{M−1},n)]
        ctx = torch.stack([h, *(self.sub_emb(i)(tokens[i]) for i in range(m - 1))], dim=2).flatten(0, 1)
        o = self.intra(ctx).view(B, N, m, -1)
        return tuple(self.head[i](o[:, :, i]) for i in range(m))

    def new_caches(self, rows: int, *, dtype: torch.dtype, device: torch.device) -> tuple[list, list]:
        """Static KV caches for one sampling run: spatial (rows, H, N, hd) per block, intra (rows, H, M, hd)."""
        c = self.config
        spatial = [
            KVCache(rows, c.n_heads, c.seq_len, c.head_dim, dtype=dtype, device=device) for _ in range(c.n_layers)
        ]
        intra = [
            KVCache(rows, c.n_heads, c.sub_tokens, c.head_dim, dtype=dtype, device=device)
            for _ in range(c.n_intra_layers)
        ]
        return spatial, intra

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ----------------------------------------------------------------------------------------------------- video


@dataclass(frozen=True)
class VideoGeneratorConfig(GeneratorConfig):
    """A video generator's architecture: :class:`GeneratorConfig` over ``frames`` latent frames of
    ``grid_size`` × ``grid_size`` tokens, in raster order t, then h, then w (``seq_len = frames·grid²``), with the
    (t, h, w) RoPE of :func:`rope_3d_table` (docs/design.md "Video generation")."""

    frames: int = 5  # latent frames t (a 17-frame clip of a 4×-in-time tokenizer has 5)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if min(rope_axis_pairs(self.head_dim)) < 1:
            raise ValueError(f"head_dim={self.head_dim} is too small for the (t, h, w) RoPE; use head_dim >= 8")
        object.__setattr__(self, "seq_len", self.frames * self.grid_size**2)

    @property
    def grid(self) -> tuple[int, int, int]:
        """(t, h, w) tokens per clip."""
        return self.frames, self.grid_size, self.grid_size


class VideoGeneratorTransformer(GeneratorTransformer):
    """:class:`GeneratorTransformer` over (t, h, w) token grids: the same blocks, heads, caches and sampler; only
    the RoPE table differs (:func:`rope_3d_table`). Its state dict has the image model's keys."""

    def __init__(self, *, config: VideoGeneratorConfig) -> None:
        if not isinstance(config, VideoGeneratorConfig):
            raise TypeError(f"VideoGeneratorTransformer needs a VideoGeneratorConfig, got {type(config).__name__}")
        super().__init__(config=config)

    def build_rope(self) -> Tensor:
        c = self.config
        return rope_3d_table(c.frames, c.grid_size, c.head_dim, c.rope_base)


def config_from_dict(d: dict) -> GeneratorConfig:
    """A stored generator config: a :class:`VideoGeneratorConfig` when it has ``frames``, else a
    :class:`GeneratorConfig`."""
    return (VideoGeneratorConfig if "frames" in d else GeneratorConfig).from_dict(d)


def transformer_for(config: GeneratorConfig) -> GeneratorTransformer:
    """The transformer of a config: the video one (t, h, w RoPE) for a :class:`VideoGeneratorConfig`."""
    if isinstance(config, VideoGeneratorConfig):
        return VideoGeneratorTransformer(config=config)
    return GeneratorTransformer(config=config)


def check_labels(labels: Tensor, num_classes: int) -> None:
    """ValueError unless labels is an int64-like (B,) tensor in [0, num_classes] (num_classes = null class)."""
    if (
        not isinstance(labels, Tensor)
        or labels.dim() != 1
        or labels.dtype.is_floating_point
        or labels.dtype == torch.bool
    ):
        raise ValueError(f"labels must be an integer tensor of shape (B,), got {_describe(labels)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > num_classes):
        raise ValueError(
            f"class labels must lie in [0, {num_classes}] ({num_classes} = the null/unconditional class); got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


def _describe(x: object) -> str:
    return f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
