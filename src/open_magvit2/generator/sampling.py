"""Fast AR sampling with per-sub-token classifier-free guidance (docs/design.md O-39), in the gpt-fast shape.

A token is M sub-tokens s_1 … s_M (M = 2 for the released models: pre, post). One run allocates fixed-size KV
caches once (spatial: (rows, H, N, hd) per block; intra: (rows, H, M, hd) per block, ``generator/kv_cache.py``),
then:

* :func:`prefill` — the class token at spatial position 0, through intra position 0: the logits of the first s_1;
* :func:`decode_one_token` — the previous token (the sum of its M sub-token embeddings) at spatial position n,
  through intra position 0: the logits of s_1 of token n;
* :func:`sub_token_logits` — s_i's embedding at intra position i: the logits of s_{i+1} (i = 1 … M − 1; for
  M = 2 the post logits).

Eager runs pass int positions and every call reads only the filled prefix of the caches. With
``generate_tokens(..., compile=True)`` every call reads the whole cache through a mask, so the decoding functions
keep one shape from the first token to the last, and they are compiled once (CUDA graphs on a GPU): one graph for
:func:`decode_one_token` and one for :func:`sub_token_logits` per intra position (their embeddings and heads
differ in size). Sampling itself (temperature, top-k, top-p, ``torch.multinomial``) stays outside the compiled
graphs, so the draws and the RNG consumption are the official ones: per sub-token i, ``l = l_u + s_i·(l_c − l_u)``
when ``s_i > 1`` (else the conditional logits alone: any scale ≤ 1 means "no guidance", as officially), then
``l / t_i``, top-k, top-p, softmax and one draw per sub-token and step, in order (pre, then post for M = 2).
Departures from the official sampler (``docs/design.md`` O-40, O-41): nothing is attached to the model, nothing is
re-allocated per step (O-40), and any ``cfg_scale`` works, 1.0 and mixed settings included (O-41).
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from open_magvit2.generator.kv_cache import KVCache
from open_magvit2.generator.model import GeneratorTransformer, check_labels


@dataclass(frozen=True)
class SampleOutput:
    """The M sub-token sequences in raster order; logits only when ``return_logits=True`` (else None).

    ``pre``/``post`` (and ``logits_pre``/``logits_post``) name the first and the last sub-token, as for the
    released two-sub-token models; full indices are ``unfactorize_indices(out.tokens, factorized_bits)``.
    """

    tokens: tuple[Tensor, ...]  # M × (B, N) int64, sub-token i in [0, 2^k_i)
    logits: tuple[Tensor, ...] | None  # M × (B, N, 2^k_i) float32, guided, before temperature/filtering

    @property
    def pre(self) -> Tensor:
        return self.tokens[0]

    @property
    def post(self) -> Tensor:
        return self.tokens[-1]

    @property
    def logits_pre(self) -> Tensor | None:
        return None if self.logits is None else self.logits[0]

    @property
    def logits_post(self) -> Tensor | None:
        return None if self.logits is None else self.logits[-1]


def per_sub_token(value: float | int | Sequence, m: int | None, name: str) -> tuple:
    """A scalar applies to every sub-token; a sequence gives one value per sub-token (a (pre, post) pair for
    M = 2). ``m`` None (the model not known yet) accepts a sequence of any length >= 1."""
    if isinstance(value, (tuple, list)):
        if len(value) != (m or len(value)) or not value:
            what = "a (pre, post) pair" if m == 2 else f"{m} values, one per sub-token" if m else "values"
            raise ValueError(f"{name} must be a number or {what}, got {value!r}")
        return tuple(value)
    return (value,) * (m or 1)


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Top-k then nucleus filtering of logits (R, V); removed entries become −inf (official HF-style filter).

    top-k keeps every logit ≥ the k-th largest (ties kept); top-p keeps the smallest prefix of the sorted
    distribution whose mass reaches p — the first token above the threshold included — so at least one survives.
    """
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]  # (R, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        beyond = sorted_logits.softmax(-1).cumsum(-1) > top_p  # (R, V) in sorted order
        remove = torch.zeros_like(beyond)
        remove[..., 1:] = beyond[..., :-1]  # shift right: keep the first token that crosses p
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return logits


def sample_from_logits(
    logits: Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator | None
) -> Tensor:
    """One multinomial draw per row of logits (R, V) → (R,) int64, on the logits' device.

    A ``generator`` on another device (a CPU generator for a CUDA model) draws there: the same seed then gives the
    same tokens on every device, at the cost of one host round trip per draw.
    """
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)
    if generator is not None and generator.device != probs.device:
        return torch.multinomial(probs.to(generator.device), 1, generator=generator)[:, 0].to(probs.device)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _check_settings(cfg_scale: tuple, temperature: tuple, top_k: tuple, top_p: tuple) -> None:
    for name, values in (("cfg_scale", cfg_scale), ("temperature", temperature), ("top_p", top_p)):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise ValueError(f"{name} must be a finite number or one per sub-token, got {values}")
    if min(cfg_scale) < 0:
        raise ValueError(f"cfg_scale must be >= 0 (a scale <= 1 means no guidance), got {cfg_scale}")
    if min(temperature) <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; use top_k=1 for greedy decoding")
    if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in top_k):
        raise ValueError(f"top_k must be an int >= 0 (0 = off), got {top_k}")
    if not all(0 < p <= 1 for p in top_p):
        raise ValueError(f"top_p must lie in (0, 1] (1 = off), got {top_p}")


def check_sampling(
    cfg_scale: float | tuple = 1.0, temperature: float | tuple = 1.0, top_k: int | tuple = 0,
    top_p: float | tuple = 1.0, sub_tokens: int | None = None,
) -> None:
    """``ValueError`` unless :func:`generate_tokens` accepts these settings for a model of ``sub_tokens`` (M)
    sub-tokens (check them before long work); ``sub_tokens`` None checks the values only, whatever their count."""
    settings = [per_sub_token(v, sub_tokens, n) for v, n in (
        (cfg_scale, "cfg_scale"), (temperature, "temperature"), (top_k, "top_k"), (top_p, "top_p"))]
    _check_settings(*settings)


def guide_logits(logits: Tensor, scale: float, batch: int, guided: bool) -> Tensor:
    """(rows, V) → (batch, V): ``l_u + s·(l_c − l_u)`` when guided, else the conditional rows."""
    cond = logits[:batch].float()
    if not guided:
        return cond
    uncond = logits[batch:].float()
    return uncond + scale * (cond - uncond)


# ---------------------------------------------------------------------------------------- the decoding steps


@dataclass(frozen=True)
class Guidance:
    """Per-run constants of the logits: ``batch`` real rows (then as many unconditional rows when guided) and,
    per sub-token, the CFG scale and whether it applies (scale > 1)."""

    batch: int
    scales: tuple[float, ...]
    guided: tuple[bool, ...]

    @property
    def rows(self) -> int:
        return 2 * self.batch if any(self.guided) else self.batch


@dataclass
class DecodeState:
    """The fixed-size caches of one run and the M intra positions.

    ``fixed_shape`` (the compiled path): the positions are (1,) int64 tensors on the model's device and every
    call reads the whole caches through a mask, one shape at every step. Otherwise (eager) they are ints and a
    call reads only the filled prefix of each cache (:class:`~open_magvit2.generator.kv_cache.KVCache`).
    """

    spatial: list[KVCache]
    intra: list[KVCache]
    intra_pos: tuple[Tensor, ...] | tuple[int, ...]  # 0 … M − 1 (the intra positions; 0 is also the prefill's)

    @classmethod
    def new(cls, model: GeneratorTransformer, rows: int, *, fixed_shape: bool = False) -> DecodeState:
        p = model.pre_emb.weight
        spatial, intra = model.new_caches(rows, dtype=p.dtype, device=p.device)
        m = model.config.sub_tokens
        if not fixed_shape:
            return cls(spatial, intra, tuple(range(m)))
        positions = torch.arange(m, device=p.device)
        return cls(spatial, intra, tuple(positions[i : i + 1] for i in range(m)))

    def position(self, n: int) -> Tensor | int:
        """Spatial position n in the form this state's calls take: a (1,) int64 tensor or the int."""
        if isinstance(self.intra_pos[0], int):
            return n
        return torch.full((1,), n, dtype=torch.int64, device=self.intra_pos[0].device)


def _head_logits(model: GeneratorTransformer, x: Tensor, i: int, state: DecodeState, g: Guidance) -> Tensor:
    """x (rows, 1, D) at intra position i → guided logits of sub-token i + 1, (B, 2^k_{i+1}) float32."""
    o = model.intra(x, state.intra_pos[i], state.intra)  # (rows, 1, D)
    return guide_logits(model.head[i](o[:, 0]), g.scales[i], g.batch, g.guided[i])


def prefill(
    model: GeneratorTransformer, labels: Tensor, state: DecodeState, g: Guidance,
    prefix: tuple[Tensor, ...] | None = None,
) -> Tensor:
    """The class tokens (rows,) at spatial position 0, then the P given tokens of ``prefix`` (their M sub-tokens,
    (rows, P) int64 each) at positions 1 … P, in one pass → the guided logits of s_1 of token P (B, 2^k1)."""
    x = model.class_emb(labels)  # (rows, 1, D)
    if prefix is not None:
        x = torch.cat([x, model.embed_tokens(*prefix)], dim=1)  # (rows, 1 + P, D): E[0] … E[P − 1]
    first = state.intra_pos[0]  # position 0, an int or a (1,) tensor
    positions = first if isinstance(first, int) else torch.arange(x.shape[1], device=first.device)
    h = model.spatial(x, positions, state.spatial)[:, -1:]  # (rows, 1, D): conditioned on the class and the prefix
    return _head_logits(model, h, 0, state, g)


def decode_one_token(
    model: GeneratorTransformer, tokens: tuple[Tensor, ...], input_pos: Tensor | int, state: DecodeState,
    g: Guidance,
) -> Tensor:
    """The previous token (its M sub-tokens, (rows,) int64 each) at spatial position ``input_pos`` (a (1,) tensor
    for a fixed-shape state, else an int: :meth:`DecodeState.position`) → the guided logits of the next s_1
    (B, 2^k1) float32. With a fixed-shape state every argument keeps its shape from step to step."""
    x = model.embed_tokens(*(t[:, None] for t in tokens))  # (rows, 1, D): E[n−1] = Σ_i emb_i(s_i)
    h = model.spatial(x, input_pos, state.spatial)  # (rows, 1, D), conditioned on the class and tokens < n
    return _head_logits(model, h, 0, state, g)


def sub_token_logits(model: GeneratorTransformer, token: Tensor, i: int, state: DecodeState, g: Guidance) -> Tensor:
    """Sub-token s_i of token n (rows,) at intra position i (1 ≤ i < M, after h_n at 0 and s_1 … s_{i−1}) → the
    guided logits of s_{i+1} (B, 2^k_{i+1}) float32; for M = 2, i = 1: pre_n → the post logits."""
    return _head_logits(model, model.sub_emb(i - 1)(token)[:, None], i, state, g)


def _no_op() -> None:
    pass


_COMPILED: dict[tuple[str, str], Callable] = {}
_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # compiled runs reuse one cache per (model, rows)


def compiled(fn: Callable, device: torch.device, options: dict[str, Any] | None = None) -> Callable:
    """``torch.compile(fn)`` once per (function, options): whole graph, static shapes; CUDA graphs on a GPU
    (``mode="reduce-overhead"``). ``options`` replace these ``torch.compile`` arguments."""
    kwargs: dict[str, Any] = dict(fullgraph=True, dynamic=False)
    kwargs["mode"] = "reduce-overhead" if device.type == "cuda" else "default"
    kwargs.update(options or {})
    if "options" in kwargs or kwargs.get("backend", "inductor") != "inductor":  # torch takes mode or options
        kwargs.pop("mode", None)
    key = (fn.__name__, repr(sorted(kwargs.items(), key=lambda kv: kv[0])))
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(fn, **kwargs)
    return _COMPILED[key]


def _compiled_state(model: GeneratorTransformer, rows: int) -> DecodeState:
    """One cache per (model, rows, dtype), kept while the model lives and never attached to it: CUDA graphs then
    replay on the same addresses run after run (slots of an earlier run are masked until overwritten)."""
    p = model.pre_emb.weight
    states = _STATES.setdefault(model, {})
    key = (rows, p.dtype, p.device)
    if key not in states:
        states[key] = DecodeState.new(model, rows, fixed_shape=True)
        if p.device.type == "cuda":
            for c in states[key].spatial + states[key].intra:
                torch._dynamo.mark_static_address(c.k)
                torch._dynamo.mark_static_address(c.v)
    return states[key]


@torch.no_grad()
def generate_tokens(
    model: GeneratorTransformer,
    labels: Tensor,
    *,
    cfg_scale: float | Sequence[float],
    temperature: float | Sequence[float] = 1.0,
    top_k: int | Sequence[int] = 0,
    top_p: float | Sequence[float] = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    return_logits: bool = False,
    compile: bool | dict[str, Any] = False,
    prefix: Sequence[Tensor] | None = None,
) -> SampleOutput:
    """Sample the M sub-token sequences for class labels (B,) int64 (``num_classes`` = unconditional).

    ``prefix``: the first P tokens are given, not sampled (a video's first latent frame): their M sub-tokens,
    (B, P) int64 each, 1 ≤ P < N. They are prefilled in one pass and returned as given; sampling starts at token P
    (their logits, with ``return_logits``, are zero).

    ``cfg_scale``/``temperature``/``top_k``/``top_p``: a number for every sub-token or one value per sub-token
    (a (pre, post) pair for M = 2). ``generator`` None uses torch's global RNG; a generator on another device than
    the model draws on its own device (:func:`sample_from_logits`). ``compile=True`` compiles
    :func:`decode_one_token` and :func:`sub_token_logits` once (the first call pays the compile time; one graph per
    intra position for the latter); a dict passes its own ``torch.compile`` arguments, e.g.
    ``{"mode": "max-autotune"}``. The model's train/eval mode is restored afterwards.
    """
    cfg = model.config
    m = cfg.sub_tokens
    check_labels(labels, cfg.num_classes)
    if labels.numel() == 0:
        raise ValueError("labels is empty: pass at least one class label, shape (B,) with B >= 1")
    scales, temps = per_sub_token(cfg_scale, m, "cfg_scale"), per_sub_token(temperature, m, "temperature")
    ks, ps = per_sub_token(top_k, m, "top_k"), per_sub_token(top_p, m, "top_p")
    _check_settings(scales, temps, ks, ps)
    B, N, device = labels.shape[0], cfg.seq_len, model.pre_emb.weight.device
    g = Guidance(B, tuple(float(s) for s in scales), tuple(s > 1 for s in scales))
    labels = labels.to(device)
    if g.rows > B:  # rows = [conditional; unconditional]
        labels = torch.cat([labels, torch.full_like(labels, cfg.num_classes)])
    given = _check_prefix(prefix, cfg.vocab_sizes, B, N)
    P = 0 if given is None else given[0].shape[1]
    out = torch.empty(m, B, N, dtype=torch.int64, device=device)
    saved = [torch.zeros(B, N, v, device=device) for v in cfg.vocab_sizes] if return_logits else None
    if given is not None:
        given = tuple(t.to(device) for t in given)
        for i, t in enumerate(given):
            out[i, :, :P] = t
        given = tuple(t.repeat(g.rows // B, 1) for t in given)  # the unconditional rows see the same prefix
    if compile:
        options = compile if isinstance(compile, dict) else None
        state = _compiled_state(model, g.rows)
        step, sub_step = compiled(decode_one_token, device, options), compiled(sub_token_logits, device, options)
    else:  # eager: int positions, each call reads only the filled prefix of the caches
        state, step, sub_step = DecodeState.new(model, g.rows), decode_one_token, sub_token_logits

    def draw(logits: Tensor, i: int, n: int) -> Tensor:  # (B, V_i) → the same token for cond. and uncond. rows
        if saved is not None:
            saved[i][:, n] = logits
        tok = sample_from_logits(logits, temps[i], ks[i], ps[i], generator)  # (B,)
        out[i, :, n] = tok
        return tok.repeat(g.rows // B)  # (rows,)

    # CUDA graphs reuse their output memory: say when the previous outputs are consumed (they are, once drawn)
    new_graph_step = torch.compiler.cudagraph_mark_step_begin if compile and device.type == "cuda" else _no_op

    was_training = model.training
    model.eval()
    try:
        input_pos = state.position(P)
        steps = range(P, N)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="sampling", unit="token")
        logits = prefill(model, labels, state, g, given)
        with _graphs_per_intra_position(m, compile):
            for n in steps:
                tokens = [draw(logits, 0, n)]  # s_1, then s_2 … s_M each given the ones before (paper eq. 6)
                for i in range(1, m):
                    new_graph_step()
                    tokens.append(draw(sub_step(model, tokens[-1], i, state, g), i, n))
                if n + 1 < N:
                    input_pos += 1  # spatial position n + 1 holds E[n] (in place for a tensor: one address)
                    new_graph_step()
                    logits = step(model, tuple(tokens), input_pos, state, g)
    finally:
        model.train(was_training)
    return SampleOutput(tuple(out.unbind(0)), None if saved is None else tuple(saved))


def _check_prefix(prefix: Sequence[Tensor] | None, vocab: tuple[int, ...], batch: int, n: int
                  ) -> tuple[Tensor, ...] | None:
    """``ValueError`` unless ``prefix`` is M integer (B, P) tensors, 1 ≤ P < N, sub-token i in [0, 2^k_i)."""
    if prefix is None:
        return None
    prefix = tuple(prefix)
    if len(prefix) != len(vocab) or not all(isinstance(t, Tensor) for t in prefix):
        raise ValueError(f"prefix must be {len(vocab)} tensors, one per sub-token, got {len(prefix)}")
    shape = tuple(prefix[0].shape)
    if len(shape) != 2 or shape[0] != batch or not 1 <= shape[1] < n:
        raise ValueError(f"prefix sub-tokens must be (B, P) with B = {batch} and 1 <= P < {n}, got {shape}")
    for i, (t, v) in enumerate(zip(prefix, vocab)):
        if tuple(t.shape) != shape or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"prefix sub-token {i + 1} must be an integer tensor of shape {shape}")
        if int(t.min()) < 0 or int(t.max()) >= v:
            raise ValueError(f"prefix sub-token {i + 1} must lie in [0, {v})")
    return tuple(t.long() for t in prefix)


def _graphs_per_intra_position(m: int, compile: bool | dict[str, Any]) -> Any:
    """``torch.compile`` keeps at most ``recompile_limit`` graphs of one function (8 by default); allow one per
    intra position of :func:`sub_token_logits` (M − 1 of them) while this run compiles."""
    limit = torch._dynamo.config.recompile_limit
    if not compile or m - 1 <= limit:
        return contextlib.nullcontext()
    return torch._dynamo.config.patch(recompile_limit=m - 1)
