"""The memory-free entropy terms against brute force: dense softmax over the codebook, gradcheck, autocast, DDP sync."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from open_magvit2.quantize import (
    LFQ,
    binary_entropy_from_logits,
    codebook_probs,
    dense_entropy_terms,
    entropy_from_probs,
    entropy_terms,
    indices_to_codes,
)

TAU = 0.01


def _z(shape, scale=0.005, seed=0, dtype=torch.float32):
    return (scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)).to(dtype)


def _dense_codebook_probs(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """Brute force p̄: the official softmax over all 2^K codes, averaged over tokens."""
    k = z.shape[1]
    flat = z.movedim(1, -1).reshape(-1, k)
    codebook = indices_to_codes(torch.arange(2**k), k, z.dtype)  # (2^K, K)
    return torch.softmax(2 * flat @ codebook.t() / temperature, dim=-1).mean(0)


@pytest.mark.parametrize("scale", [0.002, 0.005, 0.02, 1.0])
@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_closed_form_equals_dense_k10(scale, eps):
    z = _z((4, 10, 3, 5), scale=scale, seed=1, dtype=torch.float64)
    ours = entropy_terms(z, temperature=TAU, eps=eps)
    dense = dense_entropy_terms(z, TAU, eps)
    torch.testing.assert_close(ours.per_sample_entropy, dense.per_sample_entropy, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(ours.codebook_entropy, dense.codebook_entropy, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("bits", [1, 2, 5])
def test_closed_form_equals_dense_small_k(bits):
    z = _z((3, bits, 4), seed=bits, dtype=torch.float64)
    for ours, dense in zip(entropy_terms(z, temperature=TAU), dense_entropy_terms(z, TAU)):
        torch.testing.assert_close(ours, dense, rtol=1e-10, atol=1e-15)


def test_gradients_equal_dense_k10():
    z1 = _z((4, 10, 3, 5), seed=2, dtype=torch.float64).requires_grad_(True)
    z2 = z1.detach().clone().requires_grad_(True)
    h = entropy_terms(z1, temperature=TAU, eps=1e-5)
    d = dense_entropy_terms(z2, TAU, 1e-5)
    (0.7 * h.per_sample_entropy - 1.3 * h.codebook_entropy).backward()
    (0.7 * d.per_sample_entropy - 1.3 * d.codebook_entropy).backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-9, atol=1e-12)


def test_log_softmax_eps_is_a_no_op_shift():
    """The official `log_softmax(ℓ/τ + 1e-5)` equals `log_softmax(ℓ/τ)`: only H_c's eps changes a value."""
    z = _z((2, 10, 4, 4), seed=3)
    with_eps, without = dense_entropy_terms(z, TAU, 1e-5), dense_entropy_terms(z, TAU, 0.0)
    torch.testing.assert_close(with_eps.per_sample_entropy, without.per_sample_entropy, rtol=1e-6, atol=0)
    assert with_eps.codebook_entropy < without.codebook_entropy  # log(p + eps) > log p: eps lowers H_c


def test_eps_zero_is_the_exact_entropy():
    z = _z((4, 8, 4, 4), seed=4, dtype=torch.float64)
    p = _dense_codebook_probs(z, TAU)
    exact = -(p * p.log()).sum()
    torch.testing.assert_close(entropy_terms(z, temperature=TAU, eps=0.0).codebook_entropy, exact, rtol=1e-12, atol=0)
    one_hot = torch.zeros(8, dtype=torch.float64).index_fill_(0, torch.tensor([3]), 1.0)
    assert entropy_from_probs(one_hot, 0.0).item() == 0.0  # 0·log 0 = 0
    uniform = torch.full((8,), 1 / 8, dtype=torch.float64)
    assert entropy_from_probs(uniform, 0.0).item() == pytest.approx(math.log(8), rel=1e-12)
    # with eps = 0 and codes of probability 0 (float underflow), gradients stay finite
    sharp = (50 * torch.randn(2, 8, 2, 2, dtype=torch.float64)).requires_grad_(True)
    entropy_terms(sharp, temperature=TAU, eps=0.0).codebook_entropy.backward()
    assert torch.isfinite(sharp.grad).all()


def test_codebook_probs_brute_force_k8():
    z = _z((3, 8, 2, 5), seed=5, dtype=torch.float64)
    p = codebook_probs(z, temperature=TAU)
    assert p.shape == (256,)
    torch.testing.assert_close(p, _dense_codebook_probs(z, TAU), rtol=1e-12, atol=1e-18)
    torch.testing.assert_close(p.sum(), torch.tensor(1.0, dtype=torch.float64))
    # odd K: the A half has K // 2 bits
    z7 = _z((2, 7, 3), seed=6, dtype=torch.float64)
    torch.testing.assert_close(codebook_probs(z7, temperature=TAU), _dense_codebook_probs(z7, TAU), rtol=1e-12, atol=0)


def test_codebook_probs_gradients_k8():
    """gradcheck of the split-matmul p̄ (all 256 outputs) and of the entropy terms in float64."""
    z = _z((2, 8, 2, 1), seed=7, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: codebook_probs(t, temperature=TAU), (z,), eps=1e-8, atol=1e-6)
    assert torch.autograd.gradcheck(lambda t: tuple(entropy_terms(t, temperature=TAU)), (z,), eps=1e-8, atol=1e-6)
    # and the analytic Jacobian equals the dense one
    w = torch.randn(256, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    (g_ours,) = torch.autograd.grad((codebook_probs(z, temperature=TAU) * w).sum(), z)
    (g_dense,) = torch.autograd.grad((_dense_codebook_probs(z, TAU) * w).sum(), z)
    torch.testing.assert_close(g_ours, g_dense, rtol=1e-10, atol=1e-12)


def test_binary_entropy_stable_at_large_logits():
    x = torch.tensor([0.0, 1.0, -30.0, 400.0, -4000.0, 1e6])
    h = binary_entropy_from_logits(x)
    assert torch.isfinite(h).all()
    assert h[0].item() == pytest.approx(math.log(2), rel=1e-7)
    x64 = torch.tensor([1.0, -30.0, 80.0], dtype=torch.float64)
    # float64 reference with log p, log(1 − p) from logsigmoid (log of a rounded 1 − 1e-13 would be inexact)
    p, q = torch.sigmoid(x64), torch.sigmoid(-x64)
    ref = -(p * torch.nn.functional.logsigmoid(x64) + q * torch.nn.functional.logsigmoid(-x64))
    torch.testing.assert_close(h[[1, 2]].double(), ref[:2], rtol=1e-6, atol=0)
    torch.testing.assert_close(h[3:].double(), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-30)
    x.requires_grad_(True)
    binary_entropy_from_logits(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_never_saves_tokens_by_codebook_tensors():
    """Autograd keeps nothing of size N·2^K (the dense form keeps several): largest saved tensor ≤ max(2^K, N·2^K_B)."""
    z = _z((4, 18, 4, 4), seed=9).requires_grad_(True)  # N = 64 tokens, 2^18 codes
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = LFQ(bits=18).train()(z)
        (out.entropy_loss + out.commitment).backward()
    assert max(sizes) <= max(2**18, 64 * 2**9)


def test_entropy_terms_fp32_under_autocast():
    z = _z((2, 10, 4, 4), seed=10)
    ref = entropy_terms(z, temperature=TAU)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = entropy_terms(z, temperature=TAU)
        out = LFQ(bits=10).train()(z)
    for a in (*got, out.per_sample_entropy, out.codebook_entropy, out.commitment):
        assert a.dtype == torch.float32
    assert torch.equal(got.per_sample_entropy, ref.per_sample_entropy)
    assert torch.equal(got.codebook_entropy, ref.codebook_entropy)
    torch.testing.assert_close(out.codebook_entropy, ref.codebook_entropy, rtol=0, atol=0)
    # bf16 input: computed as float32 of the bf16 values
    zb = z.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got_b = entropy_terms(zb, temperature=TAU)
    ref_b = entropy_terms(zb.float(), temperature=TAU)
    assert got_b.codebook_entropy.dtype == torch.float32
    assert torch.equal(got_b.codebook_entropy, ref_b.codebook_entropy)


def test_entropy_terms_bad_temperature():
    with pytest.raises(ValueError):
        entropy_terms(torch.randn(1, 4, 2), temperature=0.0)


# ---- distributed: p̄ synced over ranks ---------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_synced_codebook_entropy_equals_concatenated_batch(tmp_path, monkeypatch):
    """2 gloo ranks with unequal batches: synced H_c = H_c of the concatenated batch on both ranks, and the
    per-rank gradient, averaged over ranks as DDP does, equals the gradient of the concatenated-batch H_c; the same
    for the grouped H_c (entropy groups of 3 bits, float64)."""
    world = 2
    zs = [_z((3, 10, 2, 2), seed=11), _z((1, 10, 2, 2), seed=12)]
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # spawned ranks import dist_worker from sys.path
    import dist_worker

    args = (world, str(tmp_path / "rdzv"), zs, TAU, str(tmp_path))
    mp.spawn(dist_worker.run, args=args, nprocs=world, join=True)
    res = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]

    full = torch.cat(zs).requires_grad_(True)
    ref = entropy_terms(full, temperature=TAU, sync=False)
    ref.codebook_entropy.backward()
    grads = full.grad.split([3, 1])
    full_g = torch.cat(zs).double().requires_grad_(True)
    ref_g = entropy_terms(full_g, temperature=TAU, sync=False, group_bits=3).codebook_entropy
    ref_g.backward()
    grads_g = full_g.grad.split([3, 1])
    for r in range(world):
        torch.testing.assert_close(res[r]["h_c"], ref.codebook_entropy.detach(), rtol=1e-6, atol=0)
        torch.testing.assert_close(res[r]["lfq_h_c"], ref.codebook_entropy.detach(), rtol=1e-6, atol=0)
        torch.testing.assert_close(res[r]["h_s"], entropy_terms(zs[r], temperature=TAU).per_sample_entropy)
        torch.testing.assert_close(res[r]["grad"] / world, grads[r], rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(res[r]["grouped_h_c"], ref_g.detach(), rtol=1e-12, atol=0)  # entropy groups
        torch.testing.assert_close(res[r]["grouped_grad"] / world, grads_g[r], rtol=1e-10, atol=1e-15)
        assert not torch.allclose(res[r]["local_h_c"], res[r]["h_c"])  # sync=False keeps the per-rank value
    # the default LFQ call is local: rank 0 made it alone (no collective, no hang) and got its own batch's value
    torch.testing.assert_close(res[0]["lone_h_c"], res[0]["local_h_c"])
