"""The AR training objective (paper §2.3, docs/design.md O-30, O-36): cross-entropy on each sub-token, summed.

The factorised head gives p(token n) = p(s_1,n | ctx) · p(s_2,n | ctx, s_1,n) · … · p(s_M,n | ctx, s_1,n … s_M−1,n),
so the negative log-likelihood of a full token is the sum of the M cross-entropies. Each is a mean over the B·N
positions, as the official ``shared_step`` computes ``CE(logits_pre, pre) + CE(logits_post, post)`` for M = 2.
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor


class GeneratorLoss(NamedTuple):
    """``loss = parts[0] + … + parts[M−1]``; each a 0-d float32 tensor in nats per sub-token (mean over B·N
    positions). ``pre``/``post`` are the first and the last part (the two of the released models)."""

    loss: Tensor
    parts: tuple[Tensor, ...]

    @property
    def pre(self) -> Tensor:
        return self.parts[0]

    @property
    def post(self) -> Tensor:
        return self.parts[-1]


def generator_loss(*logits_then_targets: Tensor, weight: Tensor | None = None) -> GeneratorLoss:
    """Cross-entropy of the teacher-forced logits against the sub-tokens:
    ``generator_loss(logits_1, …, logits_M, s_1, …, s_M)`` (``(logits_pre, logits_post, pre, post)`` for M = 2),
    so ``generator_loss(*model(*subs, labels), *subs)``.

    logits_i (B, N, 2^k_i) in any float dtype (computed in float32, so bf16 autocast logits lose nothing in the
    log-softmax); s_i (B, N) int64 sub-tokens in [0, 2^k_i). ``weight`` (N,), positive: a weighted mean over the
    positions instead (``Σ_n w_n · CE_n / Σ_n w_n`` per sample, then the mean over the batch), which a video
    generator uses to weigh its first latent frame (docs/training.md, "Video generators").
    """
    m, odd = divmod(len(logits_then_targets), 2)
    if odd or m == 0:
        raise ValueError(f"expected M logits then M sub-token tensors, got {len(logits_then_targets)} tensors")
    logits, targets = logits_then_targets[:m], logits_then_targets[m:]
    if any(lg.shape[:2] != t.shape for lg, t in zip(logits, targets)):
        raise ValueError(
            f"logits {'/'.join(str(tuple(lg.shape)) for lg in logits)} do not match sub-tokens "
            f"{'/'.join(str(tuple(t.shape)) for t in targets)}; expected (B, N, V) logits for (B, N) targets"
        )
    if weight is None:
        parts = tuple(F.cross_entropy(lg.flatten(0, 1).float(), t.flatten()) for lg, t in zip(logits, targets))
    else:
        if weight.shape != targets[0].shape[1:] or not bool((weight > 0).all()):
            raise ValueError(f"weight must be ({targets[0].shape[1]},) positive numbers, got shape "
                             f"{tuple(weight.shape)}")
        w = (weight / weight.sum()).float()
        parts = tuple((F.cross_entropy(lg.flatten(0, 1).float(), t.flatten(), reduction="none").view(t.shape) * w)
                      .sum(1).mean() for lg, t in zip(logits, targets))
    loss = parts[0]
    for p in parts[1:]:
        loss = loss + p
    return GeneratorLoss(loss, parts)
