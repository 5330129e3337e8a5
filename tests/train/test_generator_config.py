"""Generator recipes: the paper's settings in configs/generator, unknown keys named, and the grid / bit split /
classes taken from the data unless the recipe sets them (a disagreement names both values)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from open_magvit2.generator import GENERATOR_PRESETS, GeneratorTransformer
from open_magvit2.train.config import InitConfig, load_recipe
from open_magvit2.train.generator import GeneratorTrainConfig
from open_magvit2.train.generator_arch import resolve_generator_config
from open_magvit2.train.init import load_generator_init

sys.path.insert(0, str(Path(__file__).parent))
from generator_helpers import REPO, ar_ckpt


def _load(name: str, *overrides: str) -> GeneratorTrainConfig:
    return load_recipe(GeneratorTrainConfig, REPO / "configs" / "generator" / f"{name}.yaml", list(overrides))


@pytest.mark.parametrize(
    "name, params, batch, lr, epochs, warmup",
    [  # docs/design.md O-31: transformer parameters, batch per device (× devices = 768), peak lr, epochs, warm-up
        ("B", 343_570_432, 24, 3e-4, 300, 6),
        ("L", 804_362_240, 12, 3e-4, 300, 6),
        ("XL", 1_486_679_040, 8, 2.4e-4, 350, 7),
    ],
)
def test_paper_recipes(name, params, batch, lr, epochs, warmup):
    cfg = _load(name)
    assert cfg.model == name and cfg.data.batch_size == batch and cfg.optim.lr == lr
    assert cfg.run.epochs == epochs and cfg.schedule.warmup_epochs == warmup and cfg.run.precision == "bf16"
    assert cfg.optim.betas == (0.9, 0.95) and cfg.optim.weight_decay == 0.05 and cfg.optim.grad_clip == 1.0
    assert not cfg.optim.decay_norms and cfg.run.ema_decay is None  # the official AR runs keep no EMA
    s = cfg.schedule
    assert (s.kind, s.warmup_start, s.final, s.constant_fraction) == ("warmup_linear", 0.005, 0.1, 0.05)
    c = GENERATOR_PRESETS[name]
    assert (c.label_dropout, c.token_dropout, c.resid_dropout, c.ffn_dropout) == (0.1, 0.1, 0.1, 0.1)
    import torch

    with torch.device("meta"):
        assert GeneratorTransformer(config=c).num_params() == params


def test_sections_start_from_the_generator_defaults(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: tiny\noptim: {lr: 1.0e-3}\nrun: {max_steps: 5}\n")
    cfg = load_recipe(GeneratorTrainConfig, path)
    assert cfg.optim.betas == (0.9, 0.95) and cfg.optim.weight_decay == 0.05 and cfg.optim.lr == 1e-3
    assert cfg.run.precision == "bf16" and cfg.run.max_steps == 5 and cfg.schedule.kind == "warmup_linear"


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "unknown config key optim.lrr"),
        ("data.tokeniser=x", "unknown config key data.tokeniser"),
        ("parallel=zero", "parallel must be one of"),
        ("parallel=fsdp", "set run.ema_decay: null"),  # with run.ema_decay=0.999 below
    ],
)
def test_recipe_errors(override, message):
    with pytest.raises(ValueError, match=message):
        _load("tiny", override, "run.ema_decay=0.999")


def _data(grid=(8, 8), bits=18, num_classes=4, split=None):
    return SimpleNamespace(grid=grid, bits=bits, num_classes=num_classes, split=split)


def test_architecture_from_the_data():
    c = resolve_generator_config("tiny", {}, _data())
    assert (c.grid_size, c.factorized_bits, c.num_classes, c.dim) == (8, (6, 12), 4, 128)
    assert resolve_generator_config("tiny", {}, _data(bits=14)).factorized_bits == (4, 10)  # K // 3, K − K // 3
    assert resolve_generator_config("tiny", {}, _data(bits=32)).factorized_bits == (8, 8, 8, 8)  # past 18: 8 bits
    assert resolve_generator_config("tiny", {}, _data(bits=20)).factorized_bits == (8, 8, 4)
    assert resolve_generator_config("tiny", {}, _data(bits=14, split=(7, 7))).factorized_bits == (7, 7)
    c = resolve_generator_config("B", {"grid_size": 8, "factorized_bits": [9, 9], "num_classes": 4}, _data())
    assert (c.grid_size, c.factorized_bits, c.num_classes, c.n_layers) == (8, (9, 9), 4, 24)
    assert resolve_generator_config("tiny", {"num_classes": 7}, _data(num_classes=None)).num_classes == 7


@pytest.mark.parametrize(
    "args, data, message",
    [
        ({"grid_size": 16}, _data(), "model_args.grid_size=16 but the data has a 8×8 token grid"),
        ({"factorized_bits": [6, 6]}, _data(), r"factorized_bits=\[6, 6\] sums to 12 but the data's tokens have 18"),
        ({"num_classes": 1000}, _data(), "model_args.num_classes=1000 but the data has 4 classes"),
        ({}, _data(num_classes=None), "set model_args.num_classes"),
        ({}, _data(grid=(8, 4)), "needs a square grid"),
        ({"width": 3}, _data(), "unknown model_args width; the allowed keys are dim"),
    ],
)
def test_disagreements_name_both_values(args, data, message):
    with pytest.raises(ValueError, match=message):
        resolve_generator_config("tiny", args, data)
    with pytest.raises(ValueError, match="unknown generator preset"):
        resolve_generator_config("M", {}, _data())


def test_init_from_an_official_checkpoint_checks_the_architecture(tmp_path):
    ckpt = ar_ckpt(tmp_path)
    good = resolve_generator_config("tiny", {}, _data(grid=(16, 16), num_classes=10))
    sd = load_generator_init(InitConfig(checkpoint=str(ckpt)), good)
    assert sd["class_emb.embedding_table.weight"].shape == (11, 128)
    GeneratorTransformer(config=good).load_state_dict(sd, strict=True)
    bad = resolve_generator_config("tiny", {}, _data(grid=(16, 16), num_classes=4))
    with pytest.raises(ValueError, match="num_classes=10 vs 4"):
        load_generator_init(InitConfig(checkpoint=str(ckpt)), bad)
    with pytest.raises(ValueError, match="video tokenizers"):
        load_generator_init(InitConfig(inflate_from=str(ckpt)), good)
    assert load_generator_init(InitConfig(), good) is None
