"""Fixtures of the video tests: the fixture checkpoint and a tiny random model (clips: ``video_clips.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from official import write_official_ckpt

sys.path.insert(0, str(Path(__file__).parent))  # video_clips.py: the synthetic clips


@pytest.fixture(scope="session")
def video_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official-format checkpoint of the ``video_tokenizer_tiny`` fixture (ch_mult [1,2,2]: 1 temporal
    downsampling, 4× spatial), rebuilt bit-for-bit from its records."""
    return write_official_ckpt("video_tokenizer_tiny", tmp_path_factory.mktemp("video_ckpt") / "video.ckpt")


@pytest.fixture(scope="session")
def tiny_video_model():
    """A seeded random ``ucf101_128_L_tiny`` model: the released architecture's levels (8× spatial, 2 temporal
    downsamplings, 17 → 5 frames) with ch=32 and one ResBlock per level."""
    from open_magvit2.tokenizer.presets import tokenizer_config
    from open_magvit2.tokenizer.video import VideoTokenizer

    torch.manual_seed(0)
    return VideoTokenizer(tokenizer_config("ucf101_128_L_tiny")).eval()
