"""The AR training objective (paper §2.3, docs/design.md O-30, O-36): cross-entropy on each sub-token, summed.

The factorised head gives p(token n) = p(pre_n | ctx) · p(post_n | ctx, pre_n), so the negative log-likelihood of
a full token is the sum of the two cross-entropies. Each is a mean over the B·N positions, as the official
``shared_step`` computes ``CE(logits_pre, pre) + CE(logits_post, post)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor


class GeneratorLoss(NamedTuple):
    """``loss = pre + post``; each a 0-d float32 tensor in nats per sub-token (mean over B·N positions)."""

    loss: Tensor
    pre: Tensor
    post: Tensor


def generator_loss(logits_pre: Tensor, logits_post: Tensor, pre: Tensor, post: Tensor) -> GeneratorLoss:
    """Cross-entropy of the teacher-forced logits against the sub-tokens.

    logits_pre (B, N, 2^k1), logits_post (B, N, 2^k2) in any float dtype (computed in float32, so bf16 autocast
    logits lose nothing in the log-softmax); pre, post (B, N) int64 sub-tokens in [0, 2^k1), [0, 2^k2).
    """
    if logits_pre.shape[:2] != pre.shape or logits_post.shape[:2] != post.shape:
        raise ValueError(
            f"logits {tuple(logits_pre.shape)}/{tuple(logits_post.shape)} do not match sub-tokens "
            f"{tuple(pre.shape)}/{tuple(post.shape)}; expected (B, N, V) logits for (B, N) targets"
        )
    ce_pre = F.cross_entropy(logits_pre.flatten(0, 1).float(), pre.flatten())
    ce_post = F.cross_entropy(logits_post.flatten(0, 1).float(), post.flatten())
    return GeneratorLoss(ce_pre + ce_post, ce_pre, ce_post)
