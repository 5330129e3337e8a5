"""``evaluate-generator``: FID, sFID, Inception score, precision and recall of a sample file (paper table 5).

The protocol is the ADM evaluator's (guided-diffusion ``evaluations/evaluator.py``, the standard for this code
lineage; docs/design.md O-43), with torch-fidelity's port of the same TensorFlow Inception graph:

* inputs: ADM ``.npz`` files, ``arr_0`` uint8 (N, H, W, 3), streamed in batches; the graph resizes to 299×299
  (TF1 bilinear) and scales ``(x − 128) / 128``;
* FID on ``pool_3`` (2048-d), sFID on the first 7 channels of ``mixed_6/conv`` (17·17·7 = 2023-d, spatial);
  ``mu``/``sigma`` and ``mu_s``/``sigma_s`` stored in the reference file are used when present (as ADM does);
  scipy ``sqrtm`` with eps 1e-8;
* Inception score: softmax of the bias-free logits, 5000-sample splits, mean of the split scores;
* precision/recall: k = 3 nearest-neighbour manifolds of the pool features (float16 distances as ADM, float32
  on request).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from open_magvit2.device import pick_device
from open_magvit2.eval import metrics as M
from open_magvit2.eval import report
from open_magvit2.eval.backbones import load_inception
from open_magvit2.eval.datasets import iter_npz_images, npz_info
from open_magvit2.progress import progress
from open_magvit2.weight_files import file_digest


@dataclass(frozen=True)
class GeneratorEvalConfig:
    samples: str
    reference: str
    output: str | None = None
    inception_weights: str | None = None
    device: str | None = None
    progress: bool = True
    batch_size: int = 100
    k: int = 3
    pr_block: int = 10000
    pr_float16: bool = True
    is_split: int = 5000


@dataclass
class GeneratorEvalResult(report.Result):
    fid: float
    sfid: float
    inception_score: float
    precision: float | None
    recall: float | None
    num_samples: int
    num_reference: int
    protocol: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Activations:
    pool: torch.Tensor  # (N, 2048) float32, on the evaluation device
    logits: torch.Tensor  # (N, 1008) bias-free logits
    pool_moments: M.Moments
    spatial_moments: M.Moments


def activations(inception: nn.Module, path: str | Path, batch_size: int, device: torch.device,
                desc: str = "", show_progress: bool = False) -> _Activations:
    """ADM features of every image of an ``.npz`` (streamed)."""
    n = npz_info(path).shape[0]
    pools, logits = [], []
    pool_m, spatial_m = M.Moments(2048, device), M.Moments(2023, device)
    batches = progress(iter_npz_images(path, batch_size), -(-n // batch_size), desc, enabled=show_progress,
                       unit="batch")
    for batch in batches:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
        f = inception.adm_features(x)
        pools.append(f.pool)
        logits.append(f.logits_unbiased)
        pool_m.update(f.pool)
        spatial_m.update(f.spatial)
    return _Activations(torch.cat(pools), torch.cat(logits), pool_m, spatial_m)


def _reference_stats(path: Path, acts: _Activations | None) -> tuple[M.Gaussian, M.Gaussian, str]:
    """ADM ``read_statistics``: stored mu/sigma (and mu_s/sigma_s) win over statistics of ``arr_0``."""
    with np.load(path) as z:
        if "mu" in z.files:
            spatial = M.Gaussian(z["mu_s"], z["sigma_s"]) if "mu_s" in z.files else None
            if spatial is None and acts is None:
                raise ValueError(f"{path} holds mu/sigma but neither mu_s/sigma_s nor arr_0: sFID cannot be computed")
            return (M.Gaussian(z["mu"], z["sigma"]), spatial or M.gaussian(acts.spatial_moments),
                    "mu/sigma stored in the reference file")
    if acts is None:
        raise ValueError(f"{path} has neither arr_0 images nor mu/sigma statistics")
    return M.gaussian(acts.pool_moments), M.gaussian(acts.spatial_moments), "computed from the reference arr_0"


def evaluate_generator(cfg: GeneratorEvalConfig, inception: nn.Module | None = None) -> GeneratorEvalResult:
    device = pick_device(cfg.device)
    ref_path, smp_path = Path(cfg.reference), Path(cfg.samples)
    npz_info(smp_path)  # both files checked before the network is loaded
    ref_has_images = _has_images(ref_path)
    inception = (inception or load_inception(cfg.inception_weights, device, prefer="torch-fidelity")).to(device)
    ref = (activations(inception, ref_path, cfg.batch_size, device, "reference", cfg.progress)
           if ref_has_images else None)
    smp = activations(inception, smp_path, cfg.batch_size, device, "samples", cfg.progress)
    ref_pool, ref_spatial, ref_source = _reference_stats(ref_path, ref)
    fid, fid_method = M.frechet_gaussians(M.gaussian(smp.pool_moments), ref_pool, eps=1e-8)
    sfid, _ = M.frechet_gaussians(M.gaussian(smp.spatial_moments), ref_spatial, eps=1e-8)
    pr = (M.precision_recall(ref.pool, smp.pool, k=cfg.k, block=cfg.pr_block, half=cfg.pr_float16)
          if ref is not None else None)
    w = inception.weights_path
    result = GeneratorEvalResult(
        fid=fid, sfid=sfid, inception_score=M.inception_score(smp.logits, cfg.is_split),
        precision=None if pr is None else pr.precision, recall=None if pr is None else pr.recall,
        num_samples=smp.pool.shape[0], num_reference=0 if ref is None else ref.pool.shape[0],
        protocol={
            "samples": str(smp_path), "reference": str(ref_path), "reference_statistics": ref_source,
            "inception": f"{w.name} (sha256 {file_digest(w)}), torch-fidelity TF-compatible InceptionV3",
            "input": "uint8 images, TF1 bilinear resize to 299, (x-128)/128 (the ADM evaluator's graph)",
            "fid": f"pool_3 2048-d, {fid_method}", "sfid": "mixed_6/conv[..., :7] 2023-d",
            "inception_score": f"softmax of bias-free logits, splits of {cfg.is_split}, mean",
            "precision_recall": (f"k={cfg.k} NN manifolds of pool features, "
                                 f"{'float16 (ADM)' if cfg.pr_float16 else 'float32'} distances"
                                 if pr is not None else "not computed: the reference file has no arr_0 images"),
            "device": str(device), "torch": torch.__version__,
        },
    )
    if cfg.output:
        _write(Path(cfg.output), result)
    return result


def _has_images(path: Path) -> bool:
    try:
        npz_info(path)
    except ValueError as e:
        if "no 'arr_0'" in str(e):
            return False
        raise
    return True


def _write(out: Path, r: GeneratorEvalResult) -> None:
    report.write_json(out / "metrics.json", r.to_dict())
    f = report.fmt
    rows = [("FID", f(r.fid), "pool_3"), ("sFID", f(r.sfid), "mixed_6/conv"),
            ("IS", f(r.inception_score, 2), "ADM split mean"),
            ("precision", f(r.precision), "k=3"), ("recall", f(r.recall), "k=3"),
            ("samples", str(r.num_samples), ""), ("reference images", str(r.num_reference), "")]
    report.write_markdown(out / "metrics.md", report.markdown_table("Generator samples", rows, r.protocol))
