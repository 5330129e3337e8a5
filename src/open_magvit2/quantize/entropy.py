"""Entropy terms of the LFQ penalty (paper §2.2 eq. 3, docs/design.md O-13) without the (tokens × 2^K) logits.

The official code builds logits ``ℓ[n, j] = 2⟨z_n, c_j⟩`` against all 2^K codes ``c_j ∈ {±1}^K``, takes
``p = softmax(ℓ/τ)`` and derives two entropies from it. Because ``ℓ/τ = Σ_k 2 z_k c_k / τ`` is a sum over bits,
that softmax is a *product* distribution over the K bits:

    P(bit_k = 1 | z_n) = sigmoid(x_{n,k}),   x = 4 z / τ                       (docs/design.md O-13)

* Per-sample entropy H_s = mean_n Σ_k h(x_{n,k}) with the binary entropy h: O(N·K), no codebook at all.
* Codebook entropy H_c = −Σ_j p̄_j log(p̄_j + eps) with p̄ = mean_n p_n (a mixture of product distributions, it does
  not factorise). Split the bits into a low half A (K_A = K // 2 bits) and a high half B. For each token, the
  product distribution over the 2^K_A codes of A and over the 2^K_B codes of B are built by iterated outer
  products; then ``p̄[a + 2^K_A·b] = (P_A^T @ P_B)[a, b] / N``. Memory O(2^K + N·2^(K/2)) instead of O(N·2^K),
  and autograd goes through the matmul.

Exact is limited to K ≤ ``EXACT_MAX_BITS`` = 28: a 2^28-entry float32 vector is 1 GiB, and forward + backward keep
about 8 such copies (measured at K = 24: 0.5 GiB, BENCHMARKS.md). Past that, and whenever asked, ``group_bits = g``
splits the bits into consecutive groups of g (LSB first, the last group may be shorter) and sums the groups' codebook
entropies, each computed exactly as above over its 2^g codes (the full groups in one batched matmul):
H_c ≈ Σ_groups −Σ_j p̄_{g,j} log(p̄_{g,j} + eps). The sum over groups ignores the dependence between groups; for
eps = 0 it is ≥ the exact H_c by exactly the groups' total correlation (docs/quantizer.md measures it). H_s is exact
either way. With one group (g = K) it is the exact computation itself.

``dense_entropy_terms`` is the official computation, kept as the reference for tests (small K) and as the baseline
of ``benchmarks/bench_lfq.py``. It is never used by :class:`~open_magvit2.quantize.LFQ`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from open_magvit2.quantize.codes import indices_to_codes

EXACT_MAX_BITS = 28  # exact H_c builds the 2^K-entry p̄: 2^28 float32 = 1 GiB per copy, ~8 live (module docstring)


def _size(num_bytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if num_bytes < 1024 or unit == "PiB":
            return f"{num_bytes:.0f} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")


def entropy_groups(bits: int, group_bits: int | None) -> tuple[tuple[int, int], ...]:
    """The bit ranges [lo, hi) whose codebook entropies H_c sums: one range (0, K) when ``group_bits`` is None (the
    exact H_c), else consecutive ranges of ``group_bits`` bits from bit 0 (the last may be shorter).

    ``ValueError`` (one line) for a ``group_bits`` outside [1, K], and for an exact H_c past ``EXACT_MAX_BITS`` bits,
    saying what it would need: both :class:`~open_magvit2.quantize.LFQ` and the tokenizer config call this.
    """
    if group_bits is None:
        if bits > EXACT_MAX_BITS:
            k_b = bits - bits // 2
            raise ValueError(
                f"the exact codebook entropy of {bits} bits needs the 2^{bits}-entry codebook distribution "
                f"({_size(4 * 2.0**bits)} per float32 copy; forward + backward keep about 8) and 2^{k_b} probabilities "
                f"per token ({_size(4 * 2.0**k_b * 1024)} per 1024 tokens); exact is limited to "
                f"{EXACT_MAX_BITS} bits: set entropy_group_bits (e.g. 8) for the grouped codebook entropy"
            )
        return ((0, bits),)
    if isinstance(group_bits, bool) or not hasattr(group_bits, "__index__") or not 1 <= group_bits.__index__() <= bits:
        raise ValueError(
            f"entropy_group_bits must be an int in [1, {bits}] (the bits per entropy group), or None for the exact "
            f"codebook entropy; got {group_bits!r}"
        )
    g = group_bits.__index__()
    return tuple((lo, min(lo + g, bits)) for lo in range(0, bits, g))


class EntropyTerms(NamedTuple):
    per_sample_entropy: Tensor  # 0-d, H_s (nats)
    codebook_entropy: Tensor  # 0-d, H_c (nats)


def _flat_bits(z: Tensor) -> Tensor:
    """(B, K, *spatial) → (N, K) in float32 (float64 stays float64), N = B·prod(spatial)."""
    if z.dim() < 2:
        raise ValueError(f"z must be (B, K, *spatial), got shape {tuple(z.shape)}")
    dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    return z.to(dtype).movedim(1, -1).reshape(-1, z.shape[1])


def binary_entropy_from_logits(x: Tensor) -> Tensor:
    """h(sigmoid(x)) elementwise, stable for |x| in the hundreds (x = 4z/τ = 400·z with τ = 0.01).

    h = −p log p − (1−p) log(1−p) with ``log p = −softplus(−x)`` and ``log(1−p) = −softplus(x)``: both products are
    ≤ (1 + |x|)·e^{−|x|} when saturated, so nothing cancels (``softplus(x) − x·sigmoid(x)`` would).
    """
    return torch.sigmoid(x) * F.softplus(-x) + torch.sigmoid(-x) * F.softplus(x)


def product_distribution(p1: Tensor, p0: Tensor) -> Tensor:
    """(*G, N, k) bit probabilities P(bit=1), P(bit=0) → (*G, N, 2^k) joint probabilities, index Σ bit_i·2^i (LSB
    first). ``*G``: optional leading dims (the entropy groups), each handled independently.

    Iterated outer products: after bit i the first 2^i columns hold bit i = 0, the next 2^i bit i = 1.
    """
    out = p1.new_ones(*p1.shape[:-1], 1)  # (*G, N, 1)
    for i in range(p1.shape[-1]):
        out = torch.cat([out * p0[..., i : i + 1], out * p1[..., i : i + 1]], dim=-1)  # (*G, N, 2^(i+1))
    return out


def _probs_sum_from_logits(x: Tensor) -> Tensor:
    """(*G, N, K) bit logits 4z/τ → (*G, 2^K) Σ_n p_n via the A/B split (see the module docstring); ``*G``: optional
    leading dims (the entropy groups, one batched matmul for all)."""
    k_a = x.shape[-1] // 2
    p1, p0 = torch.sigmoid(x), torch.sigmoid(-x)  # sigmoid(−x), not 1 − sigmoid(x): exact tails
    p_a = product_distribution(p1[..., :k_a], p0[..., :k_a])  # (*G, N, 2^K_A) low bits
    p_b = product_distribution(p1[..., k_a:], p0[..., k_a:])  # (*G, N, 2^K_B) high bits
    joint = p_a.transpose(-1, -2) @ p_b  # (*G, 2^K_A, 2^K_B): [a, b] = Σ_n P_A[n, a]·P_B[n, b]
    return joint.transpose(-1, -2).flatten(-2)  # (*G, 2^K) index a + 2^K_A·b


def codebook_probs(z: Tensor, *, temperature: float) -> Tensor:
    """The local codebook distribution p̄ = mean over tokens of softmax(2⟨z_n, c⟩/τ): (2^K,), LSB-first, sums to 1.

    Exact (no truncation), O(N·2^K) multiply-adds in one matmul; float32 (float64 for float64 z).
    """
    x = _flat_bits(z) * (4.0 / temperature)  # (N, K)
    return _probs_sum_from_logits(x) / x.shape[0]


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _synced_mean(probs_sum: Tensor, count: int) -> Tensor:
    """p̄ over all ranks' tokens (token-weighted), with gradients for this rank's tokens (a departure,
    docs/design.md O-13).

    Forward: ``Σ_r probs_sum_r / Σ_r N_r`` (equals p̄ of the concatenated batch). Backward: the local term is
    scaled by ``W / Σ_r N_r``, so that DDP's gradient *averaging* over W ranks yields exactly the gradient of
    H_c(global p̄) (each rank holds its own tokens' share; the others' shares are constants here).
    """
    world = dist.get_world_size()
    buf = torch.cat([probs_sum.detach(), probs_sum.new_tensor([float(count)])])  # (2^K + 1,)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    total = buf[-1]
    global_mean = buf[:-1] / total
    local = probs_sum * (world / total)
    return local + (global_mean - local).detach()


def entropy_from_probs(p: Tensor, eps: float) -> Tensor:
    """−Σ_j p_j log(p_j + eps); the official eps is 1e-5. eps = 0 gives the exact entropy (0·log 0 = 0)."""
    if eps > 0:
        return -(p * torch.log(p + eps)).sum()
    tiny = torch.finfo(p.dtype).tiny  # keeps log finite at p = 0, where the product is 0 anyway (no NaN grads)
    return -(p * torch.log(p.clamp_min(tiny))).sum()


def entropy_terms(
    z: Tensor, *, temperature: float = 0.01, eps: float = 1e-5, sync: bool = False, group_bits: int | None = None
) -> EntropyTerms:
    """H_s and H_c of z (B, K, *spatial), equal to the official values (docs/design.md O-13) without the 2^K logits.

    Computed in float32 (float64 for float64 z) with autocast disabled, whatever the input dtype (docs/design.md O-14).
    ``sync=True``: when torch.distributed is initialised with > 1 rank, p̄ is averaged over all ranks' tokens (a
    collective: every rank must call it). The default, like the official code, uses the local p̄.
    ``group_bits``: None is the exact H_c (K ≤ ``EXACT_MAX_BITS``); g sums the exact H_c of consecutive groups of g
    bits (see the module docstring and :func:`entropy_groups`), one all-reduce for all groups when synced.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with torch.autocast(device_type=z.device.type, enabled=False):
        x = _flat_bits(z) * (4.0 / temperature)  # (N, K)
        groups = entropy_groups(x.shape[1], group_bits)
        n = x.shape[0]
        h_s = binary_entropy_from_logits(x).sum(dim=1).mean()
        probs_sum = _grouped_probs_sum(x, groups)  # (Σ_groups 2^g,): every group's Σ_n p_n, one after the other
        p_bar = _synced_mean(probs_sum, n) if sync and _is_distributed() else probs_sum / n
        h_c = entropy_from_probs(p_bar, eps)  # over the concatenation: the sum of the groups' entropies
    return EntropyTerms(h_s, h_c)


def _grouped_probs_sum(x: Tensor, groups: tuple[tuple[int, int], ...]) -> Tensor:
    """(N, K) bit logits → the groups' Σ_n p_n concatenated in group order. One group: the exact (2^K,) itself. Else
    the full groups (g bits each) go through one batched split matmul (a (G, N, g) view), the shorter last one alone:
    a fixed number of operations whatever K (docs/quantizer.md)."""
    if len(groups) == 1:
        return _probs_sum_from_logits(x)
    n, k = x.shape
    g = groups[0][1]
    full = k // g
    parts = [_probs_sum_from_logits(x[:, : full * g].reshape(n, full, g).transpose(0, 1)).flatten()]  # (G·2^g,)
    if full * g < k:
        parts.append(_probs_sum_from_logits(x[:, full * g :]))  # (2^(K − G·g),)
    return torch.cat(parts)


def dense_entropy_terms(z: Tensor, temperature: float = 0.01, eps: float = 1e-5) -> EntropyTerms:
    """The official computation (reference only): full (N, 2^K) logits, softmax and log-softmax.

    Memory O(N·2^K): about 2 GiB per float32 copy at K = 18, N = 2048. Runs in z's dtype (at least float32).
    """
    k = z.shape[1]
    dtype = torch.promote_types(z.dtype, torch.float32)
    flat = z.to(dtype).movedim(1, -1).reshape(-1, k)  # (N, K)
    codebook = indices_to_codes(torch.arange(2**k, device=z.device), k, dtype)  # (2^K, K) ±1
    logits = 2 * flat @ codebook.t()  # (N, 2^K)
    probs = torch.softmax(logits / temperature, dim=-1)
    log_probs = torch.log_softmax(logits / temperature + eps, dim=-1)  # the official +eps: a no-op shift
    h_s = (-(probs * log_probs).sum(dim=-1)).mean()
    h_c = entropy_from_probs(probs.mean(dim=0), eps)  # official −Σ p̄ log(p̄ + eps) for eps > 0
    return EntropyTerms(h_s, h_c)
