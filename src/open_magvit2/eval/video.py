"""``evaluate-video``: rFVD, per-frame LPIPS and codebook usage of a video tokenizer (paper table 6, UCF-101).

Clips (docs/design.md O-47, O-50): the centre window of ``num_frames`` frames of every video of a fixed, sorted
clip list (a folder such as ``UCF101/train``, files and globs, or a split file such as ``testlist01.txt``), shorter side
resized to ``size`` (bilinear), centre crop ``size``², ``x/127.5 − 1``. Departures from the official loader, on
purpose: no list padded to 10,000 with unseeded random duplicates and no random crop at evaluation (both make
rFVD irreproducible, docs/design.md O-47), and the split is the one the user names (the official code reads ``train``).

rFVD: real and reconstructed clips → ``(x+1)/2·255`` truncated to uint8 → per frame bilinear 224×224 →
``2x/255 − 1`` → I3D (``i3d_pretrained_400.pt``) 400 logits → Fréchet distance with SVD square roots in torch.
LPIPS (alex, vgg) on every frame in [−1, 1], averaged over videos × frames.

Runs under torchrun like ``evaluate-tokenizer`` (each rank a strided shard of the clip list, per-clip records
gathered to rank 0) and resumes from the periodic per-rank states in ``<output>/state``.

A video shorter than the clip is listed in ``skipped`` (the official loader cannot use it either). A video that
cannot be read is skipped by the batch rule (README, "Batch jobs"; ``strict``: the run stops at it) and listed in
``unreadable``; the metrics are those of the other clips, and a resumed run tries it again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from open_magvit2.data.video_io import VIDEO_SUFFIXES, uint8_to_video
from open_magvit2.distributed import DistContext, gather_to_main, process_group
from open_magvit2.eval import metrics as M
from open_magvit2.eval import report
from open_magvit2.eval.backbones import load_i3d
from open_magvit2.eval.datasets import (
    ReadBatch,
    collate_read,
    list_digest,
    load_clip,
    read_split_list,
    shard,
    strict_stop,
    subset,
    too_few_readable,
    unreadable_reason,
)
from open_magvit2.eval.i3d import i3d_input_uint8
from open_magvit2.eval.runtime import load_state, save_state, state_path
from open_magvit2.fileio import find_files
from open_magvit2.imaging import to_uint8_tensor
from open_magvit2.lpips_net import load_lpips
from open_magvit2.progress import progress
from open_magvit2.weight_files import file_digest


@dataclass(frozen=True)
class VideoEvalConfig:
    checkpoint: str
    data: str | tuple[str, ...]  # a folder (with ``split``), or video files, folders and globs
    output: str | None = None  # also holds the resume states (``output/state``); None: no resume
    split: str | None = "train"  # a sub-folder of a single ``data`` folder (the official evaluation reads train/)
    split_list: str | None = None  # or a list file of paths relative to ``data`` (e.g. UCF-101 testlist01.txt)
    num_frames: int = 17
    size: int = 128
    max_clips: int | None = None
    weights: str = "ema"
    i3d_weights: str | None = None
    lpips_alex_weights: str | None = None
    lpips_vgg_weights: str | None = None
    lpips: bool = True
    batch_size: int = 4
    device: str | None = None
    num_workers: int = 4
    save_every: int = 500  # clips per rank between resume states
    restart: bool = False
    progress: bool = True
    strict: bool = False  # stop at the first video that cannot be read (default: skip it, list it in the result)


@dataclass
class VideoEvalResult(report.Result):
    rfvd: float
    lpips_alex: float | None
    lpips_vgg: float | None
    codebook_usage: float
    used_codes: int
    codebook_size: int
    num_clips: int  # the clips evaluated
    skipped: list[str]  # videos shorter than the clip
    clips_per_second: float
    protocol: dict[str, Any] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, why) of the videos that cannot be read


@dataclass
class VideoNets:
    i3d: nn.Module
    alex: nn.Module | None
    vgg: nn.Module | None

    @classmethod
    def load(cls, cfg: VideoEvalConfig, device: torch.device | str = "cpu") -> VideoNets:
        return cls(load_i3d(cfg.i3d_weights, device),
                   load_lpips("alex", cfg.lpips_alex_weights, device) if cfg.lpips else None,
                   load_lpips("vgg", cfg.lpips_vgg_weights, device) if cfg.lpips else None)


class _Clips(Dataset):
    """(position, uint8 clip (3, T, size, size) or None when the video is too short, "" or why it cannot be read):
    errors come back as values, as from :class:`~open_magvit2.eval.datasets.ImageFiles`."""

    def __init__(self, paths: list[Path], positions: list[int], frames: int, size: int) -> None:
        self.paths, self.positions, self.frames, self.size = paths, positions, frames, size

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[int, Tensor | None, str]:
        pos = self.positions[i]
        try:
            return pos, load_clip(self.paths[pos], self.frames, self.size), ""
        except (ValueError, OSError) as e:
            return pos, None, str(e) or type(e).__name__


def clip_list(cfg: VideoEvalConfig) -> tuple[list[Path], list[str]]:
    """The fixed, sorted list of videos to evaluate: their paths and the names that identify them in reports."""
    specs = [cfg.data] if isinstance(cfg.data, (str, Path)) else list(cfg.data)
    if cfg.split_list:
        if len(specs) != 1 or not Path(specs[0]).is_dir():
            raise ValueError("--split-list needs --data to be the one folder its paths are relative to")
        root, names = Path(specs[0]), read_split_list(cfg.split_list)
        missing = [f for f in names if not (root / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} videos listed in {cfg.split_list} are not under {root}, "
                                    f"e.g. {missing[0]}")
        names = subset(names, cfg.max_clips)
        return [root / n for n in names], names
    if cfg.split and len(specs) == 1 and Path(specs[0]).is_dir():
        specs = [str(Path(specs[0]) / cfg.split)]
        if not Path(specs[0]).is_dir():
            raise FileNotFoundError(f"video folder not found: {specs[0]} (pass --split '' to use --data itself)")
    files = subset(find_files(specs, VIDEO_SUFFIXES, "video", unique_stems=False), cfg.max_clips)
    return [f.path for f in files], [f.name for f in files]


def i3d_input(video: Tensor) -> Tensor:
    """(B, 3, T, H, W) in [−1, 1] → I3D input (B, 3, T, 224, 224) with the official arithmetic (docs/design.md O-50):
    ``(x+1)/2·255`` truncated to uint8, then :func:`~open_magvit2.eval.i3d.i3d_input_uint8`."""
    return i3d_input_uint8(to_uint8_tensor(video))  # the clips are already in [-1, 1]: the clamp changes nothing


def _frames(v: Tensor) -> Tensor:
    return v.transpose(1, 2).flatten(0, 1)  # (B, 3, T, H, W) -> (B·T, 3, H, W)


class _Records:
    """One rank's per-clip results (position, I3D logits of real and reconstructed clip, per-frame LPIPS), the
    positions of the videos too short and of those that cannot be read (with why), and the code counts: what a
    resume state holds."""

    def __init__(self, bits: int, device: torch.device) -> None:
        self.pos: list[int] = []
        self.real: list[Tensor] = []
        self.rec: list[Tensor] = []
        self.lp_a: list[Tensor] = []
        self.lp_v: list[Tensor] = []
        self.skipped: list[int] = []
        self.unreadable: dict[int, str] = {}  # position → why it could not be read (tried again on resume)
        self.usage = M.CodebookUsage(bits, device)
        self.done, self.elapsed = 0, 0.0  # done: positions of the shard handed out

    def state_dict(self) -> dict:
        keys = ("pos", "real", "rec", "lp_a", "lp_v", "skipped", "done", "elapsed")
        return {**{k: getattr(self, k) for k in keys}, "usage": self.usage.state(),
                "unreadable": [[p, r] for p, r in sorted(self.unreadable.items())]}

    def load_state_dict(self, s: dict) -> None:
        for k in ("pos", "real", "rec", "lp_a", "lp_v", "skipped", "done", "elapsed"):
            setattr(self, k, s[k])
        self.unreadable = {int(p): str(r) for p, r in s.get("unreadable", [])}  # a state from before the field: none
        self.usage.load_state(s["usage"])


@torch.inference_mode()
def _evaluate_batch(model: nn.Module, nets: VideoNets, rec: _Records, batch: ReadBatch, device: torch.device) -> None:
    rec.skipped += batch.empty
    if not batch.positions:
        return
    x = uint8_to_video(batch.data).to(device)  # (B, 3, T, H, W) in [−1, 1]
    out = model(x)
    y = out.reconstruction.clamp(-1, 1)
    rec.usage.update(out.quantizer.indices)
    rec.pos += batch.positions
    rec.real += list(nets.i3d(i3d_input(x)).float().cpu())  # (400,) logits per clip
    rec.rec += list(nets.i3d(i3d_input(y)).float().cpu())
    t = x.shape[2]
    if nets.alex is not None:
        rec.lp_a += list(nets.alex(_frames(x), _frames(y)).flatten().cpu().view(-1, t))  # (T,) per clip
        rec.lp_v += list(nets.vgg(_frames(x), _frames(y)).flatten().cpu().view(-1, t))


def evaluate_video(cfg: VideoEvalConfig, model: nn.Module | None = None,
                   nets: VideoNets | None = None) -> VideoEvalResult | None:
    """Run the evaluation; the result on rank 0 (``None`` on other ranks). ``model``/``nets`` override loading
    the checkpoint / metric networks."""
    with process_group(cfg.device) as ctx:
        return _evaluate(cfg, model, nets, ctx)


def _evaluate(cfg: VideoEvalConfig, model: nn.Module | None, nets: VideoNets | None,
              ctx: DistContext) -> VideoEvalResult | None:
    device = ctx.device
    paths, names = clip_list(cfg)
    if model is None:
        from open_magvit2.tokenizer.video import VideoTokenizer

        model = VideoTokenizer.from_pretrained(cfg.checkpoint, weights=cfg.weights)
    model = model.to(device).eval()
    nets = nets or VideoNets.load(cfg, device)
    fingerprint = {"checkpoint": str(cfg.checkpoint), "weights": cfg.weights, "clips": list_digest(names),
                   "num_frames": cfg.num_frames, "size": cfg.size, "lpips": cfg.lpips, "world": ctx.world_size,
                   "format": 1}
    rec = _Records(model.config.z_channels, device)
    spath = state_path(Path(cfg.output) / "state", ctx) if cfg.output else None
    state = None if spath is None or cfg.restart else load_state(spath, fingerprint)
    if state is not None:
        rec.load_state_dict(state)
    retried = set(rec.unreadable)  # unreadable in an earlier session: fixed since, perhaps
    todo = sorted(retried) + shard(len(names), ctx.rank, ctx.world_size)[rec.done :]
    loader = DataLoader(_Clips(paths, todo, cfg.num_frames, cfg.size), batch_size=cfg.batch_size,
                        num_workers=cfg.num_workers, collate_fn=collate_read)
    t0, since = time.perf_counter(), 0
    for batch in progress(loader, len(loader), "evaluate-video", enabled=cfg.progress and ctx.is_main,
                          unit="batch"):
        for p, reason in batch.unreadable:  # the batch rule: skip it and record it, or stop (strict)
            if cfg.strict:
                raise strict_stop(names[p], reason, paths[p])
            rec.unreadable[p] = unreadable_reason(reason, paths[p])
        _evaluate_batch(model, nets, rec, batch, device)
        for p in (*batch.positions, *batch.empty):
            rec.unreadable.pop(p, None)  # read at last
        seen = [*batch.positions, *batch.empty, *(p for p, _ in batch.unreadable)]
        rec.done += sum(p not in retried for p in seen)  # retried positions were handed out before
        since += len(seen)
        if spath is not None and since >= cfg.save_every:
            rec.elapsed, t0, since = rec.elapsed + time.perf_counter() - t0, time.perf_counter(), 0
            save_state(spath, {"fingerprint": fingerprint, **rec.state_dict()})
    rec.elapsed += time.perf_counter() - t0
    if spath is not None:
        save_state(spath, {"fingerprint": fingerprint, **rec.state_dict()})
    rec.usage.all_reduce(ctx)
    gathered = gather_to_main(rec.state_dict(), ctx)
    if not ctx.is_main:
        return None
    return _result(cfg, names, gathered, rec.usage, nets, device, ctx)


def _result(cfg: VideoEvalConfig, names: list[str], parts: list[dict], usage: M.CodebookUsage, nets: VideoNets,
            device: torch.device, ctx: DistContext) -> VideoEvalResult:
    pos = [p for g in parts for p in g["pos"]]
    order = sorted(range(len(pos)), key=pos.__getitem__)  # list order, whatever the number of ranks
    def ordered(key: str) -> list[Tensor]:  # every rank's per-clip records, in list order
        items = [t for g in parts for t in g[key]]
        return [items[i] for i in order]

    real, recon = (torch.stack(ordered(k)) if pos else None for k in ("real", "rec"))
    skipped = [names[p] for p in sorted(p for g in parts for p in g["skipped"])]
    bad = {int(p): r for g in parts for p, r in g["unreadable"]}
    unreadable = [(names[p], bad[p]) for p in sorted(bad)]
    n = len(pos)
    if sorted([*pos, *(p for g in parts for p in g["skipped"]), *bad]) != list(range(len(names))):
        raise RuntimeError(f"evaluated {n}, skipped {len(skipped)} and could not read {len(bad)} clips for a list of "
                           f"{len(names)}: shards overlap or are missing")
    need = f"rFVD needs at least 2 clips of {cfg.num_frames} frames"
    if n < 2 and unreadable:
        raise too_few_readable("videos", n + len(skipped), len(names), unreadable, f"{need} ({len(skipped)} too short)")
    if n < 2:
        raise ValueError(f"{need}; got {n} ({len(skipped)} too short)")
    mean = (lambda k: float(torch.cat(ordered(k)).mean())) if cfg.lpips else (lambda k: None)
    seconds = max(g["elapsed"] for g in parts)
    w = getattr(nets.i3d, "weights_path", None)
    result = VideoEvalResult(
        rfvd=M.frechet_distance_svd(real, recon), lpips_alex=mean("lp_a"), lpips_vgg=mean("lp_v"),
        codebook_usage=usage.usage, used_codes=usage.used, codebook_size=usage.codebook_size, num_clips=n,
        skipped=skipped, clips_per_second=n / seconds if seconds > 0 else float("nan"), unreadable=unreadable,
        protocol={
            "checkpoint": str(cfg.checkpoint), "weights": cfg.weights,
            "clips": f"{len(names)} listed (sha256 {list_digest(names)})",
            "window": f"centre {cfg.num_frames} frames (start = n//2 - {cfg.num_frames // 2})",
            "frames": f"shorter side {cfg.size} bilinear (no antialias), centre crop {cfg.size}, x/127.5-1; no "
                      "random crop, no duplicate padding",
            "i3d": f"pytorch_i3d InceptionI3d(400) {w.name} (sha256 {file_digest(w)})" if w else "injected",
            "rfvd": "uint8-truncated clips, per-frame bilinear 224, 2x/255-1, 400 logits averaged over time, "
                    "torch SVD Fréchet distance (unbiased covariance)",
            "lpips": "lpips 0.1 alex/vgg per frame, mean over videos x frames" if cfg.lpips else "not computed",
            "world_size": ctx.world_size, "device": str(device), "torch": torch.__version__,
        },
    )
    if unreadable:
        result.protocol["unreadable"] = (f"{len(unreadable)} of {len(names)} listed videos could not be read and are "
                                         "in no metric (metrics.json: unreadable)")
    if cfg.output:
        _write(Path(cfg.output), result, names)
    return result


def _write(out: Path, r: VideoEvalResult, files: list[str]) -> None:
    report.write_json(out / "metrics.json", r.to_dict())
    f = report.fmt
    rows = [("rFVD", f(r.rfvd, 2), "I3D logits, SVD Fréchet"), ("LPIPS alex", f(r.lpips_alex), "per frame"),
            ("LPIPS vgg", f(r.lpips_vgg), "per frame"),
            ("codebook usage", f"{100 * r.codebook_usage:.2f}% ({r.used_codes}/{r.codebook_size})", "bincount"),
            ("clips", f"{r.num_clips} of {len(files)}", f"{len(r.skipped)} skipped (too short), "
             f"{len(r.unreadable)} could not be read"),
            ("clips/s", f(r.clips_per_second, 2), "")]
    report.write_markdown(out / "metrics.md", report.markdown_table("Video tokenizer reconstruction", rows, r.protocol))
    skipped = {*r.skipped, *(name for name, _ in r.unreadable)}
    report.write_markdown(out / "clips.txt", "".join(f"{p}\n" for p in files if p not in skipped))
