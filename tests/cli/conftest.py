"""Shared models and inputs of the CLI tests: a tiny random AR generator, the official-format tiny checkpoints,
a few photos and a short video (everything made here: no downloads)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from official import write_official_ckpt

GEN_CLASSES = 16


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one intra-op thread (tests/conftest.py::one_thread)."""


@pytest.fixture(scope="session")
def gen_dir(tmp_path_factory) -> Path:
    """A random tiny-preset generator (4×4 tokens, 16 classes) with a tiny tokenizer (8×8 images), saved."""
    from open_magvit2.generator import GENERATOR_PRESETS, ImageGenerator
    from open_magvit2.tokenizer import TokenizerConfig

    torch.manual_seed(0)
    cfg = dataclasses.replace(GENERATOR_PRESETS["tiny"], grid_size=4, num_classes=GEN_CLASSES)
    gen = ImageGenerator(config=cfg, tokenizer_config=TokenizerConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1))
    for h in gen.transformer.head:
        torch.nn.init.normal_(h.weight, std=0.5)
    return gen.save_pretrained(tmp_path_factory.mktemp("gen") / "tiny")


@pytest.fixture(scope="session")
def video_ckpt(tmp_path_factory) -> Path:
    """The official-format ``video_tokenizer_tiny`` checkpoint (windows of 2k+1 frames, 4× spatial)."""
    return write_official_ckpt("video_tokenizer_tiny", tmp_path_factory.mktemp("video_ckpt") / "video.ckpt")


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """A 7-frame 24×32 mp4 of a photo panning sideways."""
    pytest.importorskip("av")
    from skimage import data

    from open_magvit2.data.video_io import write_video

    base = data.astronaut()[::8, ::8][:24, :48]
    frames = np.stack([base[:, 2 * t : 2 * t + 32] for t in range(7)])
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, fps=8)


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    """Two small RGB photos, one in a sub-folder."""
    from skimage import data

    d = tmp_path_factory.mktemp("photos")
    (d / "sub").mkdir()
    Image.fromarray(data.astronaut()[::12, ::12][:40, :36].copy()).save(d / "a.png")
    Image.fromarray(data.coffee()[::10, ::10][:50, :64].copy()).save(d / "sub" / "b.jpg")
    return d
