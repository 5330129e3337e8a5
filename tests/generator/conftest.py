"""Shared models for the generator tests: the official ar_tiny checkpoint and small random models."""

import dataclasses

import pytest
import torch

from open_magvit2.generator import GENERATOR_PRESETS, GeneratorTransformer, ImageGenerator
from open_magvit2.tokenizer import TokenizerConfig

from official import official_state_dict, write_official_ckpt


def small_config(**changes):
    """A 4×4-grid model (16 tokens per image): fast enough for many sampling runs."""
    base = dict(grid_size=4, num_classes=5, sample_cfg_scale=(1.5, 2.5), sample_temperature=(1.0, 0.9))
    return dataclasses.replace(GENERATOR_PRESETS["tiny"], **{**base, **changes})


def random_transformer(seed=0, **changes):
    """Random weights with non-zero heads (the official init zeroes them, which makes every logit 0)."""
    torch.manual_seed(seed)
    model = GeneratorTransformer(config=small_config(**changes))
    for h in model.head:
        torch.nn.init.normal_(h.weight, std=0.5)
    return model.eval()


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one intra-op thread (tests/conftest.py::one_thread)."""


@pytest.fixture
def make_small():
    """``make_small(seed=0, **config_changes)`` → a random small GeneratorTransformer in eval mode."""
    return random_transformer


@pytest.fixture(scope="session")
def ar_ckpt(tmp_path_factory):
    """The ar_tiny fixture written as an official-format AR ``.ckpt``."""
    return write_official_ckpt("ar_tiny", tmp_path_factory.mktemp("ar") / "ar_tiny.ckpt")


@pytest.fixture(scope="session")
def official_gen(ar_ckpt):
    return ImageGenerator.from_pretrained(ar_ckpt)


@pytest.fixture(scope="session")
def tiny_transformer():
    """ar_tiny's transformer weights in a bare GeneratorTransformer."""
    sd = official_state_dict("ar_tiny")
    model = GeneratorTransformer(config=GENERATOR_PRESETS["tiny"])
    model.load_state_dict({k.removeprefix("transformer."): v for k, v in sd.items() if k.startswith("transformer.")})
    return model.eval()


@pytest.fixture(scope="session")
def small_gen():
    """A random small ImageGenerator with a tiny tokenizer (4×4 tokens ↔ 8×8 images)."""
    torch.manual_seed(0)
    tok = TokenizerConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1)
    gen = ImageGenerator(config=small_config(), tokenizer_config=tok)
    for h in gen.transformer.head:
        torch.nn.init.normal_(h.weight, std=0.5)
    return gen.eval()
