"""Shared pieces of the tokenizer-training tests: small real-photo folders, pan clips, recipes and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.torch import load_file

from open_magvit2.cli import main as cli

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tokenizer" / "tiny.yaml"
TINY_VIDEO = REPO / "configs" / "tokenizer" / "tiny_video.yaml"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")


def photo(name: str) -> np.ndarray:
    from skimage import data

    im = getattr(data, name)()
    return np.repeat(im[..., None], 3, axis=-1) if im.ndim == 2 else im[..., :3]


def photo_folder(root: Path, side: int = 48, names: tuple[str, ...] = PHOTOS) -> Path:
    """Real photos (scikit-image) downscaled to ``side`` px on the shorter side, in two class folders."""
    for i, name in enumerate(names):
        im = Image.fromarray(photo(name))
        w, h = im.size
        s = side / min(w, h)
        d = root / ("class_a" if i % 2 == 0 else "class_b")
        d.mkdir(parents=True, exist_ok=True)
        im.resize((max(side, round(w * s)), max(side, round(h * s))), Image.BILINEAR).save(d / f"{name}.png")
    return root


def pan_clips(root: Path, frames: int = 9, side: int = 40, names: tuple[str, ...] = PHOTOS[:3]) -> Path:
    """Short mp4 clips panning across real photos (one class folder per clip)."""
    from open_magvit2.data.video_io import write_video

    for name in names:
        im = np.asarray(Image.fromarray(photo(name)).resize((side * 2, side * 2), Image.BILINEAR))
        clip = np.stack([im[t * 2 : t * 2 + side, t * 3 : t * 3 + side] for t in range(frames)])
        (root / name).mkdir(parents=True, exist_ok=True)
        write_video(root / name / "clip.mp4", clip, fps=8)
    return root


def train(config: Path, data: Path, out: Path, *extra: str) -> int:
    return cli(["train-tokenizer", "--config", str(config), "--data", str(data), "--output", str(out), *extra])


def exported(run: Path, out: Path, weights: str = "ema") -> dict:
    assert cli(["export", str(run), str(out), "--weights", weights]) == 0
    return load_file(str(out / "model.safetensors"))


def torchrun(args: list[str], *, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N`` on CPU (gloo), returning the finished process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
