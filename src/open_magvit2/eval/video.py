"""``evaluate-video``: rFVD, per-frame LPIPS and codebook usage of a video tokenizer (paper table 6, UCF-101).

Clips (spec §6.3, §7.3): the centre window of ``num_frames`` frames of every video of a fixed, sorted clip list
(a folder such as ``UCF101/train`` or a split file such as ``testlist01.txt``), shorter side resized to ``size``
(bilinear), centre crop ``size``², ``x/127.5 − 1``. Departures from the official loader, on purpose: no list
padded to 10,000 with unseeded random duplicates and no random crop at evaluation (both make rFVD
irreproducible, spec §9 item 21), and the split is the one the user names (the official code reads ``train``).

rFVD: real and reconstructed clips → ``(x+1)/2·255`` truncated to uint8 → per frame bilinear 224×224 →
``2x/255 − 1`` → I3D (``i3d_pretrained_400.pt``) 400 logits → Fréchet distance with SVD square roots in torch.
LPIPS (alex, vgg) on every frame in [−1, 1], averaged over videos × frames.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from open_magvit2.eval import metrics as M
from open_magvit2.eval import report
from open_magvit2.eval.backbones import file_digest, load_i3d, load_lpips
from open_magvit2.eval.datasets import VIDEO_SUFFIXES, list_digest, list_files, load_clip, read_split_list, subset


@dataclass(frozen=True)
class VideoEvalConfig:
    checkpoint: str
    data: str
    output: str | None = None
    split: str | None = "train"  # a sub-folder of ``data`` (the official evaluation reads train/)
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
    progress: bool = True


@dataclass
class VideoEvalResult:
    rfvd: float
    lpips_alex: float | None
    lpips_vgg: float | None
    codebook_usage: float
    used_codes: int
    codebook_size: int
    num_clips: int
    skipped: list[str]
    clips_per_second: float
    protocol: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    def __init__(self, root: Path, files: list[str], frames: int, size: int) -> None:
        self.root, self.files, self.frames, self.size = root, files, frames, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, Tensor, bool]:
        clip = load_clip(self.root / self.files[i], self.frames, self.size)
        ok = clip is not None
        return i, clip if ok else torch.zeros(3, self.frames, self.size, self.size, dtype=torch.uint8), ok


def clip_list(cfg: VideoEvalConfig) -> tuple[Path, list[str]]:
    """The fixed, sorted list of videos to evaluate and the folder their paths are relative to."""
    root = Path(cfg.data)
    if cfg.split_list:
        files = read_split_list(cfg.split_list)
        missing = [f for f in files if not (root / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} videos listed in {cfg.split_list} are not under {root}, "
                                    f"e.g. {missing[0]}")
    else:
        root = root / cfg.split if cfg.split else root
        files = list_files(root, VIDEO_SUFFIXES, "video")
    return root, subset(files, cfg.max_clips)


def i3d_input(video: Tensor) -> Tensor:
    """(B, 3, T, H, W) in [−1, 1] → I3D input (B, 3, T, 224, 224) with the official arithmetic (spec §7.3):
    ``(x+1)/2·255`` truncated to uint8, per-frame bilinear resize (no antialias), ``2x/255 − 1``."""
    b, c, t = video.shape[:3]
    u8 = (((video + 1) / 2) * 255.0).to(torch.uint8)
    frames = u8.permute(0, 2, 1, 3, 4).reshape(b * t, c, *video.shape[-2:]).float()  # (B·T, 3, H, W)
    frames = F.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False)
    return (2.0 * frames / 255.0 - 1).view(b, t, c, 224, 224).transpose(1, 2)


def _frames(v: Tensor) -> Tensor:
    return v.transpose(1, 2).flatten(0, 1)  # (B, 3, T, H, W) -> (B·T, 3, H, W)


def evaluate_video(cfg: VideoEvalConfig, model: nn.Module | None = None,
                   nets: VideoNets | None = None) -> VideoEvalResult:
    """Run the evaluation (one process). ``model``/``nets`` override loading the checkpoint / metric networks."""
    from open_magvit2.data.video import uint8_to_video
    from open_magvit2.eval.runtime import pick_device, progress

    device = pick_device(cfg.device)
    root, files = clip_list(cfg)
    if model is None:
        from open_magvit2.tokenizer.video import VideoTokenizer

        model = VideoTokenizer.from_pretrained(cfg.checkpoint, weights=cfg.weights)
    model = model.to(device).eval()
    nets = nets or VideoNets.load(cfg, device)
    usage = M.CodebookUsage(model.config.z_channels, device)
    feats_real, feats_rec, lp_a, lp_v, skipped = [], [], [], [], []
    loader = DataLoader(_Clips(root, files, cfg.num_frames, cfg.size), batch_size=cfg.batch_size,
                        num_workers=cfg.num_workers)
    t0 = time.perf_counter()
    batches = progress(loader, len(loader), "evaluate-video", enabled=cfg.progress)
    with torch.inference_mode():
        for idx, clips, ok in batches:
            skipped += [files[i] for i in idx[~ok].tolist()]
            if not ok.any():
                continue
            x = uint8_to_video(clips[ok]).to(device)  # (B, 3, T, H, W) in [−1, 1]
            out = model(x)
            rec = out.reconstruction.clamp(-1, 1)
            usage.update(out.quantizer.indices)
            if nets.alex is not None:
                lp_a.append(nets.alex(_frames(x), _frames(rec)).flatten().cpu())
                lp_v.append(nets.vgg(_frames(x), _frames(rec)).flatten().cpu())
            feats_real.append(nets.i3d(i3d_input(x)).cpu())
            feats_rec.append(nets.i3d(i3d_input(rec)).cpu())
    seconds = time.perf_counter() - t0
    n = sum(f.shape[0] for f in feats_real)
    if n < 2:
        raise ValueError(f"rFVD needs at least 2 clips of {cfg.num_frames} frames; got {n} ({len(skipped)} too short)")
    mean = (lambda v: float(torch.cat(v).mean())) if cfg.lpips else (lambda v: None)
    w = nets.i3d.weights_path if hasattr(nets.i3d, "weights_path") else None
    result = VideoEvalResult(
        rfvd=M.frechet_distance_svd(torch.cat(feats_real), torch.cat(feats_rec)),
        lpips_alex=mean(lp_a), lpips_vgg=mean(lp_v), codebook_usage=usage.usage, used_codes=usage.used,
        codebook_size=usage.counts.numel(), num_clips=n, skipped=skipped, clips_per_second=n / seconds,
        protocol={
            "checkpoint": str(cfg.checkpoint), "weights": cfg.weights, "clips": f"{root} ({len(files)} listed, "
            f"sha256 {list_digest(files)})", "window": f"centre {cfg.num_frames} frames (start = n//2 - "
            f"{cfg.num_frames // 2})", "frames": f"shorter side {cfg.size} bilinear (no antialias), centre crop "
            f"{cfg.size}, x/127.5-1; no random crop, no duplicate padding", "i3d": (
                f"pytorch_i3d InceptionI3d(400) {w.name} (sha256 {file_digest(w)})" if w else "injected"),
            "rfvd": "uint8-truncated clips, per-frame bilinear 224, 2x/255-1, 400 logits averaged over time, "
                    "torch SVD Fréchet distance (unbiased covariance)",
            "lpips": "lpips 0.1 alex/vgg per frame, mean over videos x frames" if cfg.lpips else "not computed",
            "device": str(device), "torch": torch.__version__,
        },
    )
    if cfg.output:
        _write(Path(cfg.output), result, files)
    return result


def _write(out: Path, r: VideoEvalResult, files: list[str]) -> None:
    report.write_json(out / "metrics.json", r.to_dict())
    f = report.fmt
    rows = [("rFVD", f(r.rfvd, 2), "I3D logits, SVD Fréchet"), ("LPIPS alex", f(r.lpips_alex), "per frame"),
            ("LPIPS vgg", f(r.lpips_vgg), "per frame"),
            ("codebook usage", f"{100 * r.codebook_usage:.2f}% ({r.used_codes}/{r.codebook_size})", "bincount"),
            ("clips", str(r.num_clips), f"{len(r.skipped)} skipped (too short)"),
            ("clips/s", f(r.clips_per_second, 2), "")]
    report.write_markdown(out / "metrics.md", report.markdown_table("Video tokenizer reconstruction", rows, r.protocol))
    skipped = set(r.skipped)
    report.write_markdown(out / "clips.txt", "".join(f"{p}\n" for p in files if p not in skipped))
