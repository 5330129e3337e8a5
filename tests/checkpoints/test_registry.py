"""``model_type`` → class is one table (registry.py), which every loader of "some model" reads."""

from __future__ import annotations

import pytest

from open_magvit2 import ImageGenerator, ImageTokenizer, VideoGenerator, VideoTokenizer, load_pretrained
from open_magvit2.checkpoints.hub import MODEL_TYPES
from open_magvit2.registry import MODEL_KINDS, model_kind

from official import FIXTURES


def test_one_class_for_every_model_type_a_checkpoint_records():
    assert tuple(MODEL_KINDS) == MODEL_TYPES
    assert [k.cls for k in MODEL_KINDS.values()] == [ImageTokenizer, VideoTokenizer, ImageGenerator, VideoGenerator]
    assert model_kind("video_generator").label == "video generator"
    assert model_kind("video_tokenizer").label == "video tokenizer"
    with pytest.raises(ValueError, match=r"unknown model_type 'vae'; expected one of \('image_tokenizer'"):
        model_kind("vae")


def test_load_pretrained_picks_the_class_from_the_contents(tmp_path):
    tok = load_pretrained(FIXTURES / "image_tokenizer_tiny" / "tokenizer.ckpt")
    assert type(tok) is ImageTokenizer
    assert type(load_pretrained(tok.save_pretrained(tmp_path / "tok"))) is ImageTokenizer
