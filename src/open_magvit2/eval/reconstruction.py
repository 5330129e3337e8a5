"""``evaluate-tokenizer``: reconstruction metrics of an image tokenizer on an image folder (paper tables 3, 4, 6).

Per image, with the official arithmetic (docs/design.md O-48, O-49): reconstruct with the (EMA) weights, clamp to
[−1, 1]; rFID from InceptionV3 pool features of the float [0, 1] real and reconstructed images (pytorch-fid input
protocol; the reference statistics are the same preprocessed real images); PSNR/SSIM after truncating *both*
images to uint8, averaged per batch of 4 and then over batches, plus the exact float variant; LPIPS alex and vgg
on [−1, 1]; codebook usage over 2^K codes. ``original_resolution`` pads each image with zeros (centred) to the
tokenizer's factor and crops both images back before the metrics, batch 1.

Runs distributed under torchrun (each rank a strided shard, sums all-reduced) and resumes from the periodic
state files in ``<output>/state``. Rank 0 writes ``metrics.json``, ``metrics.md``, ``per_image.csv``,
``code_usage.png`` and ``worst_psnr.png``.

An image that cannot be read is skipped (README, "Batch jobs"; ``strict``: the run stops at it): the metrics are
those of the readable images, exactly as if the others were not in the list, and ``unreadable`` names the
others. A resumed run tries them again, so fixing a file and rerunning completes the evaluation.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader

from open_magvit2.checkpoints.hub import native_size
from open_magvit2.distributed import DistContext, gather_to_main, process_group
from open_magvit2.eval import metrics as M
from open_magvit2.eval import report
from open_magvit2.eval.backbones import load_inception
from open_magvit2.eval.datasets import (
    ImageFiles,
    collate_read,
    list_digest,
    shard,
    strict_stop,
    subset,
    too_few_readable,
    unreadable_reason,
)
from open_magvit2.eval.runtime import load_state, reduce_moments, save_state
from open_magvit2.eval.runtime import state_path as _state_path
from open_magvit2.fileio import InputFile, find_files
from open_magvit2.imaging import IMAGE_SUFFIXES, crop_box, pad_to_multiple, to_uint8
from open_magvit2.lpips_net import load_lpips
from open_magvit2.progress import progress
from open_magvit2.weight_files import file_digest

_COLUMNS = ("position", "psnr", "psnr_exact", "ssim_exact", "lpips_alex", "lpips_vgg")


@dataclass(frozen=True)
class TokenizerEvalConfig:
    """What ``evaluate-tokenizer`` measures and how (defaults = the official protocol, docs/design.md O-48)."""

    checkpoint: str
    data: str | tuple[str, ...]  # image files, folders (recursive) and globs, e.g. an ImageNet val folder
    output: str
    size: int | None = None  # None: the tokenizer's native size (16 × its downsampling factor)
    original_resolution: bool = False
    weights: str = "ema"
    batch_size: int = 4
    protocol_batch_size: int = 4  # the official batch: PSNR/SSIM are means of per-batch means over groups of 4
    max_images: int | None = None
    inception_weights: str | None = None
    lpips_alex_weights: str | None = None
    lpips_vgg_weights: str | None = None
    lpips: bool = True
    device: str | None = None
    num_workers: int = 4
    metric_workers: int = 0  # processes for scikit-image SSIM (≈25 ms per 256² image on one core)
    save_every: int = 2000  # images per rank between resume states
    restart: bool = False
    worst_k: int = 16
    progress: bool = True
    strict: bool = False  # stop at the first image that cannot be read (default: skip it, list it in the result)


@dataclass
class TokenizerEvalResult(report.Result):
    rfid: float
    psnr: float
    ssim: float
    psnr_exact: float
    ssim_exact: float
    lpips_alex: float | None
    lpips_vgg: float | None
    codebook_usage: float
    used_codes: int
    codebook_size: int
    code_entropy_bits: float
    num_images: int  # the images evaluated: those of the list that could be read
    images_per_second: float
    protocol: dict[str, Any] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, why) of the images left out


class _Accumulator:
    """One rank's running results: feature moments, code counts, per-image records, worst-PSNR examples."""

    def __init__(self, bits: int, device: torch.device, worst_k: int) -> None:
        self.real, self.rec = M.Moments(2048, device), M.Moments(2048, device)
        self.usage = M.CodebookUsage(bits, device)
        self.cols: dict[str, list[float]] = {c: [] for c in (*_COLUMNS, "ssim_position", "ssim")}
        self.worst: list[tuple[float, int, Tensor, Tensor]] = []
        self.worst_k, self.done, self.elapsed = worst_k, 0, 0.0  # done: positions of the shard handed out
        self.unreadable: dict[int, str] = {}  # position → why it could not be read (tried again on resume)
        self.pending: list[tuple[list[int], Future]] = []
        self.session_images, self.session_seconds = 0, 0.0  # this process's share of the work done now

    def add(self, **columns: Any) -> None:
        for k, v in columns.items():
            self.cols[k].extend(np.asarray(v, dtype=np.float64).tolist())

    def offer_worst(self, psnr: np.ndarray, positions: list[int], gt: np.ndarray, rec: np.ndarray) -> None:
        for p, pos, g, r in zip(psnr, positions, gt, rec):
            if len(self.worst) < self.worst_k or p < self.worst[-1][0]:
                self.worst.append((float(p), pos, _thumb(g), _thumb(r)))
                self.worst = sorted(self.worst, key=lambda w: (w[0], w[1]))[: self.worst_k]

    def drain(self) -> None:
        for positions, fut in self.pending:
            self.add(ssim_position=positions, ssim=fut.result())
        self.pending = []

    def state_dict(self) -> dict:
        self.drain()
        return {
            "real": self.real.state_dict(), "rec": self.rec.state_dict(), "usage": self.usage.state(),
            "cols": {k: torch.tensor(v, dtype=torch.float64) for k, v in self.cols.items()},
            "worst": [[w[0], w[1], w[2], w[3]] for w in self.worst], "done": self.done, "elapsed": self.elapsed,
            "unreadable": [[p, r] for p, r in sorted(self.unreadable.items())],
        }

    def load_state_dict(self, s: dict) -> None:
        self.real.load_state_dict(s["real"])
        self.rec.load_state_dict(s["rec"])
        self.usage.load_state(s["usage"])
        self.cols = {k: v.tolist() for k, v in s["cols"].items()}
        self.worst = [(float(w[0]), int(w[1]), w[2], w[3]) for w in s["worst"]]
        self.done, self.elapsed = int(s["done"]), float(s["elapsed"])
        self.unreadable = {int(p): str(r) for p, r in s.get("unreadable", [])}  # a state from before the field: none


def _thumb(im: np.ndarray, side: int = 256) -> Tensor:
    pil = Image.fromarray(im)
    pil.thumbnail((side, side), Image.BILINEAR)
    return torch.from_numpy(np.asarray(pil).copy())


@dataclass
class ReconstructionNets:
    """The metric networks of ``evaluate-tokenizer`` (load once, reuse across runs with ``nets=``)."""

    inception: nn.Module
    alex: nn.Module | None
    vgg: nn.Module | None

    @classmethod
    def load(cls, cfg: TokenizerEvalConfig, device: torch.device | str = "cpu") -> ReconstructionNets:
        return cls(load_inception(cfg.inception_weights, device, prefer="pytorch-fid"),
                   load_lpips("alex", cfg.lpips_alex_weights, device) if cfg.lpips else None,
                   load_lpips("vgg", cfg.lpips_vgg_weights, device) if cfg.lpips else None)

    def to(self, device: torch.device) -> ReconstructionNets:
        return ReconstructionNets(*(None if m is None else m.to(device) for m in (self.inception, self.alex, self.vgg)))


@torch.inference_mode()
def _evaluate_batch(model: nn.Module, nets: ReconstructionNets, acc: _Accumulator, positions: list[int], x: Tensor,
                    cfg: TokenizerEvalConfig, pool: ProcessPoolExecutor | None) -> None:
    box = None
    xin = x
    if cfg.original_resolution:  # docs/design.md O-49: zero (= mid-grey) padding, centred, cropped back before metrics
        xin, box = pad_to_multiple(x, model.config.spatial_factor)
    out = model(xin)
    rec = out.reconstruction.clamp(-1, 1)
    if box is not None:
        rec = crop_box(rec, box)
    acc.usage.update(out.quantizer.indices)
    lp = {"lpips_alex": [np.nan] * len(positions), "lpips_vgg": [np.nan] * len(positions)}
    if nets.alex is not None:
        lp["lpips_alex"] = nets.alex(x, rec).flatten().cpu()
        lp["lpips_vgg"] = nets.vgg(x, rec).flatten().cpu()
    x01, r01 = (x + 1) / 2, (rec + 1) / 2  # official: features and PSNR start from these float images
    acc.real.update(nets.inception.fid_features(x01))
    acc.rec.update(nets.inception.fid_features(r01))
    gt_u8, rec_u8 = to_uint8(x), to_uint8(rec)  # = trunc(x01·255) for both (docs/design.md O-48), as HWC arrays
    psnr, _ = M.psnr_ssim_official(rec_u8, gt_u8, ssim=False)
    if pool is None:
        acc.add(ssim_position=positions, ssim=M.ssim_official(rec_u8, gt_u8))
    else:
        acc.pending.append((positions, pool.submit(M.ssim_official, rec_u8, gt_u8)))
    psnr_exact, ssim_exact = M.psnr_ssim_exact(rec, x)
    acc.add(position=positions, psnr=psnr, psnr_exact=psnr_exact.cpu(), ssim_exact=ssim_exact.cpu(), **lp)
    acc.offer_worst(psnr, positions, gt_u8, rec_u8)


def _load_model(cfg: TokenizerEvalConfig, device: torch.device) -> nn.Module:
    from open_magvit2.tokenizer import ImageTokenizer

    return ImageTokenizer.from_pretrained(cfg.checkpoint, weights=cfg.weights).to(device).eval()


def evaluate_tokenizer(
    cfg: TokenizerEvalConfig, model: nn.Module | None = None, nets: ReconstructionNets | None = None
) -> TokenizerEvalResult | None:
    """Run the evaluation; returns the result on rank 0 (``None`` on other ranks). ``model`` overrides loading
    ``cfg.checkpoint`` (it must follow the tokenizer API: ``config``, ``forward`` → reconstruction, quantizer);
    ``nets`` overrides loading the metric networks."""
    with process_group(cfg.device) as ctx:
        return _evaluate(cfg, model, nets, ctx)


def _evaluate(cfg: TokenizerEvalConfig, model: nn.Module | None, nets: ReconstructionNets | None,
              ctx: DistContext) -> TokenizerEvalResult | None:
    device = ctx.device
    specs = [cfg.data] if isinstance(cfg.data, str) else list(cfg.data)
    files = subset(find_files(specs, IMAGE_SUFFIXES, "image", unique_stems=False), cfg.max_images)
    model = (model or _load_model(cfg, device)).to(device).eval()
    tok = model.config
    if cfg.size is None and not cfg.original_resolution:
        cfg = replace(cfg, size=native_size(tok.spatial_factor))
    if not cfg.original_resolution and cfg.size % tok.spatial_factor:
        raise ValueError(f"--size {cfg.size} is not a multiple of the tokenizer's factor {tok.spatial_factor}")
    nets = (nets or ReconstructionNets.load(cfg, device)).to(device)
    if (nets.alex is None) == cfg.lpips:
        raise ValueError("the given metric networks do not match cfg.lpips")
    names = [f.name for f in files]
    fingerprint = {"checkpoint": str(cfg.checkpoint), "weights": cfg.weights, "size": cfg.size,
                   "original_resolution": cfg.original_resolution, "files": list_digest(names), "lpips": cfg.lpips,
                   "inception": str(nets.inception.weights_path), "world": ctx.world_size, "format": 1}
    acc = _Accumulator(tok.z_channels, device, cfg.worst_k)
    spath = _state_path(Path(cfg.output) / "state", ctx)
    state = None if cfg.restart else load_state(spath, fingerprint)
    if state is not None:
        acc.load_state_dict(state)
    positions = shard(len(files), ctx.rank, ctx.world_size)
    _run(cfg, model, nets, acc, files, positions, ctx, spath, fingerprint)
    return _finish(cfg, model, nets, acc, names, ctx)


def _run(cfg: TokenizerEvalConfig, model: nn.Module, nets: ReconstructionNets, acc: _Accumulator,
         files: list[InputFile], positions: list[int], ctx: DistContext, spath: Path, fingerprint: dict) -> None:
    device = ctx.device
    retried = set(acc.unreadable)  # unreadable in an earlier session: fixed since, perhaps
    todo = sorted(retried) + positions[acc.done :]
    bs = 1 if cfg.original_resolution else cfg.batch_size
    loader = DataLoader(ImageFiles([f.path for f in files], todo, None if cfg.original_resolution else cfg.size),
                        batch_size=bs, num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        collate_fn=collate_read)
    # fork is cheap but unsafe once CUDA is initialised; spawned workers re-import the package (a few seconds)
    fork = sys.platform == "linux" and not torch.cuda.is_initialized()
    pool = (ProcessPoolExecutor(cfg.metric_workers, mp_context=get_context("fork" if fork else "spawn"))
            if cfg.metric_workers > 0 else None)
    acc.session_images, since_save, t0 = 0, 0, time.perf_counter()
    bar = progress(loader, len(loader), "evaluate-tokenizer", enabled=cfg.progress and ctx.is_main, unit="batch")
    try:
        for batch in bar:
            for pos, reason in batch.unreadable:  # the batch rule: skip it and record it, or stop (strict)
                if cfg.strict:
                    raise strict_stop(files[pos].name, reason, files[pos].path)
                acc.unreadable[pos] = unreadable_reason(reason, files[pos].path)
            if batch.positions:
                _evaluate_batch(model, nets, acc, batch.positions, batch.data.to(device, non_blocking=True), cfg,
                                pool)
            for pos in batch.positions:
                acc.unreadable.pop(pos, None)  # read at last
            seen = [*batch.positions, *(p for p, _ in batch.unreadable)]
            acc.done += sum(p not in retried for p in seen)  # retried positions were handed out before
            acc.session_images += len(batch.positions)
            since_save += len(seen)
            if since_save >= cfg.save_every:
                acc.elapsed += time.perf_counter() - t0
                t0, since_save = time.perf_counter(), 0
                save_state(spath, {"fingerprint": fingerprint, **acc.state_dict()})
        acc.drain()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        acc.session_seconds = time.perf_counter() - t0
        acc.elapsed += acc.session_seconds
        save_state(spath, {"fingerprint": fingerprint, **acc.state_dict()})
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _finish(cfg: TokenizerEvalConfig, model: nn.Module, nets: ReconstructionNets, acc: _Accumulator, files: list[str],
            ctx: DistContext) -> TokenizerEvalResult | None:
    reduce_moments(acc.real, ctx)
    reduce_moments(acc.rec, ctx)
    acc.usage.all_reduce(ctx)
    gathered = gather_to_main((acc.cols, acc.worst, acc.session_images, acc.session_seconds, acc.unreadable), ctx)
    if not ctx.is_main:
        return None
    skipped = {p: r for g in gathered for p, r in g[4].items()}
    unreadable = [(files[p], skipped[p]) for p in sorted(skipped)]
    cols = {k: np.concatenate([np.asarray(g[0][k], dtype=np.float64) for g in gathered]) for k in acc.cols}
    order, sorder = np.argsort(cols["position"]), np.argsort(cols["ssim_position"])
    ssim_pos = cols["ssim_position"][sorder].astype(np.int64)
    cols = {**{k: cols[k][order] for k in _COLUMNS}, "ssim": cols["ssim"][sorder]}
    pos = cols["position"].astype(np.int64)
    covered = np.sort(np.concatenate([pos, np.fromiter(skipped, np.int64, len(skipped))]))
    if not (np.array_equal(covered, np.arange(len(files))) and np.array_equal(ssim_pos, pos)):
        raise RuntimeError(f"evaluated {len(pos)} and skipped {len(skipped)} images for a list of {len(files)}: "
                           "shards overlap or are missing")
    if len(pos) < 2 and unreadable:
        raise too_few_readable("images", len(pos), len(files), unreadable, "rFID needs at least 2 images")
    worst = sorted((w for g in gathered for w in g[1]), key=lambda w: (w[0], w[1]))[: cfg.worst_k]
    seconds = max(g[3] for g in gathered)
    new_images = sum(g[2] for g in gathered)
    group = 1 if cfg.original_resolution else cfg.protocol_batch_size
    # the official batches are counted among the readable images, as in the list without the others (= pos when
    # every image could be read)
    batches = np.arange(len(pos))
    lp_a, lp_v = (float(np.mean(cols[c])) if cfg.lpips else None for c in ("lpips_alex", "lpips_vgg"))
    rfid, fid_method = M.frechet_from_moments(acc.real, acc.rec, eps=1e-6)
    result = TokenizerEvalResult(
        rfid=rfid,
        psnr=M.mean_of_group_means(cols["psnr"], batches, group),
        ssim=M.mean_of_group_means(cols["ssim"], batches, group),
        psnr_exact=float(np.mean(cols["psnr_exact"])), ssim_exact=float(np.mean(cols["ssim_exact"])),
        lpips_alex=lp_a, lpips_vgg=lp_v, codebook_usage=acc.usage.usage, used_codes=acc.usage.used,
        codebook_size=acc.usage.codebook_size, code_entropy_bits=acc.usage.entropy_bits(), num_images=len(pos),
        images_per_second=new_images / seconds if new_images and seconds > 0 else float("nan"),
        protocol=_protocol(cfg, model, nets, files, ctx, group), unreadable=unreadable,
    )
    result.protocol["fid_method"] = fid_method
    if unreadable:
        result.protocol["unreadable"] = (f"{len(unreadable)} of {len(files)} listed images could not be read and are "
                                         f"in no metric; every metric covers the other {len(pos)} (metrics.json: "
                                         "unreadable)")
    _write_outputs(cfg, result, cols, files, worst, acc.usage.seen_counts().cpu().numpy())
    return result


def _protocol(cfg: TokenizerEvalConfig, model: nn.Module, nets: ReconstructionNets, files: list[str],
              ctx: DistContext, group: int) -> dict[str, Any]:
    k = model.config.z_channels
    pre = (f"original resolution, zero-padded (centred) to a multiple of {model.config.spatial_factor}, cropped "
           "back before the metrics, batch 1" if cfg.original_resolution else
           f"Resize shorter side to {cfg.size} (bilinear, antialias) + CenterCrop {cfg.size}, x/127.5 - 1")
    proto = {
        "checkpoint": str(cfg.checkpoint), "weights": cfg.weights, "data": str(cfg.data), "images": len(files),
        "file_list_sha256": list_digest(files), "order": "sorted relative paths" + (
            f", evenly spaced subset of --max-images {cfg.max_images}" if cfg.max_images else ""),
        "preprocessing": pre,
        "rfid": (f"InceptionV3 {nets.inception.weights_path.name} (sha256 {file_digest(nets.inception.weights_path)}"
                 "), pytorch-fid input protocol (float [0,1], bilinear to 299, 2x-1), 2048-d pool; reference = the "
                 "same preprocessed real images (float, not uint8)"),
        "psnr_ssim": (f"official: both images x*255 truncated to uint8, scikit-image, mean of per-batch means "
                      f"(batch {group}); exact: float64, no truncation, mean over images"),
        "lpips": "lpips 0.1 alex/vgg, inputs in [-1, 1], mean over images" if cfg.lpips else "not computed",
        "codebook_usage": f"distinct full indices / 2^{k} (bincount)",
        "world_size": ctx.world_size, "device": str(ctx.device), "torch": torch.__version__,
        "open_magvit2": _version(),
    }
    return proto


def _version() -> str:
    """The installed package's version (from its metadata: the package root is not imported from here)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("open-magvit2")
    except PackageNotFoundError:
        return "?"


def _write_outputs(cfg: TokenizerEvalConfig, r: TokenizerEvalResult, cols: dict[str, np.ndarray], files: list[str],
                   worst: list, counts: np.ndarray) -> None:
    out = Path(cfg.output)
    report.write_json(out / "metrics.json", r.to_dict())
    f = report.fmt
    rows = [
        ("rFID", f(r.rfid), "InceptionV3 pool, same preprocessed reals as reference"),
        ("PSNR", f(r.psnr, 2), "official (uint8-truncated, mean of batch means)"),
        ("SSIM", f(r.ssim), "official (uint8-truncated, mean of batch means)"),
        ("PSNR (exact)", f(r.psnr_exact, 2), "float64, no truncation"),
        ("SSIM (exact)", f(r.ssim_exact), "float64, no truncation"),
        ("LPIPS alex", f(r.lpips_alex), "lpips 0.1"), ("LPIPS vgg", f(r.lpips_vgg), "lpips 0.1"),
        ("codebook usage", f"{100 * r.codebook_usage:.2f}% ({r.used_codes}/{r.codebook_size})", "exact count"),
        ("code entropy", f"{r.code_entropy_bits:.3f} bits", f"max {np.log2(r.codebook_size):.0f}"),
        ("images", f"{r.num_images} of {len(files)}",
         f"{len(r.unreadable)} could not be read (metrics.json: unreadable)" if r.unreadable else "all listed"),
        ("images/s", f(r.images_per_second, 2), "this session, all ranks"),
    ]
    report.write_markdown(out / "metrics.md", report.markdown_table("Tokenizer reconstruction", rows, r.protocol))
    lines = ["position,file," + ",".join(c for c in (*_COLUMNS[1:], "ssim"))]
    for i, p in enumerate(cols["position"].astype(np.int64)):  # the images read, in list order
        lines.append(f"{p},{files[p]}," + ",".join(f"{cols[c][i]:.6f}" for c in (*_COLUMNS[1:], "ssim")))
    report.write_markdown(out / "per_image.csv", "\n".join(lines) + "\n")
    report.usage_histogram_png(out / "code_usage.png", counts, unused=r.codebook_size - r.used_codes, title=
                               f"codebook usage {100 * r.codebook_usage:.2f}% ({r.used_codes}/{r.codebook_size} codes)")
    report.worst_grid_png(out / "worst_psnr.png",
                          [(w[0], files[w[1]], w[2].numpy(), w[3].numpy()) for w in worst])
