"""Shared pieces of the generator-training tests: small image folders, token sets made with the official ar_tiny
first stage (16×16 px → 4×4 tokens, 32×32 → 8×8; 18 bits), the tiny recipe, and torchrun launches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from open_magvit2.data.pretokenize import tokenize_dataset
from open_magvit2.train.config import load_recipe
from open_magvit2.train.generator import GeneratorTrainConfig
from open_magvit2.train.session import TrainSession

from official import write_official_ckpt

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "generator" / "tiny.yaml"
WORKER = Path(__file__).with_name("generator_worker.py")
NO_DROPOUT = ["model_args.label_dropout=0", "model_args.token_dropout=0", "model_args.resid_dropout=0",
              "model_args.ffn_dropout=0"]


def image_folder(root: Path, classes: tuple[str, ...] = ("a", "b", "c", "d"), per_class: int = 1, size: int = 32,
                 seed: int = 0) -> Path:
    """Random RGB PNGs in one subfolder per class; sizes vary a little so that crops matter."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = size + int(rng.integers(0, 5)), size + int(rng.integers(0, 5))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / c / f"{i:03d}.png")
    return root


def ar_ckpt(root: Path) -> Path:
    path = root / "ar_tiny.ckpt"
    return path if path.is_file() else write_official_ckpt("ar_tiny", path)


def token_set(root: Path, *, classes: tuple[str, ...] = ("a", "b", "c", "d"), per_class: int = 1, size: int = 32,
              augment: str = "none", seed: int = 0) -> Path:
    """An image folder tokenised by ar_tiny's first stage into ``root / "tokens"``."""
    images = image_folder(root / "images", classes=classes, per_class=per_class, size=size, seed=seed)
    out = root / "tokens"
    tokenize_dataset(ar_ckpt(root), images, size, out, augment=augment, batch_size=8, shard_size=3, num_workers=0)
    return out


def recipe(*overrides: str, **run: object) -> GeneratorTrainConfig:
    return load_recipe(GeneratorTrainConfig, TINY, list(overrides), run=run)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def weights(export_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(export_dir / "model.safetensors"))


def torchrun(args: list[str], *, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N`` on CPU (gloo); raises with the log tail when it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def stop_after(monkeypatch, stop: int) -> None:
    """Simulate a crash right after the checkpoint of step ``stop``."""
    real = TrainSession.save

    def save(self, step):
        path = real(self, step)
        if step == stop:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(TrainSession, "save", save)
