"""The generator trainer on CPU: the tiny recipe overfits a tiny token set, exact resume, export → from_pretrained,
on-the-fly encoding = shards, fine-tuning from an official AR checkpoint, and the user errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from open_magvit2.cli import main
from open_magvit2.data.tokens import TokenShards, build_token_stream
from open_magvit2.generator import GENERATOR_PRESETS, GeneratorTransformer, ImageGenerator, generator_loss
from open_magvit2.quantize import factorize_indices

sys.path.insert(0, str(Path(__file__).parent))
from generator_helpers import NO_DROPOUT, TINY, ar_ckpt, metrics, stop_after, token_set, weights

from official import official_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    """4 classes × 1 image of 32×32 px → 8×8 tokens of 18 bits."""
    return token_set(tmp_path_factory.mktemp("tokens"))


def _train(data: Path, out: Path, *args: str) -> None:
    code = main(["train-generator", "--config", str(TINY), "--data", str(data), "--output", str(out), *args])
    assert code == 0


def _export(run: Path, out: Path, *args: str) -> dict[str, torch.Tensor]:
    assert main(["export", str(run), str(out), *args]) == 0
    return weights(out)


@pytest.mark.slow  # a learning check: 300 training steps (~40 s)
def test_tiny_recipe_overfits_and_greedy_samples_reproduce_the_data(tokens, tmp_path):
    """Done-when 1: within the recipe's 300 steps both cross-entropies fall below 0.5 nats, and greedy decoding of
    the exported model for each training label gives back that label's token sequence."""
    _train(tokens, tmp_path / "run", "--set", "data.batch_size=4")
    log = metrics(tmp_path / "run")
    assert log[-1]["step"] == 300 and log[0]["loss/post"] > 4.0
    assert log[-1]["loss/pre"] < 0.5 and log[-1]["loss/post"] < 0.5, log[-1]
    assert {"loss", "loss/pre", "loss/post", "lr", "grad_norm", "throughput/tokens_per_s"} <= set(log[-1])
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == [
        "step_0000100.png", "step_0000200.png", "step_0000300.png"]
    assert json.loads((tmp_path / "run" / "classes.json").read_text()) == ["a", "b", "c", "d"]
    grid = np.asarray(Image.open(tmp_path / "run" / "samples" / "step_0000300.png"))
    assert grid.shape[1] == 2 * 32 + 3 * 2  # 2 samples per class, 32 px each, 2 px borders

    _export(tmp_path / "run", tmp_path / "exported")
    gen = ImageGenerator.from_pretrained(tmp_path / "exported")
    ds = TokenShards(tokens)
    expected = torch.from_numpy(np.stack([ds[i].tokens[0] for i in range(len(ds))])).long()
    labels = torch.from_numpy(ds.labels)
    assert torch.equal(gen.generate(labels, cfg_scale=1.0, top_k=1), expected)  # greedy, no guidance
    assert gen.sample_images(labels[:2]).shape == (2, 3, 32, 32)  # its tokenizer came along


@pytest.mark.parametrize(
    "augment, extra",
    [
        ("none", []),  # fp32, all dropouts and label drop on, 2 steps per epoch: 3 epochs
        ("flip", ["optim.grad_accum=2", "run.ema_decay=0.9", "run.precision=bf16", "data.batch_size=1"]),
    ],
)
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, monkeypatch, augment, extra):
    """Done-when 2: 6 steps in one run == 3 steps, a crash, and 3 resumed steps (model, optimiser, schedule,
    data order, views, dropout RNG)."""
    data = token_set(tmp_path, augment=augment)
    sets = [f"--set={s}" for s in ["data.batch_size=2", "run.save_every=3", "run.log_every=1", *extra]]
    _train(data, tmp_path / "whole", "--max-steps", "6", *sets)
    stop_after(monkeypatch, 3)
    args = ["--config", str(TINY), "--data", str(data), "--output", str(tmp_path / "split"), "--max-steps", "6", *sets]
    assert main(["train-generator", *args]) == 130  # the CLI's exit code for an interrupt
    monkeypatch.undo()
    assert (tmp_path / "split" / "checkpoints" / "step_0000003").is_dir()
    _train(data, tmp_path / "split", "--max-steps", "6", "--resume", "auto", *sets)
    for which in ("ema", "raw") if "run.ema_decay=0.9" in extra else ("raw",):  # the tiny recipe keeps no EMA
        a = _export(tmp_path / "whole", tmp_path / f"a_{which}", "--weights", which)
        b = _export(tmp_path / "split", tmp_path / f"b_{which}", "--weights", which)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    split, whole = metrics(tmp_path / "split"), metrics(tmp_path / "whole")
    assert [r["step"] for r in split] == [1, 2, 3, 4, 5, 6]  # one history: the crashed run's lines up to step 3
    assert [r["loss"] for r in split] == [r["loss"] for r in whole]


def test_on_the_fly_encoding_equals_training_on_shards(tokens, tmp_path):
    """The official path (encode each batch with the frozen tokenizer) and the shards give the same run."""
    images = tokens.parent / "images"
    _train(tokens, tmp_path / "shards", "--max-steps", "3", "--set", "data.batch_size=2")
    _train(images, tmp_path / "fly", "--max-steps", "3", "--set", "data.batch_size=2",
           "--set", f"data.tokenizer={ar_ckpt(tokens.parent)}", "--set", "data.size=32",
           "--set", "data.random_crop=false")
    a, b = _export(tmp_path / "shards", tmp_path / "a"), _export(tmp_path / "fly", tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fine_tune_from_the_official_checkpoint(tmp_path):
    """init.checkpoint = an official AR .ckpt: the first loss is the official model's loss on the first batch."""
    data = token_set(tmp_path, classes=tuple("abcdefghij"), size=64)  # 10 classes, 16×16 tokens, as ar_tiny
    ckpt = ar_ckpt(tmp_path)
    _train(data, tmp_path / "run", "--max-steps", "1", "--set", "data.batch_size=5", "--set",
           f"init.checkpoint={ckpt}", "--set", "run.sample_every=1000", *[f"--set={s}" for s in NO_DROPOUT])
    model = GeneratorTransformer(config=GENERATOR_PRESETS["tiny"])
    sd = official_state_dict("ar_tiny")
    model.load_state_dict({k.removeprefix("transformer."): v for k, v in sd.items() if k.startswith("transformer.")})
    batch = next(build_token_stream(data, batch_size=5, rank=0, world_size=1, seed=0))
    pre, post = factorize_indices(batch["tokens"].flatten(1), (6, 12))
    with torch.no_grad():
        expected = generator_loss(*model.eval()(pre, post, batch["label"]), pre, post)
    assert metrics(tmp_path / "run")[0]["loss"] == pytest.approx(expected.loss.item(), abs=1e-5)
    exported = _export(tmp_path / "run", tmp_path / "exp")
    assert torch.equal(exported["tokenizer.decoder.conv_out.weight"], sd["first_stage_model.decoder.conv_out.weight"])


def test_decay_norms_reproduces_the_official_decay(tokens, tmp_path):
    """optim.decay_norms: true also decays the RMSNorm gains (docs/design.md O-38); the default leaves them alone."""
    sets = ["--max-steps", "1", *[f"--set={s}" for s in ["data.batch_size=2", "optim.weight_decay=0.5", *NO_DROPOUT]]]
    _train(tokens, tmp_path / "ours", *sets)
    _train(tokens, tmp_path / "official", *sets, "--set", "optim.decay_norms=true")
    ours, official = _export(tmp_path / "ours", tmp_path / "a"), _export(tmp_path / "official", tmp_path / "b")
    assert torch.equal(ours["transformer.pre_emb.weight"], official["transformer.pre_emb.weight"])  # matrices alike
    lr = 1e-3 * 0.005  # the first step's learning rate: warm-up starts at 0.005 of the peak
    gain = official["transformer.norm.weight"] / ours["transformer.norm.weight"]  # decoupled decay: × (1 − lr·wd)
    torch.testing.assert_close(gain, torch.full_like(gain, 1 - lr * 0.5), rtol=0, atol=1e-7)


def test_user_errors(tokens, tmp_path, capsys):
    base = ["train-generator", "--config", str(TINY), "--max-steps", "1", "--set", "data.batch_size=2"]
    assert main([*base, "--data", str(tokens.parent / "images"), "--output", str(tmp_path / "a")]) == 2
    assert "not a token set" in capsys.readouterr().err
    assert main([*base, "--data", str(tokens), "--output", str(tmp_path / "b"), "--set",
                 "model_args.num_classes=10"]) == 2
    assert "model_args.num_classes=10 but the data has 4 classes" in capsys.readouterr().err
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("x")
    assert main([*base, "--data", str(tokens), "--output", str(tmp_path / "c")]) == 2
    assert "--resume auto" in capsys.readouterr().err
    assert main([*base, "--data", str(tokens), "--output", str(tmp_path / "d"), "--set",
                 "loss.first_frame_weight=4"]) == 2
    assert "weighs a video generator's first latent frame; this token set holds images" in capsys.readouterr().err
    assert main([*base, "--data", str(tokens), "--output", str(tmp_path / "d"), "--set",
                 "loss.first_frame_weight=0"]) == 2
    assert "loss.first_frame_weight must be a positive number, got 0" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_non_finite_steps_stop_at_a_checkpoint_that_exists(tokens, tmp_path, monkeypatch, capsys):
    """The guard's message names the newest checkpoint, which exists and predates the streak (issue 17)."""
    import open_magvit2.train.generator as trainer

    real = trainer.generator_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):  # optimiser steps 3, 4, ... are non-finite
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out._replace(loss=out.loss * float("nan")) if calls["n"] >= 3 else out

    monkeypatch.setattr(trainer, "generator_loss", poisoned)
    run = tmp_path / "run"
    assert main(["train-generator", "--config", str(TINY), "--data", str(tokens), "--output", str(run),
                 "--max-steps", "10", "--save-every", "2", "--set", "data.batch_size=2",
                 "--set", "run.max_nonfinite=2"]) == 1
    err = capsys.readouterr().err
    last = run / "checkpoints" / "step_0000002"
    assert f"(steps 3–4). The newest checkpoint, {last} (step 2), predates it" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000002"]


@pytest.mark.slow
def test_torch_compile_trains_like_eager(tokens, tmp_path):
    """run.compile: the same losses as eager (not bit-identical: inductor fuses differently)."""
    sets = ["--max-steps", "3", "--set", "data.batch_size=2", *[f"--set={s}" for s in NO_DROPOUT]]
    _train(tokens, tmp_path / "eager", *sets)
    _train(tokens, tmp_path / "compiled", *sets, "--set", "run.compile=true")
    a, b = metrics(tmp_path / "eager"), metrics(tmp_path / "compiled")
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], abs=1e-4)
