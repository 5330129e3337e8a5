"""Generator training with M != 2 sub-tokens: the tiny_32bit recipe (4 sub-tokens of 8 bits) on a 32-bit token set
made by tokenize-dataset with a 32-channel tokenizer: int64 shards, exact resume (3 + 3 steps == 6, bitwise), the
per-sub-token losses, export and sampling, on-the-fly encoding, and the architecture derived from recipe and data."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from open_magvit2.cli import main
from open_magvit2.data.pretokenize import tokenize_dataset
from open_magvit2.data.tokens import TokenShards, shard_files
from open_magvit2.generator import ImageGenerator
from open_magvit2.tokenizer import ImageTokenizer, TokenizerConfig
from open_magvit2.train.generator_arch import resolve_generator_config

sys.path.insert(0, str(Path(__file__).parent))
from generator_helpers import REPO, image_folder, metrics, stop_after, weights

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY32 = REPO / "configs" / "generator" / "tiny_32bit.yaml"
SUB_LOSSES = ["loss/sub_1", "loss/sub_2", "loss/sub_3", "loss/sub_4"]


@pytest.fixture(scope="module")
def tokens32(tmp_path_factory) -> Path:
    """4 classes × 1 image of 8×8 px → 4×4 tokens of 32 bits, from a random 32-channel tokenizer (2× downsampling)."""
    root = tmp_path_factory.mktemp("tokens32")
    torch.manual_seed(0)
    tok = ImageTokenizer(TokenizerConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=32,
                                         entropy_group_bits=8))
    images = image_folder(root / "images", size=8)
    tokenize_dataset(tok.save_pretrained(root / "tok"), images, 8, root / "tokens", batch_size=8, shard_size=3,
                     num_workers=0)
    return root / "tokens"


def _train(config: Path, data: Path, out: Path, *args: str) -> int:
    return main(["train-generator", "--config", str(config), "--data", str(data), "--output", str(out),
                 "--set", "data.batch_size=2", *args])


def _export(run: Path, out: Path) -> dict[str, torch.Tensor]:
    assert main(["export", str(run), str(out)]) == 0
    return weights(out)


def test_token_set_holds_32_bit_indices_as_int64(tokens32):
    shards = TokenShards(tokens32)
    assert shards.bits == 32 and shards.grid == (4, 4) and len(shards) == 4
    stored = np.load(shard_files(tokens32, 0).tokens)
    assert stored.dtype == np.int64
    all_tokens = np.stack([shards[i].tokens for i in range(len(shards))])
    assert all_tokens.max() >= 2**31 and all_tokens.max() < 2**32  # the high bits are there, none lost


def test_interrupted_and_resumed_run_is_bit_identical(tokens32, tmp_path, monkeypatch):
    """6 steps in one run == 3 steps, a crash and 3 resumed steps, for 4 sub-tokens of 8 bits: weights (the
    mid_emb and the four heads included), losses per sub-token, sample grids decoded by the 32-bit tokenizer."""
    sets = [f"--set={s}" for s in ["run.save_every=3", "run.log_every=1", "run.sample_every=3"]]
    assert _train(TINY32, tokens32, tmp_path / "whole", "--max-steps", "6", *sets) == 0
    stop_after(monkeypatch, 3)
    assert _train(TINY32, tokens32, tmp_path / "split", "--max-steps", "6", *sets) == 130  # the interrupt's code
    monkeypatch.undo()
    assert (tmp_path / "split" / "checkpoints" / "step_0000003").is_dir()
    assert _train(TINY32, tokens32, tmp_path / "split", "--max-steps", "6", "--resume", "auto", *sets) == 0
    a, b = _export(tmp_path / "whole", tmp_path / "a"), _export(tmp_path / "split", tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert {"transformer.mid_emb.0.weight", "transformer.mid_emb.1.weight", "transformer.head.3.weight"} <= set(a)
    split, whole = metrics(tmp_path / "split"), metrics(tmp_path / "whole")
    assert [r["step"] for r in split] == [1, 2, 3, 4, 5, 6]
    assert [[r[k] for k in ["loss", *SUB_LOSSES]] for r in split] == [[r[k] for k in ["loss", *SUB_LOSSES]]
                                                                      for r in whole]
    first = whole[0]
    assert "loss/pre" not in first and first["loss"] == pytest.approx(sum(first[k] for k in SUB_LOSSES), rel=1e-6)
    assert all(first[k] == pytest.approx(8 * np.log(2), rel=0.05) for k in SUB_LOSSES)  # zero heads: uniform bytes
    assert sorted(p.name for p in (tmp_path / "whole" / "samples").iterdir()) == ["step_0000003.png",
                                                                                  "step_0000006.png"]

    gen = ImageGenerator.from_pretrained(tmp_path / "a")
    assert gen.config.factorized_bits == (8, 8, 8, 8) and gen.tokenizer.config.z_channels == 32
    assert gen.config.sample_cfg_scale == (1.9, 2.0, 2.0, 2.0)  # the tiny preset's, spread over the sub-tokens
    idx = gen.generate(torch.tensor([0, 1, 2, 3]), generator=torch.Generator().manual_seed(0))
    assert idx.shape == (4, 4, 4) and int(idx.min()) >= 0 and int(idx.max()) < 2**32
    assert gen.sample_images(torch.tensor([0, 3])).shape == (2, 3, 8, 8)


def test_on_the_fly_encoding_equals_training_on_shards(tokens32, tmp_path):
    """data.tokenizer = the 32-bit tokenizer, encoding each batch: the same run as on its token shards."""
    sets = ["--max-steps", "2", "--set", "run.sample_every=0"]
    assert _train(TINY32, tokens32, tmp_path / "shards", *sets) == 0
    assert _train(TINY32, tokens32.parent / "images", tmp_path / "fly", *sets, "--set",
                  f"data.tokenizer={tokens32.parent / 'tok'}", "--set", "data.size=8",
                  "--set", "data.random_crop=false") == 0
    a, b = _export(tmp_path / "shards", tmp_path / "a"), _export(tmp_path / "fly", tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bits_that_do_not_add_up_to_the_tokens_are_refused(tokens32, tmp_path, capsys):
    """One line, exit 2, no run directory: a split of 24 bits for 32-bit tokens, and a bad split."""
    tiny = REPO / "configs" / "generator" / "tiny.yaml"
    assert _train(tiny, tokens32, tmp_path / "a", "--set", "model_args.factorized_bits=[8,8,8]") == 2
    err = capsys.readouterr().err
    assert "model_args.factorized_bits=[8, 8, 8] sums to 24 but the data's tokens have 32 bits" in err
    assert len(err.strip().splitlines()) == 1
    assert _train(tiny, tokens32, tmp_path / "b", "--set", "model_args.factorized_bits=[16,0,16]") == 2
    assert "factorized_bits must be positive ints" in capsys.readouterr().err
    assert _train(TINY32, tokens32, tmp_path / "c", "--set", "model_args.sample_cfg_scale=[1.5,2.0]") == 2
    assert "sample_cfg_scale has 2 values but factorized_bits (8, 8, 8, 8) makes 4" in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in "abc")


def _data(bits: int = 18, split: tuple[int, ...] | None = None) -> SimpleNamespace:
    return SimpleNamespace(grid=(8, 8), bits=bits, num_classes=4, split=split)


def test_sampling_defaults_spread_over_the_sub_tokens():
    """Another number of sub-tokens than the preset's: its (pre, post) defaults become (pre, post, post, …) unless
    the recipe sets them; the tokenizer's own split of any length is the default split."""
    c = resolve_generator_config("L", {"factorized_bits": [6, 6, 6]}, _data())
    assert (c.sample_cfg_scale, c.sample_temperature) == ((1.9, 1.9, 1.9), (1.1, 1.0, 1.0))
    c = resolve_generator_config("tiny", {"factorized_bits": [18]}, _data())
    assert (c.factorized_bits, c.sample_cfg_scale, c.sample_temperature) == ((18,), (1.9,), (1.0,))
    c = resolve_generator_config("tiny", {"factorized_bits": [9, 9], "sample_cfg_scale": [3.0, 1.0]}, _data())
    assert c.sample_cfg_scale == (3.0, 1.0)
    c = resolve_generator_config("tiny", {}, _data(bits=32, split=(8, 8, 8, 8)))
    assert c.factorized_bits == (8, 8, 8, 8) and c.sample_cfg_scale == (1.9, 2.0, 2.0, 2.0)
