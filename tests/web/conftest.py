"""Stand-ins for the demo models (tiny, random weights, saved like the bundled ones) and real inputs for the web
app's tests: photos from scikit-image, a short camera-motion clip, and files that are not what they claim."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

DIGITS = [str(i) for i in range(10)]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one intra-op thread (tests/conftest.py::one_thread)."""


@pytest.fixture(scope="session")
def standin_models(tmp_path_factory) -> SimpleNamespace:
    """``save_pretrained`` folders shaped like the demo models: an 8× image tokenizer with 2^14 codes, its 3-D
    twin (two temporal downsamplings: 4k+1 frames), a 10-class generator on 4×4 tokens with ``classes.json``
    ("0".."9", the digits), and a 5-class video generator with no ``classes.json`` (numbered classes) making 5
    frames of 8×8 (tests/generator/test_video_generator.py's tiny one). Random weights: the pictures are noise,
    the plumbing is real."""
    from open_magvit2.generator import GENERATOR_PRESETS, ImageGenerator
    from open_magvit2.tokenizer import ImageTokenizer, TokenizerConfig, VideoTokenizer

    root = tmp_path_factory.mktemp("standin_models")
    torch.manual_seed(0)
    tc = TokenizerConfig(ch=32, ch_mult=(1, 1, 1, 2), num_res_blocks=1, z_channels=14)
    ImageTokenizer(tc).save_pretrained(root / "image_tokenizer")
    VideoTokenizer(tc.replace(dims=3, ch_mult=(1, 2, 2, 1))).save_pretrained(root / "video_tokenizer")
    cfg = dataclasses.replace(GENERATOR_PRESETS["tiny"], grid_size=4, num_classes=10, factorized_bits=(6, 8))
    ImageGenerator(config=cfg, tokenizer_config=tc).save_pretrained(root / "image_generator")
    (root / "image_generator" / "classes.json").write_text(json.dumps(DIGITS))
    from open_magvit2.generator import VideoGenerator, VideoGeneratorConfig
    from open_magvit2.tokenizer import TOKENIZER_PRESETS

    vcfg = VideoGeneratorConfig(dim=64, n_layers=2, n_intra_layers=1, n_heads=2, grid_size=2, frames=2,
                                num_classes=5, factorized_bits=(4, 6), sample_cfg_scale=(1.5, 2.5),
                                sample_temperature=(1.0, 0.9))
    vtc = TOKENIZER_PRESETS["ucf101_128_L_tiny"].replace(ch=32, ch_mult=(2, 2, 1), z_channels=10)  # 4× time, space
    vgen = VideoGenerator(config=vcfg, tokenizer_config=vtc)
    for h in vgen.transformer.head:  # sharp logits: the clips differ from seed to seed
        torch.nn.init.normal_(h.weight, std=0.5)
    vgen.save_pretrained(root / "video_generator")
    return SimpleNamespace(root=root, tokenizer=root / "image_tokenizer", video=root / "video_tokenizer",
                           generator=root / "image_generator", video_generator=root / "video_generator")


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> SimpleNamespace:
    """A real photo (scikit-image's coffee, 400×600), a 10-frame 64×80 clip panning over another one, a 3-frame
    clip, and bad files: text named .png, a truncated PNG, text named .mp4."""
    pytest.importorskip("av")
    from skimage import data

    from open_magvit2.data.video_io import write_video

    d = tmp_path_factory.mktemp("web_inputs")
    Image.fromarray(data.coffee()).save(d / "coffee.png")
    base = data.astronaut()[::4, ::4]  # 128×128
    frames = np.stack([base[20:84, 4 * t : 4 * t + 80] for t in range(10)])
    clip = write_video(d / "pan.mp4", frames, fps=8)
    short = write_video(d / "short.mp4", frames[:3], fps=8)
    (d / "not_an_image.png").write_text("this is text, not a picture")
    good = (d / "coffee.png").read_bytes()
    (d / "truncated.png").write_bytes(good[: len(good) // 3])
    (d / "not_a_video.mp4").write_text("this is text, not a video")
    return SimpleNamespace(d=d, photo=d / "coffee.png", clip=clip, short=short, text_png=d / "not_an_image.png",
                           truncated=d / "truncated.png", text_mp4=d / "not_a_video.mp4")
