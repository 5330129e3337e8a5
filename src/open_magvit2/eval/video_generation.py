"""``evaluate-video-generator``: FVD of generated clips against real videos, with the I3D of ``evaluate-video``.

Samples: a video sample file (:mod:`open_magvit2.eval.video_samples`: ``arr_0`` uint8 (N, T, H, W, 3)), streamed
in batches. Reference, one of:

* a folder of videos (class sub-folders allowed; sorted, an evenly spaced subset with ``max_reference``): one clip
  per video, read by ``evaluate-video``'s clip reader at the samples' size: the centre window of T frames, shorter
  side resized to H (bilinear, no antialias), centre crop H×H (so the samples must be square). Videos shorter than
  T are listed in ``skipped``; a video that cannot be read follows the batch rule (README, "Batch jobs": skipped and
  listed in ``unreadable``, or the run stops at it under ``strict``);
* a video sample file of real clips (the same T×H×W as the samples);
* the I3D features of an earlier run (``reference_i3d.npz`` in its output folder): the reference statistics cache.
  Its clip length and size, and the I3D weights (sha256), must be the samples' and this run's.

FVD (docs/design.md O-50): uint8 clips → per-frame bilinear 224×224 (no antialias) → ``2x/255 − 1`` → I3D
(``i3d_pretrained_400.pt``) 400 logits → Fréchet distance with SVD square roots in torch
(:func:`~open_magvit2.eval.metrics.frechet_distance_svd`). Sample clips are uint8 already, so they enter the I3D as
stored, as in the official FVD of generated videos; the reference clips are the uint8 frames the reader returns.

Runs under torchrun (each rank a strided share of the sample batches and of the reference videos, features gathered
to rank 0 and put back in file order, so the number does not depend on the number of ranks). No resume states: the
reference cache is what a second run saves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from open_magvit2.data.video_io import VIDEO_SUFFIXES
from open_magvit2.distributed import DistContext, gather_to_main, process_group
from open_magvit2.eval import metrics as M
from open_magvit2.eval import report
from open_magvit2.eval.backbones import load_i3d
from open_magvit2.eval.datasets import (
    collate_read,
    list_digest,
    shard,
    strict_stop,
    subset,
    too_few_readable,
    unreadable_reason,
)
from open_magvit2.eval.i3d import i3d_input_uint8
from open_magvit2.eval.video import _Clips
from open_magvit2.eval.video_samples import VideoSamplesInfo, iter_video_samples, npz_header, video_samples_info
from open_magvit2.fileio import atomic_write, find_files
from open_magvit2.progress import progress
from open_magvit2.weight_files import file_digest

REFERENCE_CACHE = "reference_i3d.npz"  # written into the output folder: pass it as the reference of a later run
FVD_PROTOCOL = ("uint8 clips, per-frame bilinear 224 (no antialias), 2x/255-1, I3D 400 logits averaged over time, "
                "torch SVD Fréchet distance (unbiased covariance)")


@dataclass(frozen=True)
class VideoGeneratorEvalConfig:
    samples: str  # a video sample file (eval.video_samples)
    reference: str  # a folder of videos, a video sample file of real clips, or a reference_i3d.npz
    output: str | None = None  # metrics.json, metrics.md and the reference cache
    i3d_weights: str | None = None
    max_reference: int | None = None  # an evenly spaced subset of the reference videos
    batch_size: int = 16
    device: str | None = None
    num_workers: int = 4
    progress: bool = True
    strict: bool = False  # stop at the first reference video that cannot be read (default: skip it, list it)


@dataclass
class VideoGeneratorEvalResult(report.Result):
    fvd: float
    num_samples: int
    num_reference: int  # reference clips in the statistics
    frames: int
    height: int
    width: int
    skipped: list[str]  # reference videos shorter than the clip
    seconds: float
    protocol: dict[str, Any] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (reference video, why it cannot be read)


@torch.inference_mode()
def i3d_logits(i3d: nn.Module, clips: Tensor, device: torch.device | str = "cpu") -> Tensor:
    """(B, D) float32 CPU features (the 400 logits) of uint8 (B, 3, T, H, W) clips."""
    return i3d(i3d_input_uint8(clips.to(device))).float().cpu()


# ---- the reference ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reference:
    kind: str  # "videos", "clips" or "features"
    path: Path
    paths: list[Path] = field(default_factory=list)  # videos
    names: list[str] = field(default_factory=list)  # videos
    clips: VideoSamplesInfo | None = None


def _reference(cfg: VideoGeneratorEvalConfig, smp: VideoSamplesInfo) -> _Reference:
    """What ``cfg.reference`` is, checked against the samples before any network is loaded."""
    p = Path(cfg.reference)
    if p.is_dir():
        if smp.height != smp.width:
            raise ValueError(f"the samples are {smp.height}×{smp.width} clips, but clips cut from a video folder are "
                             "square (shorter side resized, centre crop): pass an .npz of reference clips of that size")
        files = subset(find_files([p], VIDEO_SUFFIXES, "video", unique_stems=False), cfg.max_reference)
        return _Reference("videos", p, [f.path for f in files], [f.name for f in files])
    if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
        raise ValueError(f"{p} is one video; --reference takes a folder of videos (one clip each), an .npz of clips, "
                         f"or the {REFERENCE_CACHE} of an earlier run")
    if not p.exists():
        raise FileNotFoundError(f"reference not found: {p} (a folder of videos, an .npz of clips, or the "
                                f"{REFERENCE_CACHE} of an earlier run)")
    if cfg.max_reference is not None:
        raise ValueError(f"--max-reference picks videos of a folder; {p} is a file")
    if _has_features(p):
        return _Reference("features", p)
    info = video_samples_info(p)
    if info.shape[1:] != smp.shape[1:]:
        raise ValueError(f"the reference clips are {_dims(info)}, the samples {_dims(smp)}: FVD compares clips of "
                         "the same length and size")
    return _Reference("clips", p, clips=info)


def _has_features(path: Path) -> bool:
    """Whether an ``.npz`` holds ``features`` (a reference cache); ``ValueError`` if it is not an ``.npz``."""
    try:
        npz_header(path, "features", "reference file")
    except ValueError as e:
        if "has no 'features'" not in str(e):
            raise
        return False
    return True


def _dims(info: VideoSamplesInfo) -> str:
    return f"{info.frames} frames of {info.height}×{info.width}"


class _Cache:
    """The reference features of an earlier run (``reference_i3d.npz``) and what they were computed from."""

    def __init__(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as z:
                self.features = z["features"]
                self.frames, self.height, self.width = (int(z[k]) for k in ("frames", "height", "width"))
                self.i3d, self.protocol = str(z["i3d"]), str(z["protocol"])
        except (KeyError, ValueError) as e:
            raise ValueError(f"{path} is not a reference feature file written by evaluate-video-generator "
                             f"({str(e).splitlines()[0]})") from None
        if self.features.ndim != 2 or not np.issubdtype(self.features.dtype, np.floating):
            raise ValueError(f"{path}: 'features' must be float (N, D) I3D features, got {self.features.dtype} "
                             f"{self.features.shape}")
        self.path = path

    def check(self, smp: VideoSamplesInfo, i3d: str) -> None:
        if (self.frames, self.height, self.width) != smp.shape[1:4]:
            raise ValueError(f"{self.path} holds the I3D features of clips of {self.frames} frames of "
                             f"{self.height}×{self.width}, the samples are {_dims(smp)}: compute the reference again "
                             "from the videos")
        if self.i3d != i3d:
            raise ValueError(f"{self.path} was computed with another I3D (weights {self.i3d}, this run: {i3d}); "
                             "compute the reference again from the videos")


def _write_cache(path: Path, features: Tensor, smp: VideoSamplesInfo, i3d: str, protocol: str,
                 names: list[str]) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, features=features.numpy().astype(np.float32), frames=smp.frames, height=smp.height,
                     width=smp.width, i3d=np.str_(i3d), protocol=np.str_(protocol), names=np.asarray(names, dtype=str))

    return atomic_write(path, write)


# ---- features on this rank ---------------------------------------------------------------------------------------


@dataclass
class _Part:
    """One rank's features: (position in file order, (D,) features) plus, for videos, what could not be used."""

    pos: list[int] = field(default_factory=list)
    feats: list[Tensor] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    unreadable: list[tuple[int, str]] = field(default_factory=list)

    def add(self, positions: list[int], feats: Tensor) -> None:
        self.pos += positions
        self.feats += list(feats)


def _clip_file_features(i3d: nn.Module, info: VideoSamplesInfo, cfg: VideoGeneratorEvalConfig, ctx: DistContext,
                        desc: str) -> _Part:
    """Batches ``rank``, ``rank + world``, … of a clip file (every rank streams the file, decoding is cheap)."""
    part, bs = _Part(), cfg.batch_size
    batches = progress(iter_video_samples(info.path, bs, info), -(-info.num // bs), desc,
                       enabled=cfg.progress and ctx.is_main, unit="batch")
    for b, batch in enumerate(batches):
        if b % ctx.world_size == ctx.rank:
            x = torch.from_numpy(batch).permute(0, 4, 1, 2, 3)  # (B, 3, T, H, W) uint8
            part.add(list(range(b * bs, b * bs + len(batch))), i3d_logits(i3d, x, ctx.device))
    return part


def _video_features(i3d: nn.Module, ref: _Reference, smp: VideoSamplesInfo, cfg: VideoGeneratorEvalConfig,
                    ctx: DistContext) -> _Part:
    part = _Part()
    loader = DataLoader(_Clips(ref.paths, shard(len(ref.paths), ctx.rank, ctx.world_size), smp.frames, smp.height),
                        batch_size=cfg.batch_size, num_workers=cfg.num_workers, collate_fn=collate_read)
    for batch in progress(loader, len(loader), "reference videos", enabled=cfg.progress and ctx.is_main,
                          unit="batch"):
        for p, reason in batch.unreadable:  # the batch rule: skip it and record it, or stop (strict)
            if cfg.strict:
                raise strict_stop(ref.names[p], reason, ref.paths[p])
            part.unreadable.append((p, unreadable_reason(reason, ref.paths[p])))
        part.skipped += batch.empty
        if batch.positions:
            part.add(batch.positions, i3d_logits(i3d, batch.data, ctx.device))
    return part


def _merge(parts: list[_Part]) -> tuple[Tensor | None, list[int], list[int], list[tuple[int, str]]]:
    """Every rank's features stacked in file order (None when there are none), their positions, and the positions
    of the skipped and of the unreadable videos."""
    pos = [p for g in parts for p in g.pos]
    feats = [f for g in parts for f in g.feats]
    order = sorted(range(len(pos)), key=pos.__getitem__)
    stacked = torch.stack([feats[i] for i in order]) if pos else None
    return (stacked, sorted(pos), sorted(p for g in parts for p in g.skipped),
            sorted((p, r) for g in parts for p, r in g.unreadable))


# ---- the pipeline ------------------------------------------------------------------------------------------------


def evaluate_video_generator(cfg: VideoGeneratorEvalConfig,
                             i3d: nn.Module | None = None) -> VideoGeneratorEvalResult | None:
    """FVD of ``cfg.samples`` against ``cfg.reference`` (module docstring); the result on rank 0 (None on other
    ranks). ``i3d`` overrides loading ``cfg.i3d_weights``."""
    smp = video_samples_info(cfg.samples)  # both inputs checked before the network is loaded
    if smp.num < 2:
        raise ValueError(f"FVD needs at least 2 sample clips; {smp.path} holds {smp.num}")
    ref = _reference(cfg, smp)
    cache = _Cache(ref.path) if ref.kind == "features" else None
    with process_group(cfg.device) as ctx:
        net = (i3d or load_i3d(cfg.i3d_weights, ctx.device)).to(ctx.device).eval()
        w = getattr(net, "weights_path", None)
        digest = f"sha256 {file_digest(w)}" if w else "injected"  # what a reference cache must have been made with
        if cache is not None:
            cache.check(smp, digest)
        t0 = time.perf_counter()
        if ref.kind == "videos":
            ref_part = _video_features(net, ref, smp, cfg, ctx)
        elif ref.kind == "clips":
            ref_part = _clip_file_features(net, ref.clips, cfg, ctx, "reference clips")
        else:
            ref_part = _Part()
        smp_part = _clip_file_features(net, smp, cfg, ctx, "samples")
        gathered = gather_to_main((ref_part, smp_part), ctx)
        if not ctx.is_main:
            return None
        return _result(cfg, smp, ref, cache, digest, gathered, time.perf_counter() - t0, ctx,
                       i3d_name=Path(w).name if w else "")


def _result(cfg: VideoGeneratorEvalConfig, smp: VideoSamplesInfo, ref: _Reference, cache: _Cache | None,
            digest: str, gathered: list[tuple[_Part, _Part]], seconds: float, ctx: DistContext,
            i3d_name: str) -> VideoGeneratorEvalResult:
    ref_feats, ref_pos, skipped_pos, bad = _merge([g[0] for g in gathered])
    smp_feats = _merge([g[1] for g in gathered])[0]
    skipped = [ref.names[p] for p in skipped_pos]
    unreadable = [(ref.names[p], r) for p, r in bad]
    if cache is not None:
        ref_feats = torch.from_numpy(cache.features)
    n_ref = 0 if ref_feats is None else ref_feats.shape[0]
    need = f"FVD needs at least 2 reference clips of {smp.frames} frames"
    if n_ref < 2 and unreadable:
        raise too_few_readable("videos", n_ref + len(skipped), len(ref.names), unreadable,
                               f"{need} ({len(skipped)} too short)")
    if n_ref < 2:
        why = f" ({len(skipped)} of {len(ref.names)} videos are shorter)" if ref.kind == "videos" else ""
        raise ValueError(f"{need}; got {n_ref}{why}")
    ref_protocol = _reference_protocol(cfg, smp, ref, cache, n_ref, len(skipped), len(unreadable))
    out = Path(cfg.output) if cfg.output else None
    cache_note = "not written (no output folder)"
    if cache is not None:
        cache_note = f"read from {cache.path}"
    elif out is not None:
        names = [ref.names[p] for p in ref_pos] if ref.names else []
        cache_note = str(_write_cache(out / REFERENCE_CACHE, ref_feats, smp, digest, ref_protocol, names))
    result = VideoGeneratorEvalResult(
        fvd=M.frechet_distance_svd(ref_feats, smp_feats), num_samples=smp.num, num_reference=n_ref,
        frames=smp.frames, height=smp.height, width=smp.width, skipped=skipped, seconds=seconds,
        unreadable=unreadable,
        protocol={
            "samples": f"{smp.path}: {smp.num} clips of {_dims(smp)} (arr_0 uint8)",
            "reference": ref_protocol, "reference_features": cache_note,
            "i3d": " ".join(filter(None, ("pytorch_i3d InceptionI3d(400)", i3d_name, digest))),
            "fvd": FVD_PROTOCOL, "world_size": ctx.world_size, "device": str(ctx.device), "torch": torch.__version__,
        },
    )
    if out is not None:
        _write(out, result)
    return result


def _reference_protocol(cfg: VideoGeneratorEvalConfig, smp: VideoSamplesInfo, ref: _Reference, cache: _Cache | None,
                        n: int, skipped: int, unreadable: int) -> str:
    if cache is not None:
        return cache.protocol
    if ref.kind == "clips":
        return f"{ref.path}: {n} clips of {_dims(smp)} (arr_0 uint8)"
    s, t = smp.height, smp.frames
    return (f"{ref.path}: {n} clips from {len(ref.names)} listed videos (sorted, sha256 {list_digest(ref.names)}"
            f"{f', evenly spaced subset of {cfg.max_reference}' if cfg.max_reference else ''}): centre {t} frames "
            f"(start = n//2 - {t // 2}), shorter side {s} bilinear (no antialias), centre crop {s}; {skipped} too "
            f"short, {unreadable} could not be read")


def _write(out: Path, r: VideoGeneratorEvalResult) -> None:
    report.write_json(out / "metrics.json", r.to_dict())
    rows = [("FVD", report.fmt(r.fvd, 2), "I3D logits, SVD Fréchet"),
            ("samples", str(r.num_samples), f"{r.frames} frames of {r.height}×{r.width}"),
            ("reference clips", str(r.num_reference), f"videos left out: {len(r.skipped)} too short, "
             f"{len(r.unreadable)} could not be read")]
    report.write_markdown(out / "metrics.md", report.markdown_table("Video generator samples", rows, r.protocol))
