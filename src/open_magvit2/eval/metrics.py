"""The metrics of the paper's tables 3–6, with the arithmetic of the evaluators that produced them
(docs/design.md O-48–O-50).

* Fréchet distance: scipy ``sqrtm`` with the ε-on-the-diagonal fallback (pytorch-fid / ADM, rFID and FID) and the
  TF-GAN SVD form in torch (the official FVD, docs/design.md O-50).
* :class:`Moments`: streaming mean and unbiased covariance in float64 (what ``np.cov(rowvar=False)`` gives), so
  50k×2048 features never have to be held, gathered or checkpointed.
* Precision / recall: the ADM evaluator's k-NN manifolds (k = 3, squared distances, ``<=``), in row × column blocks.
* Inception score: the ADM evaluator's split-mean over contiguous splits of 5000.
* PSNR / SSIM: the official arithmetic (uint8 truncation of *both* images, scikit-image, docs/design.md O-48) and
  an exact float64 variant (no truncation), each per image; :func:`mean_of_group_means` gives the official average.
* :class:`CodebookUsage`: exact counts of every code, dense up to 2^24 codes and sparse beyond (docs/design.md O-48:
  not a Python dict over 12.8M indices).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from open_magvit2.distributed import DistContext, all_gather_objects, all_reduce_sum

# Codebooks up to 2^24 are counted in a dense vector (128 MiB at 24 bits); larger ones sparsely.
DENSE_MAX_BITS = 24

# ---- Fréchet distance --------------------------------------------------------------------------------------------


class Moments:
    """Running sums of features for mean / covariance: ``update`` with (N, D) batches, sums all-reduced across ranks.

    Sums are float64 on the features' device; ``cov()`` is the unbiased estimate, equal to
    ``np.cov(features, rowvar=False)`` up to float64 rounding. While at most D rows have been seen the rows are
    kept too (``rows``): a covariance of rank < D is then handled exactly by :func:`frechet_distance_low_rank`.
    """

    def __init__(self, dim: int, device: torch.device | str = "cpu") -> None:
        self.n = 0
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.rows: list[Tensor] | None = []

    def update(self, features: Tensor) -> None:
        f = features.detach().to(self.sum.device, torch.float64).reshape(features.shape[0], -1)  # (N, D)
        self.n += f.shape[0]
        self.sum += f.sum(0)
        self.outer += f.T @ f
        if self.rows is not None:
            self.rows = [*self.rows, f.cpu()] if self.n <= self.sum.numel() else None

    def state_dict(self) -> dict:
        rows = None if self.rows is None else torch.cat(self.rows) if self.rows else torch.zeros(0, self.sum.numel())
        return {"n": self.n, "sum": self.sum.cpu(), "outer": self.outer.cpu(), "rows": rows}

    def load_state_dict(self, state: dict) -> None:
        self.n = int(state["n"])
        self.sum = state["sum"].to(self.sum.device, torch.float64)
        self.outer = state["outer"].to(self.outer.device, torch.float64)
        self.rows = None if state["rows"] is None else [state["rows"].double()]

    def mean(self) -> np.ndarray:
        return (self.sum / max(self.n, 1)).cpu().numpy()

    def cov(self) -> np.ndarray:
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.n}; evaluate more images")
        mu = self.sum / self.n
        return ((self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)).cpu().numpy()


class Gaussian(NamedTuple):
    """Feature statistics for a Fréchet distance; ``rows`` are the samples themselves when there are at most D."""

    mu: np.ndarray
    sigma: np.ndarray
    rows: np.ndarray | None = None


def gaussian(m: Moments) -> Gaussian:
    rows = torch.cat(m.rows).numpy() if m.rows is not None and 2 <= m.n <= m.sum.numel() else None
    return Gaussian(m.mean(), m.cov(), rows)


def frechet_gaussians(a: Gaussian, b: Gaussian, eps: float = 1e-6) -> tuple[float, str]:
    """Fréchet distance and the method used: scipy ``sqrtm`` (the official one) when both covariances can be full
    rank, the exact low-rank form when one side has at most D samples (a smoke test, not a measurement: FID from
    fewer samples than dimensions is dominated by its bias, and ``sqrtm`` of a singular product is unreliable)."""
    for low, other in ((b, a), (a, b)):
        if low.rows is not None:
            return frechet_distance_low_rank(other.mu, other.sigma, low.rows), "exact low-rank (n <= dim)"
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma, eps), f"scipy sqrtm (eps {eps})"


def frechet_from_moments(a: Moments, b: Moments, eps: float = 1e-6) -> tuple[float, str]:
    return frechet_gaussians(gaussian(a), gaussian(b), eps)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features → (mean, covariance) exactly as pytorch-fid and ADM compute them."""
    features = np.asarray(features)
    return np.mean(features, axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2·sqrtm(Σ1Σ2)) with scipy ``sqrtm``; when the product is singular (non-finite
    root), ``eps`` is added to both diagonals, as pytorch-fid (eps 1e-6, the official rFID) and ADM (1e-8) do."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"the two feature statistics differ in size: mean {mu1.shape} vs {mu2.shape}, covariance "
            f"{sigma1.shape} vs {sigma2.shape}; were they computed with the same network and layer?"
        )
    from scipy import linalg  # the eval extra; imported here so that the codebook counter needs no scipy

    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products are handled below, as the reference implementations do
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1.dot(sigma2))  # (their ``disp=False`` is deprecated; same result)
    if not np.isfinite(covmean).all():
        warnings.warn(f"Fréchet distance: singular product, adding {eps} to the covariance diagonals", stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Fréchet distance: sqrtm has an imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance_low_rank(mu1: np.ndarray, sigma1: np.ndarray, rows2: np.ndarray) -> float:
    """Fréchet distance to the Gaussian of n ≤ D sample rows (N(mean, unbiased cov) of ``rows2``), exactly:
    with Σ2 = AᵀA (A = centred rows / √(n−1)), Tr sqrt(Σ1Σ2) = Σ sqrt(eig(A Σ1 Aᵀ)), an n×n problem."""
    rows2 = np.asarray(rows2, dtype=np.float64)
    n = rows2.shape[0]
    if n < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {n}")
    mu2 = rows2.mean(0)
    a = (rows2 - mu2) / np.sqrt(n - 1)  # (n, D)
    k = a @ np.asarray(sigma1, dtype=np.float64) @ a.T  # (n, n), symmetric PSD
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((k + k.T) / 2), 0, None)).sum()
    diff = np.asarray(mu1) - mu2
    return float(diff.dot(diff) + np.trace(sigma1) + (a * a).sum() - 2 * tr_sqrt)


def _symmetric_sqrt(mat: Tensor, eps: float = 1e-10) -> Tensor:
    """Square root of a symmetric PSD matrix by SVD; singular values below eps are kept, not rooted (TF-GAN)."""
    u, s, v = torch.svd(mat)
    return u @ torch.diag(torch.where(s < eps, s, torch.sqrt(s))) @ v.T


def frechet_distance_svd(features1: Tensor, features2: Tensor) -> float:
    """FVD as the official ``metrics/fvd.py`` computes it (docs/design.md O-50): torch, unbiased covariance, and
    Tr(sqrt(Σ1Σ2)) = Tr(sqrt(√Σ1 Σ2 √Σ1)) with SVD roots. Inputs (N, D) in the dtype they came in (float32)."""
    x1, x2 = features1.flatten(1), features2.flatten(1)
    m1, m2 = x1.mean(0), x2.mean(0)
    s1, s2 = torch.cov(x1.T), torch.cov(x2.T)  # (D, D), unbiased
    root1 = _symmetric_sqrt(s1)
    trace_sqrt = torch.trace(_symmetric_sqrt(root1 @ s2 @ root1))
    return float(torch.trace(s1 + s2) - 2.0 * trace_sqrt + torch.sum((m1 - m2) ** 2))


# ---- precision / recall (ADM evaluator, Kynkäänniemi et al. 2019) --------------------------------------------------


class PrecisionRecall(NamedTuple):
    precision: float  # fraction of samples inside the reference manifold
    recall: float  # fraction of references inside the sample manifold


def _pairwise_sq_dists(u: Tensor, v: Tensor, half: bool) -> Tensor:
    """‖u‖² − 2uvᵀ + ‖v‖², clamped at 0. ``half``: computed in float16 and used when finite, as the ADM evaluator
    does (it falls back to float32 otherwise)."""
    if half:
        uh, vh = u.half(), v.half()
        d = ((uh * uh).sum(1, keepdim=True) - 2 * uh @ vh.T + (vh * vh).sum(1)[None]).clamp_min(0)
        if torch.isfinite(d).all():
            return d.float()
    return ((u * u).sum(1, keepdim=True) - 2 * u @ v.T + (v * v).sum(1)[None]).clamp_min(0)


def manifold_radii(features: Tensor, k: int = 3, block: int = 10000, half: bool = True) -> Tensor:
    """(N,) squared distance of every point to its k-th nearest neighbour, the point itself counting as the 0th."""
    n = features.shape[0]
    if n <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} points, got {n}")
    radii = torch.empty(n, dtype=torch.float32, device=features.device)
    for i in range(0, n, block):
        row = torch.cat([_pairwise_sq_dists(features[i : i + block], features[j : j + block], half)
                         for j in range(0, n, block)], dim=1)  # (rows, N)
        radii[i : i + block] = row.kthvalue(k + 1, dim=1).values
    return radii


def precision_recall(
    reference: Tensor | np.ndarray, samples: Tensor | np.ndarray, k: int = 3, block: int = 10000, half: bool = True
) -> PrecisionRecall:
    """ADM precision/recall of (N, D) sample features against (M, D) reference features.

    A sample is "precise" when it lies within (``<=``) the k-NN radius of some reference; a reference is
    "recalled" when it lies within the radius of some sample. ``half=True`` follows the ADM evaluator's float16
    distance block; ``half=False`` computes everything in float32.
    """
    ref = torch.as_tensor(reference, dtype=torch.float32)
    smp = torch.as_tensor(samples, dtype=torch.float32).to(ref.device)
    r_ref, r_smp = manifold_radii(ref, k, block, half), manifold_radii(smp, k, block, half)
    ref_in = torch.zeros(ref.shape[0], dtype=torch.bool, device=ref.device)
    smp_in = torch.zeros(smp.shape[0], dtype=torch.bool, device=ref.device)
    for i in range(0, ref.shape[0], block):
        for j in range(0, smp.shape[0], block):
            d = _pairwise_sq_dists(ref[i : i + block], smp[j : j + block], half)  # (refs, samples)
            ref_in[i : i + block] |= (d <= r_smp[j : j + block][None]).any(1)
            smp_in[j : j + block] |= (d <= r_ref[i : i + block][:, None]).any(0)
    return PrecisionRecall(float(smp_in.double().mean()), float(ref_in.double().mean()))


def inception_score(logits_unbiased: Tensor | np.ndarray, split_size: int = 5000) -> float:
    """ADM Inception score: softmax of the bias-free 1008-way logits, exp(mean KL(p(y|x) ‖ p(y))) per contiguous
    split of ``split_size``, averaged over splits."""
    probs = torch.softmax(torch.as_tensor(logits_unbiased, dtype=torch.float64), dim=1)
    scores = []
    for i in range(0, probs.shape[0], split_size):
        part = probs[i : i + split_size]
        kl = part * (torch.log(part) - torch.log(part.mean(0, keepdim=True)))
        scores.append(torch.exp(kl.sum(1).mean()))
    return float(torch.stack(scores).mean())


# ---- PSNR / SSIM -------------------------------------------------------------------------------------------------


def psnr_ssim_official(rec_u8: np.ndarray, gt_u8: np.ndarray, ssim: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-image PSNR and SSIM of (B, H, W, 3) uint8 images, exactly as ``evaluation_image.py`` calls
    scikit-image: both /255 as float32, ``peak_signal_noise_ratio(gt, rec)`` (data range inferred: 1) and
    ``structural_similarity(rec, gt, data_range=1.0, channel_axis=-1)``. ``ssim=False`` returns NaN SSIMs."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rec, gt = rec_u8.astype(np.float32) / 255.0, gt_u8.astype(np.float32) / 255.0
    psnr = np.array([peak_signal_noise_ratio(g, r) for r, g in zip(rec, gt)], dtype=np.float64)
    if not ssim:
        return psnr, np.full(len(rec), np.nan)
    ss = np.array([structural_similarity(r, g, data_range=1.0, channel_axis=-1) for r, g in zip(rec, gt)])
    return psnr, ss.astype(np.float64)


def ssim_official(rec_u8: np.ndarray, gt_u8: np.ndarray) -> np.ndarray:
    """SSIM half of :func:`psnr_ssim_official` (a picklable entry point for worker processes)."""
    return psnr_ssim_official(rec_u8, gt_u8)[1]


def ssim_torch(a: Tensor, b: Tensor, data_range: float = 1.0, win: int = 7) -> Tensor:
    """Per-image SSIM of (B, C, H, W) images with scikit-image's defaults (uniform 7×7 window, sample covariance,
    K1 0.01, K2 0.03, the border of win//2 excluded from the mean, channels averaged), in the input dtype."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    cov_norm = win * win / (win * win - 1)
    mean = lambda t: F.avg_pool2d(t, win, stride=1)  # noqa: E731 — only windows that fit: the cropped region
    ux, uy = mean(a), mean(b)
    vx, vy = cov_norm * (mean(a * a) - ux * ux), cov_norm * (mean(b * b) - uy * uy)
    vxy = cov_norm * (mean(a * b) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(2).mean(2).mean(1)  # (B,)


def psnr_ssim_exact(rec: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """The exact-float variant (our label: "exact"): (B, 3, H, W) reconstructions in [−1, 1] clamped and mapped to
    [0, 1] in float64 without truncation; the ground truth recovered exactly as its uint8 value / 255."""
    r = (rec.double().clamp(-1, 1) + 1) / 2
    g = torch.round((gt.double() + 1) * 127.5) / 255.0
    mse = ((r - g) ** 2).flatten(1).mean(1)
    psnr = 10 * torch.log10(1.0 / mse)  # inf for identical images, as scikit-image
    return psnr, ssim_torch(r, g)


def mean_of_group_means(values: np.ndarray, positions: np.ndarray, group_size: int) -> float:
    """The official average: images in evaluation order form batches of ``group_size`` (the official batch size);
    average within each batch, then over batches — the last, partial batch weighs as much as a full one."""
    if len(values) == 0:
        return float("nan")
    groups = np.asarray(positions) // group_size
    sums = np.bincount(groups, weights=values)
    counts = np.bincount(groups)
    keep = counts > 0
    return float(np.mean(sums[keep] / counts[keep]))


# ---- codebook usage ----------------------------------------------------------------------------------------------


class CodebookUsage:
    """Counts of every code in [0, 2^bits) over all tokens seen, for any codebook up to 2^62.

    Up to :data:`DENSE_MAX_BITS` bits the counts are one dense int64 vector of 2^bits entries (a scatter-add per
    batch, docs/design.md O-48: not a Python dict over 12.8M indices); past it, codebooks are far larger than any
    number of tokens one can look at, so the counts are kept sparse: the sorted distinct codes seen and their counts
    (memory grows with the distinct codes, not with 2^bits). Both give exact counts.
    """

    def __init__(self, bits: int, device: torch.device | str = "cpu") -> None:
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 62:
            raise ValueError(f"codebook usage is counted for 1..62-bit codes (int64 indices), got {bits!r}")
        self.bits, self.device = bits, torch.device(device)
        self.dense = bits <= DENSE_MAX_BITS
        self.reset()

    def reset(self) -> None:
        """Forget every code seen."""
        if self.dense:
            self.counts = torch.zeros(2**self.bits, dtype=torch.int64, device=self.device)
        else:
            self.codes = torch.zeros(0, dtype=torch.int64, device=self.device)  # sorted, distinct
            self.counts = torch.zeros(0, dtype=torch.int64, device=self.device)

    @property
    def codebook_size(self) -> int:
        return 2**self.bits

    def update(self, indices: Tensor) -> None:
        idx = indices.detach().reshape(-1).to(self.device, torch.int64)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.codebook_size):
            raise ValueError(f"indices outside [0, 2^{self.bits}); is the tokenizer's codebook 2^{self.bits}?")
        if self.dense:
            self.counts.index_add_(0, idx, torch.ones_like(idx))
        else:
            self._merge(idx, torch.ones_like(idx))

    def _merge(self, codes: Tensor, counts: Tensor) -> None:
        self.codes, inverse = torch.unique(torch.cat([self.codes, codes]), sorted=True, return_inverse=True)
        total = torch.zeros(self.codes.numel(), dtype=torch.int64, device=self.device)
        self.counts = total.index_add_(0, inverse, torch.cat([self.counts, counts]))

    def state(self) -> Tensor:
        """The counts as one CPU tensor for a resumable state (dense: (2^bits,); sparse: (2, distinct), rows codes
        and counts); :meth:`load_state` reads it back."""
        return self.counts.cpu() if self.dense else torch.stack([self.codes, self.counts]).cpu()

    def load_state(self, state: Tensor) -> None:
        expected = (self.codebook_size,) if self.dense else (2, state.shape[-1])
        if tuple(state.shape) != expected:
            raise ValueError(f"a codebook-usage state of shape {tuple(state.shape)} does not fit 2^{self.bits} codes")
        if self.dense:
            self.counts = state.to(self.device, torch.int64).clone()
        else:
            self.codes, self.counts = (t.to(self.device, torch.int64).clone() for t in state)

    def all_reduce(self, ctx: DistContext) -> None:
        """Sum the counts of every rank into every rank."""
        if self.dense:
            all_reduce_sum(self.counts, ctx)
            return
        states = all_gather_objects(self.state(), ctx)
        self.reset()
        for s in states:
            self._merge(*(t.to(self.device) for t in s))

    def seen_counts(self) -> Tensor:
        """The counts of the codes seen at least once (in code order)."""
        return self.counts[self.counts > 0]

    @property
    def used(self) -> int:
        """Distinct codes seen."""
        return int((self.counts > 0).sum())

    @property
    def usage(self) -> float:
        """Fraction of the 2^bits codes that occurred at least once (the official "utilization")."""
        return self.used / self.codebook_size

    def entropy_bits(self) -> float:
        """Entropy (bits) of the empirical code distribution; ``bits`` means perfectly uniform use."""
        p = self.seen_counts().double()
        p = p / p.sum()
        return float(-(p * torch.log2(p)).sum()) if p.numel() else 0.0
