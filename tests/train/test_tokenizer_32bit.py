"""A 2^32-code tokenizer trains with the project's trainer (configs/tokenizer/tiny_32bit.yaml: grouped codebook
entropy, groups of 8 bits): codebook usage is counted exactly, indices reach past 2^31, and resume is bit-exact."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from open_magvit2 import ImageTokenizer
from open_magvit2.train.config import load_recipe
from open_magvit2.train.metrics import read_metrics
from open_magvit2.train.tokenizer import TokenizerTrainConfig

sys.path.insert(0, str(Path(__file__).parent))
from tokenizer_helpers import REPO, exported, photo_folder, train

TINY32 = REPO / "configs" / "tokenizer" / "tiny_32bit.yaml"
FAST = ["--set", "data.batch_size=2", "--set", "run.log_every=1", "--set", "run.sample_every=0",
        "--set", "loss.disc_start=0", "--set", "run.ema_decay=0.9"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("photos"))


def test_recipe_is_32_bits_in_groups_of_8():
    cfg = load_recipe(TokenizerTrainConfig, TINY32).tokenizer_config()
    assert (cfg.z_channels, cfg.entropy_group_bits) == (32, 8)


def test_32bit_tokenizer_resume_3_plus_3_equals_6(tmp_path, photos):
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert train(TINY32, photos, ref, "--max-steps", "6", "--save-every", "3", *FAST) == 0
    assert train(TINY32, photos, run, "--max-steps", "3", "--save-every", "3", *FAST) == 0
    assert train(TINY32, photos, run, "--max-steps", "6", "--save-every", "3", "--resume", "auto", *FAST) == 0
    for weights in ("ema", "raw"):
        a, b = exported(ref, tmp_path / f"a_{weights}", weights), exported(run, tmp_path / f"b_{weights}", weights)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), weights
    records = read_metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["codebook/used"] for r in records] == [r["codebook/used"] for r in read_metrics(ref)]
    # each step sees 2 images × 16 tokens: the exact distinct count of a 2^32 codebook is at most 32
    assert all(1 <= r["codebook/used"] <= 32 and r["codebook/usage"] == r["codebook/used"] / 2**32 for r in records)
    tok = ImageTokenizer.from_pretrained(tmp_path / "b_ema")
    with torch.no_grad():
        idx = tok.encode(torch.rand(8, 3, 32, 32) * 2 - 1)
    assert idx.dtype == torch.int64 and idx.shape == (8, 4, 4)
    assert int(idx.min()) >= 0 and int(idx.max()) < 2**32 and int(idx.max()) >= 2**24  # the high bits are used
