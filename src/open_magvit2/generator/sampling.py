"""Fast AR sampling with per-sub-token classifier-free guidance (spec §5.8, gpt-fast style).

One run: allocate static KV caches once (spatial: (rows, H, N, hd) per block; intra: (rows, H, 2, hd) per block),
prefill the class token, then decode one token per step: one spatial step, then the two intra positions (pre,
then post given pre). Every step touches only the new position. Departures from the official sampler
(``docs/design.md``): nothing is attached to the model, nothing is re-allocated per step (§9 items 8–9), and any
``cfg_scale`` works, 1.0 and mixed settings included (§9 item 7).

Per sub-token i: ``l = l_u + s_i·(l_c − l_u)`` when ``s_i > 1`` (else the conditional logits alone, like the
official code, where any scale ≤ 1 means "no guidance"), then ``l / t_i``, top-k, top-p, softmax and one
``torch.multinomial`` draw per sub-token and step — the official order of RNG consumption.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from open_magvit2.generator.model import GeneratorTransformer, check_labels


class SampleOutput(NamedTuple):
    """Sub-token sequences in raster order; logits only when ``return_logits=True`` (else None)."""

    pre: Tensor  # (B, N) int64 in [0, 2^k1)
    post: Tensor  # (B, N) int64 in [0, 2^k2)
    logits_pre: Tensor | None  # (B, N, 2^k1) float32, guided, before temperature/filtering
    logits_post: Tensor | None  # (B, N, 2^k2)


def as_pair(value: float | int | tuple | list, name: str) -> tuple:
    """A scalar applies to both sub-tokens; a pair gives (pre, post) values."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be a number or a (pre, post) pair, got {value!r}")
        return tuple(value)
    return (value, value)


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
    """One multinomial draw per row of logits (R, V) → (R,) int64."""
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _check_settings(cfg_scale: tuple, temperature: tuple, top_k: tuple, top_p: tuple) -> None:
    for name, values in (("cfg_scale", cfg_scale), ("temperature", temperature), ("top_p", top_p)):
        if not all(isinstance(v, (int, float)) for v in values):
            raise ValueError(f"{name} must be a number or a pair of numbers, got {values}")
    if min(temperature) <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; use top_k=1 for greedy decoding")
    if not all(isinstance(k, int) and k >= 0 for k in top_k):
        raise ValueError(f"top_k must be an int >= 0 (0 = off), got {top_k}")
    if not all(0 < p <= 1 for p in top_p):
        raise ValueError(f"top_p must lie in (0, 1] (1 = off), got {top_p}")


def guide_logits(logits: Tensor, scale: float, batch: int, guided: bool) -> Tensor:
    """(rows, V) → (batch, V): ``l_u + s·(l_c − l_u)`` when guided, else the conditional rows."""
    cond = logits[:batch].float()
    if not guided:
        return cond
    uncond = logits[batch:].float()
    return uncond + scale * (cond - uncond)


@torch.no_grad()
def generate_tokens(
    model: GeneratorTransformer,
    labels: Tensor,
    *,
    cfg_scale: float | tuple[float, float],
    temperature: float | tuple[float, float] = 1.0,
    top_k: int | tuple[int, int] = 0,
    top_p: float | tuple[float, float] = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    return_logits: bool = False,
) -> SampleOutput:
    """Sample (pre, post) sub-token sequences for class labels (B,) int64 (``num_classes`` = unconditional).

    ``cfg_scale``/``temperature``/``top_k``/``top_p``: a number for both sub-tokens or a (pre, post) pair.
    ``generator`` None uses torch's global RNG. The model's train/eval mode is restored afterwards.
    """
    cfg = model.config
    check_labels(labels, cfg.num_classes)
    scales, temps = as_pair(cfg_scale, "cfg_scale"), as_pair(temperature, "temperature")
    ks, ps = as_pair(top_k, "top_k"), as_pair(top_p, "top_p")
    _check_settings(scales, temps, ks, ps)
    guided = tuple(s > 1 for s in scales)
    B, N, device = labels.shape[0], cfg.seq_len, model.pre_emb.weight.device
    labels = labels.to(device)
    if any(guided):  # rows = [conditional; unconditional]
        labels = torch.cat([labels, torch.full_like(labels, cfg.num_classes)])
    rows, dtype = labels.shape[0], model.pre_emb.weight.dtype
    spatial_caches, intra_caches = model.new_caches(rows, dtype=dtype, device=device)
    out = torch.empty(2, B, N, dtype=torch.int64, device=device)
    saved = [torch.empty(B, N, v, device=device) for v in cfg.vocab_sizes] if return_logits else None

    was_training = model.training
    model.eval()
    try:
        x = model.class_emb(labels)  # (rows, 1, D): the prefill is the class token alone
        steps = range(N)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="sampling", unit="token")
        for n in steps:
            h = model.spatial(x, n, spatial_caches)  # (rows, 1, D), conditioned on class and tokens < n
            sub_in = h
            for i in range(2):  # intra position 0 → pre (k1 bits), intra position 1 → post given pre
                o = model.intra(sub_in, i, intra_caches)  # (rows, 1, D)
                logits = guide_logits(model.head[i](o[:, 0]), scales[i], B, guided[i])  # (B, V_i) float32
                if saved is not None:
                    saved[i][:, n] = logits
                tok = sample_from_logits(logits, temps[i], ks[i], ps[i], generator)  # (B,)
                out[i, :, n] = tok
                tok_rows = tok.repeat(rows // B)  # the same token for the conditional and unconditional rows
                if i == 0:
                    pre_e = model.pre_emb(tok_rows)[:, None]  # (rows, 1, D)
                    sub_in = pre_e
            x = pre_e + model.post_emb(tok_rows)[:, None]  # the next spatial input E[n]
    finally:
        model.train(was_training)
    return SampleOutput(out[0], out[1], *(saved if saved is not None else (None, None)))
