"""Grouped codebook entropy (``entropy_group_bits``) for LFQ up to 62 bits: against its float64 definition, gradcheck,
one group == the exact computation bit for bit, the refusals, and K = 32 / 62 end to end."""

from __future__ import annotations

import math

import pytest
import torch

from open_magvit2.quantize import LFQ, codes_to_indices, entropy_terms, indices_to_codes
from open_magvit2.quantize.entropy import EXACT_MAX_BITS, entropy_groups

TAU = 0.01


def _z(shape, scale=0.005, seed=0, dtype=torch.float32):
    return (scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)).to(dtype)


def _grouped_reference(z: torch.Tensor, group_bits: int, eps: float, temperature: float = TAU) -> torch.Tensor:
    """The definition, in float64 and by brute force: each token's softmax over all 2^K codes (the official p),
    marginalised onto each group's 2^g codes by index arithmetic, averaged over tokens, then
    Σ_groups −Σ_j p̄_{g,j} log(p̄_{g,j} + eps)."""
    k = z.shape[1]
    flat = z.double().movedim(1, -1).reshape(-1, k)  # (N, K)
    codes = torch.arange(2**k)
    p = torch.softmax(2 * flat @ indices_to_codes(codes, k, torch.float64).t() / temperature, dim=-1)  # (N, 2^K)
    total = torch.zeros((), dtype=torch.float64)
    for lo in range(0, k, group_bits):
        g = min(group_bits, k - lo)
        sub = (codes >> lo) & ((1 << g) - 1)  # each code's index within the group
        p_g = torch.zeros(p.shape[0], 2**g, dtype=torch.float64).index_add_(1, sub, p)  # (N, 2^g)
        p_bar = p_g.mean(0)
        total = total - (p_bar * torch.log(p_bar + eps)).sum()
    return total


@pytest.mark.parametrize(("bits", "group_bits"), [(6, 1), (6, 2), (6, 3), (6, 4), (8, 2), (8, 3), (8, 8), (7, 3)])
@pytest.mark.parametrize("scale", [0.002, 0.01])
@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_grouped_entropy_equals_its_definition(bits, group_bits, scale, eps):
    z64 = _z((3, bits, 4, 5), scale=scale, seed=bits * 10 + group_bits)
    ref = _grouped_reference(z64, group_bits, eps)
    ours64 = entropy_terms(z64.double(), temperature=TAU, eps=eps, group_bits=group_bits)
    ours32 = entropy_terms(z64.float(), temperature=TAU, eps=eps, group_bits=group_bits)
    torch.testing.assert_close(ours64.codebook_entropy, ref, rtol=1e-10, atol=0)
    torch.testing.assert_close(ours32.codebook_entropy.double(), ref, rtol=1e-5, atol=0)  # the target
    # H_s is exact whatever the grouping
    assert torch.equal(ours64.per_sample_entropy, entropy_terms(z64.double(), temperature=TAU).per_sample_entropy)


def test_grouped_entropy_gradcheck_float64():
    z = _z((2, 8, 2, 1), seed=3, dtype=torch.float64).requires_grad_(True)
    for g in (3, 1):  # groups (3, 3, 2) and per bit
        fn = lambda t, g=g: tuple(entropy_terms(t, temperature=TAU, group_bits=g))  # noqa: E731
        assert torch.autograd.gradcheck(fn, (z,), eps=1e-8, atol=1e-6)
    # and the analytic gradient equals the brute-force definition's
    z1 = z.detach().clone().requires_grad_(True)
    z2 = z.detach().clone().requires_grad_(True)
    entropy_terms(z1, temperature=TAU, group_bits=3).codebook_entropy.backward()
    _grouped_reference(z2, 3, 1e-5).backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("bits", [10, 18])
def test_one_group_is_the_exact_computation_bit_for_bit(bits):
    z = _z((4, bits, 4, 4), seed=bits)
    z1, z2 = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    exact = entropy_terms(z1, temperature=TAU)
    one = entropy_terms(z2, temperature=TAU, group_bits=bits)
    assert torch.equal(exact.codebook_entropy, one.codebook_entropy)
    assert torch.equal(exact.per_sample_entropy, one.per_sample_entropy)
    (exact.per_sample_entropy - exact.codebook_entropy).backward()
    (one.per_sample_entropy - one.codebook_entropy).backward()
    assert torch.equal(z1.grad, z2.grad)
    a, b = LFQ(bits=bits).train()(z), LFQ(bits=bits, entropy_group_bits=bits).train()(z)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_grouping_overestimates_by_the_dependence_between_groups():
    """Subadditivity: with eps = 0 the grouped H_c is ≥ the exact one; equal when the groups are independent."""
    z = _z((4, 10, 4, 4), seed=5, dtype=torch.float64)
    exact = entropy_terms(z, temperature=TAU, eps=0.0).codebook_entropy
    for g in (1, 2, 5):
        assert entropy_terms(z, temperature=TAU, eps=0.0, group_bits=g).codebook_entropy >= exact - 1e-12
    # one token: p̄ is a product distribution, so any grouping is exact
    one = z[:1, :, :1, :1]
    torch.testing.assert_close(
        entropy_terms(one, temperature=TAU, eps=0.0, group_bits=3).codebook_entropy,
        entropy_terms(one, temperature=TAU, eps=0.0).codebook_entropy,
        rtol=1e-12,
        atol=0,
    )


def test_groups_are_lsb_first_and_the_last_may_be_shorter():
    assert entropy_groups(18, None) == ((0, 18),)
    assert entropy_groups(18, 8) == ((0, 8), (8, 16), (16, 18))
    assert entropy_groups(62, 62) == ((0, 62),)
    assert entropy_groups(5, 1) == tuple((i, i + 1) for i in range(5))


# ---- refusals ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -3, 19, True, 2.0, "8"])
def test_bad_entropy_group_bits_is_a_one_line_value_error(bad):
    with pytest.raises(ValueError, match=r"^entropy_group_bits must be an int in \[1, 18\]") as e:
        LFQ(bits=18, entropy_group_bits=bad)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="entropy_group_bits"):
        entropy_terms(torch.zeros(1, 18, 2), group_bits=bad)


def test_exact_entropy_past_the_memory_limit_is_refused():
    assert EXACT_MAX_BITS == 28
    LFQ(bits=18)  # today's sizes work as before
    LFQ(bits=EXACT_MAX_BITS)
    with pytest.raises(ValueError) as e:
        LFQ(bits=40)
    msg = str(e.value)
    assert "\n" not in msg and "entropy_group_bits" in msg
    assert "2^40-entry" in msg and "4.0 TiB per float32 copy" in msg and "4.0 GiB per 1024 tokens" in msg
    with pytest.raises(ValueError, match="entropy_group_bits"):
        LFQ(bits=EXACT_MAX_BITS + 1)
    with pytest.raises(ValueError, match="entropy_group_bits"):  # the function refuses too, before allocating
        entropy_terms(torch.zeros(1, 40, 1))
    with pytest.raises(ValueError, match=r"\[1, 62\]"):
        LFQ(bits=63, entropy_group_bits=8)
    assert LFQ(bits=40, entropy_group_bits=8).entropy_group_bits == 8


# ---- K = 32 and 62 end to end -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [32, 62])
def test_wide_codebook_forward_backward_and_int64_indices(bits):
    lfq = LFQ(bits=bits, entropy_group_bits=8).train()
    z = torch.randn(8, bits, 16, 16, generator=torch.Generator().manual_seed(bits)).requires_grad_(True)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = lfq(z)
        (out.entropy_loss + out.commitment).backward()
    n_tokens = 8 * 16 * 16
    assert max(sizes) <= n_tokens * math.ceil(bits / 8) * 2**4  # per-token group halves (2^(g/2)), nothing 2^K
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    idx = out.indices
    assert idx.dtype == torch.int64 and idx.shape == (8, 16, 16)
    assert int(idx.min()) >= 0 and int(idx.max()) < 2**bits
    assert int(idx.max()) >= 2 ** (bits - 1)  # the top bit is set somewhere: no int32 (or float) truncation
    assert bool(((idx >> (bits - 1)) & 1).any()) and bool(((idx >> 31) & 1).any())
    assert torch.equal(lfq.indices_to_codes(idx), out.codes.detach())
    assert torch.equal(codes_to_indices(out.codes), idx)
    assert 0 < out.codebook_entropy.item() <= bits * math.log(2)  # Σ_groups log 2^g


def test_wide_codebook_under_autocast_is_float32():
    lfq = LFQ(bits=32, entropy_group_bits=8).train()
    z = _z((2, 32, 4, 4), seed=11)
    ref = lfq(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = lfq(z)
    assert got.codebook_entropy.dtype == torch.float32
    assert torch.equal(got.codebook_entropy, ref.codebook_entropy)


def test_the_benchmarks_bsq_baseline_is_our_g_1():
    """benchmarks/bench_lfq_groups.py's re-implementation of BSQ / Infinity's per-bit entropy (its baseline) gives our
    g = 1 values, and quantises like LFQ."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        from bench_lfq_groups import _bsq_module
    finally:
        sys.path.pop(0)
    z = _z((2, 12, 4, 4), seed=13)
    codes, indices, _, h_s, h_c, commitment = _bsq_module(12)(z)
    ours = LFQ(bits=12, entropy_group_bits=1).train()(z)
    torch.testing.assert_close(h_c, ours.codebook_entropy, rtol=1e-6, atol=0)
    torch.testing.assert_close(h_s, ours.per_sample_entropy, rtol=1e-5, atol=1e-6)  # BSQ's log(p + 1e-8)
    assert torch.equal(indices, ours.indices) and torch.equal(codes, ours.codes) and commitment == ours.commitment
