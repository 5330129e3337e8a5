"""The evaluation maths against closed forms, scipy / scikit-image, and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from open_magvit2.eval import metrics as M
from open_magvit2.imaging import to_uint8


def _random_cov(rng: np.random.Generator, d: int, n: int) -> np.ndarray:
    return np.cov(rng.standard_normal((n, d)) @ rng.standard_normal((d, d)), rowvar=False)


# ---- Fréchet distance --------------------------------------------------------------------------------------------


def test_frechet_closed_form_for_commuting_gaussians():
    # Σ1 = U diag(a) Uᵀ, Σ2 = U diag(b) Uᵀ: FD = |μ1 − μ2|² + Σ (√a − √b)²
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = M.frechet_distance(mu1, u @ np.diag(a) @ u.T, mu2, u @ np.diag(b) @ u.T)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_identical_gaussians_is_zero_and_mean_shift_adds():
    rng = np.random.default_rng(1)
    s = _random_cov(rng, 5, 50)
    mu = rng.standard_normal(5)
    assert M.frechet_distance(mu, s, mu, s) == pytest.approx(0, abs=1e-8)
    assert M.frechet_distance(mu, s, mu + 2, s) == pytest.approx(4 * 5, rel=1e-7)


def test_frechet_near_singular_matches_scipy_reference_with_eps_fallback():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 8)) @ rng.standard_normal((8, 8))  # rank-3 covariances in 8-d
    y = rng.standard_normal((4, 8)) @ rng.standard_normal((8, 8))
    mu1, s1, mu2, s2 = *M.feature_statistics(x), *M.feature_statistics(y)
    covmean = linalg.sqrtm(s1.dot(s2))  # what pytorch-fid does, inlined
    if not np.isfinite(covmean).all():
        off = np.eye(8) * 1e-6
        covmean = linalg.sqrtm((s1 + off).dot(s2 + off))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real)
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="differ in size"):
        M.frechet_distance(mu1, s1, mu2[:3], s2[:3, :3])


def test_low_rank_frechet_is_exact():
    rng = np.random.default_rng(3)
    d = 40
    s1, mu1 = _random_cov(rng, d, 200), rng.standard_normal(d)
    rows = rng.standard_normal((7, d)) * 2 + 1  # 7 samples: rank-6 covariance
    mu2, s2 = M.feature_statistics(rows)
    w, v = np.linalg.eigh(s1)
    r1 = v @ np.diag(np.sqrt(w)) @ v.T  # independent form: Tr sqrt(√Σ1 Σ2 √Σ1)
    tr = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr
    assert M.frechet_distance_low_rank(mu1, s1, rows) == pytest.approx(expected, rel=1e-7)


def test_svd_frechet_matches_scipy_on_sample_statistics():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 10)) @ rng.standard_normal((10, 10))
    y = rng.standard_normal((300, 10)) @ rng.standard_normal((10, 10)) + 0.5
    expected = M.frechet_distance(*M.feature_statistics(x), *M.feature_statistics(y))
    got = M.frechet_distance_svd(torch.from_numpy(x), torch.from_numpy(y))
    assert got == pytest.approx(expected, rel=1e-8)


def test_moments_equal_numpy_cov_and_merge():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((30, 6)) * 3 + 2
    m = M.Moments(6)
    for chunk in np.array_split(x, 4):
        m.update(torch.from_numpy(chunk).float())
    x32 = x.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(m.mean(), x32.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.cov(), np.cov(x32, rowvar=False), rtol=1e-10, atol=1e-12)
    assert m.rows is None  # 30 > 6 rows: only the sums are kept
    small = M.Moments(6)
    small.update(torch.from_numpy(x[:5]))
    np.testing.assert_array_equal(M.gaussian(small).rows, x[:5])
    restored = M.Moments(6)
    restored.load_state_dict(small.state_dict())
    np.testing.assert_array_equal(restored.cov(), small.cov())


# ---- precision / recall / IS -------------------------------------------------------------------------------------


def _brute_pr(ref: np.ndarray, smp: np.ndarray, k: int) -> tuple[float, float]:
    def radii(f):
        d = ((f[:, None] - f[None]) ** 2).sum(-1)
        return np.sort(d, axis=1)[:, k]  # self at index 0

    d = ((ref[:, None] - smp[None]) ** 2).sum(-1)  # (refs, samples)
    precision = np.mean([(d[:, j] <= radii(ref)).any() for j in range(len(smp))])
    recall = np.mean([(d[i] <= radii(smp)).any() for i in range(len(ref))])
    return precision, recall


@pytest.mark.parametrize("block", [5, 1000])
def test_precision_recall_matches_brute_force(block):
    rng = np.random.default_rng(6)
    ref = rng.standard_normal((23, 5)).astype(np.float32)
    smp = (rng.standard_normal((17, 5)) * 1.5 + 0.7).astype(np.float32)
    got = M.precision_recall(ref, smp, k=3, block=block, half=False)
    assert got == pytest.approx(_brute_pr(ref.astype(np.float64), smp.astype(np.float64), 3))
    assert 0 < got.precision < 1 and 0 < got.recall < 1
    half = M.precision_recall(ref, smp, k=3, block=block, half=True)  # ADM's float16 distances: same here
    assert half == pytest.approx(got, abs=0.1)


def test_precision_recall_of_identical_sets_is_one():
    x = np.random.default_rng(7).standard_normal((12, 4)).astype(np.float32)
    assert M.precision_recall(x, x, half=False) == (1.0, 1.0)
    with pytest.raises(ValueError, match="more than 3 points"):
        M.manifold_radii(torch.zeros(3, 4))


def test_inception_score_matches_adm_formula():
    rng = np.random.default_rng(8)
    logits = rng.standard_normal((23, 10)) * 3
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = []
    for i in range(0, 23, 10):  # splits of 10: 10, 10, 3
        part = p[i : i + 10]
        kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
        scores.append(np.exp(kl.sum(1).mean()))
    assert M.inception_score(logits, split_size=10) == pytest.approx(np.mean(scores), rel=1e-10)
    assert M.inception_score(np.zeros((5, 10))) == pytest.approx(1.0)  # uniform predictions


# ---- PSNR / SSIM -------------------------------------------------------------------------------------------------


def test_official_psnr_ssim_are_scikit_image_on_truncated_images():
    rng = np.random.default_rng(9)
    x = torch.from_numpy(rng.integers(0, 256, (3, 3, 20, 24))).float() / 127.5 - 1  # from uint8, as the data
    rec = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    gt_u8, rec_u8 = to_uint8(x), to_uint8(rec)
    psnr, ssim = M.psnr_ssim_official(rec_u8, gt_u8)
    for i in range(3):
        g, r = gt_u8[i].astype(np.float32) / 255, rec_u8[i].astype(np.float32) / 255
        assert psnr[i] == peak_signal_noise_ratio(g, r)
        assert ssim[i] == structural_similarity(r, g, data_range=1.0, channel_axis=-1)


def test_official_truncation_quirk_on_ground_truth():
    # docs/design.md O-48: ((k/127.5 − 1) + 1)/2·255 truncates to k − 1 for 95 of the 256 uint8 values (float32)
    k = torch.arange(256, dtype=torch.float64)
    x = torch.from_numpy((k.numpy().astype(np.uint8) / 127.5 - 1.0).astype(np.float32)).view(1, 1, 1, 256)
    u8 = to_uint8(x.expand(1, 3, 1, 256))[0, 0, :, 0]  # the one uint8 conversion, used for PSNR/SSIM too
    assert int((u8.astype(int) == k.numpy() - 1).sum()) == 95
    assert int((u8.astype(int) == k.numpy()).sum()) == 161


def test_ssim_torch_and_exact_variant_match_scikit_image_in_float64():
    rng = np.random.default_rng(10)
    a, b = rng.random((2, 3, 16, 21)), rng.random((2, 3, 16, 21))
    got = M.ssim_torch(torch.from_numpy(a), torch.from_numpy(b))
    for i in range(2):
        ref = structural_similarity(a[i], b[i], data_range=1.0, channel_axis=0)
        assert float(got[i]) == pytest.approx(ref, rel=1e-10)
    gt_u8 = rng.integers(0, 256, (2, 3, 16, 21))
    gt = torch.from_numpy((gt_u8 / 127.5 - 1).astype(np.float32))
    rec = torch.from_numpy(b * 2 - 1)
    psnr, ssim = M.psnr_ssim_exact(rec, gt)
    for i in range(2):
        assert float(psnr[i]) == pytest.approx(peak_signal_noise_ratio(gt_u8[i] / 255, b[i], data_range=1.0))
        assert float(ssim[i]) == pytest.approx(structural_similarity(b[i], gt_u8[i] / 255, data_range=1.0,
                                                                     channel_axis=0), rel=1e-9)


def test_mean_of_group_means_weights_the_last_partial_batch_like_a_full_one():
    values = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    assert M.mean_of_group_means(values, np.arange(5), 4) == pytest.approx((2.5 + 10.0) / 2)
    assert M.mean_of_group_means(values[::-1], np.arange(5)[::-1], 4) == pytest.approx(6.25)  # order-free
    assert M.mean_of_group_means(values, np.arange(5), 1) == pytest.approx(values.mean())


# ---- codebook usage ----------------------------------------------------------------------------------------------


def test_codebook_usage_on_known_index_sets():
    u = M.CodebookUsage(4)
    u.update(torch.tensor([[0, 1, 1], [15, 1, 0]]))
    u.update(torch.tensor([3]))
    assert u.used == 4 and u.usage == 4 / 16
    assert u.counts.tolist() == [2, 3, 0, 1] + [0] * 11 + [1]
    full = M.CodebookUsage(3)
    full.update(torch.arange(8).repeat(5))
    assert full.usage == 1.0 and full.entropy_bits() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="outside"):
        u.update(torch.tensor([16]))


def test_codebook_usage_sparse_past_24_bits_equals_dense_counts():
    """Past 2^24 codes the counts are kept sparse: same used / usage / entropy as a brute-force count, any K to 62,
    and a saved state reads back."""
    g = torch.Generator().manual_seed(0)
    for bits in (25, 32, 62):
        u = M.CodebookUsage(bits)
        assert not u.dense
        hi = torch.randint(0, 2**bits - 1, (40,), generator=g) if bits < 62 else torch.randint(
            2**61, 2**62 - 1, (40,), generator=g)
        batches = [hi[torch.randint(0, 40, (n,), generator=g)] for n in (17, 0, 64, 5)]
        for b in batches:
            u.update(b)
        allv = torch.cat(batches).tolist()
        truth = {v: allv.count(v) for v in set(allv)}
        assert u.used == len(truth) and u.usage == len(truth) / 2**bits
        assert sorted(u.seen_counts().tolist()) == sorted(truth.values())
        p = torch.tensor(sorted(truth.values()), dtype=torch.float64) / len(allv)
        assert u.entropy_bits() == pytest.approx(float(-(p * p.log2()).sum()))
        v = M.CodebookUsage(bits)
        v.load_state(u.state())
        assert v.codes.tolist() == sorted(truth) and v.used == u.used
        with pytest.raises(ValueError, match="outside"):
            u.update(torch.tensor([-1]))
    with pytest.raises(ValueError, match=r"1\.\.62"):
        M.CodebookUsage(63)


def test_codebook_usage_all_reduce_merges_sparse_counts_of_ranks(monkeypatch):
    """Two ranks' sparse counts merge into exact sums (all_gather_objects stubbed by the two states)."""
    a, b = M.CodebookUsage(40), M.CodebookUsage(40)
    a.update(torch.tensor([5, 2**39, 5]))
    b.update(torch.tensor([7, 5]))
    monkeypatch.setattr(M, "all_gather_objects", lambda obj, ctx: [a.state(), b.state()])
    a.all_reduce(None)
    assert a.codes.tolist() == [5, 7, 2**39] and a.counts.tolist() == [3, 1, 1]
