"""Tokenizer training under ``torchrun --nproc-per-node 2`` (gloo, CPU): ranks agree, 2 ranks × B equal 1 rank ×
2B where the maths says they must, and a dead rank ends the job instead of hanging it."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import torch

from open_magvit2.train.metrics import read_metrics

sys.path.insert(0, str(Path(__file__).parent))
from tokenizer_helpers import TINY, photo_folder, torchrun, train

WORKER = str(Path(__file__).with_name("tokenizer_ddp_worker.py"))
COMMON = ["--set", "data.size=32", "--set", "run.log_every=1", "--set", "run.sample_every=0"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("photos"), names=("astronaut", "coffee", "chelsea", "rocket") * 2)


@pytest.mark.timeout(600)
def test_two_ranks_agree_and_match_the_union_batch(tmp_path, photos, monkeypatch):
    run2 = tmp_path / "two"
    monkeypatch.setenv("DUMP_DIR", str(tmp_path))
    monkeypatch.setenv("LAST_STEP", "3")
    proc = torchrun([WORKER, "train-tokenizer", "--config", str(TINY), "--data", str(photos), "--output", str(run2),
                     "--max-steps", "3", "--set", "data.batch_size=2", *COMMON])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for part in ("model", "ema", "disc"):
        for k, v in ranks[0][part].items():
            if "running_" in k or "num_batches" in k:  # BatchNorm statistics are rank-local between forwards;
                continue  # DDP broadcasts rank 0's at every discriminator forward (and only rank 0's are saved)
            assert torch.equal(v, ranks[1][part][k]), f"{part}.{k} differs between ranks"
    # one rank with the union batch (2 × 2): the same samples and crops at step 1 (before any update), so every
    # quantity that is a mean over the batch agrees; the codebook entropy only because p̄ is all-reduced.
    run1 = tmp_path / "one"
    assert train(TINY, photos, run1, "--max-steps", "1", "--set", "data.batch_size=4", *COMMON) == 0
    two, one = read_metrics(run2)[0], read_metrics(run1)[0]
    for key in ("loss/l1", "entropy/codebook", "entropy/per_sample", "loss/commitment", "codebook/used"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    assert read_metrics(run2)[-1]["step"] == 3


@pytest.mark.timeout(300)
def test_a_dead_rank_ends_the_job(tmp_path, photos):
    env_crash = {"CRASH_RANK": "1"}
    os.environ.update(env_crash)
    try:
        t0 = time.monotonic()
        proc = torchrun([WORKER, "train-tokenizer", "--config", str(TINY), "--data", str(photos), "--output",
                         str(tmp_path / "run"), "--max-steps", "20", "--set", "data.batch_size=2",
                         "--set", "run.timeout_s=60", *COMMON], timeout=240)
    finally:
        del os.environ["CRASH_RANK"]
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 200  # ended by torchrun / the collective timeout, not by the test's timeout
