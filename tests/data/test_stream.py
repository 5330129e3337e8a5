"""The batch stream over an image folder: determinism, exact resume, the distributed split, bad samples."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from data_builders import assert_same_batches, image_folder, take

from open_magvit2.data import build_image_stream


def stream(root: Path, **kw):
    args = {"size": 8, "batch_size": 3, "rank": 0, "world_size": 1, "seed": 7} | kw
    return build_image_stream(root, **args)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_folder(tmp_path_factory.mktemp("images"), {"a": 6, "b": 5, "c": 6})  # 17 images: 5 batches of 3


def test_same_batches_for_any_worker_count_and_construction(folder: Path):
    with stream(folder) as s:
        ref = take(s, 8)  # crosses into epoch 1
    with stream(folder) as s:
        assert_same_batches(take(s, 8), ref)
    with stream(folder, num_workers=2) as s:
        assert_same_batches(take(s, 8), ref)
    with stream(folder, seed=8) as s:
        assert [b["key"] for b in take(s, 8)] != [b["key"] for b in ref]


def test_epochs_reshuffle_and_crops_change(folder: Path):
    with stream(folder) as s:
        assert (s.batches_per_epoch, s.samples_per_epoch, s.num_samples) == (5, 15, 17)
        e0, e1 = take(s, 5), take(s, 5)
        assert s.epoch == 1
    k0, k1 = [k for b in e0 for k in b["key"]], [k for b in e1 for k in b["key"]]
    assert len(set(k0)) == 15 and k0 != k1  # each kept sample once per epoch; a new order each epoch
    image = [{k: b["image"][i] for b in e for i, k in enumerate(b["key"])} for e in (e0, e1)]
    changed = [k for k in set(k0) & set(k1) if not torch.equal(image[0][k], image[1][k])]
    assert len(changed) >= 3  # a new random crop each epoch (a square image has one crop only)


@pytest.mark.parametrize("consumed", [2, 5, 7])  # mid-epoch, exactly at the epoch end, in the next epoch
def test_exact_resume(folder: Path, consumed: int):
    with stream(folder) as s:
        ref = take(s, 12)
    with stream(folder) as s:
        take(s, consumed)
        state = s.state_dict()
    assert all(isinstance(v, int | str | list) for v in state.values())
    with stream(folder, num_workers=2 if consumed == 5 else 0) as s:
        s.load_state_dict(state)
        assert_same_batches(take(s, 12 - consumed), ref[consumed:])
        assert s.state_dict()["epoch"] == 2 and s.state_dict()["position"] == 2


def test_load_state_dict_restarts_a_running_stream(folder: Path):
    with stream(folder, num_workers=2) as s:
        ref = take(s, 4)
        state = s.state_dict()
        more = take(s, 3)
        s.load_state_dict(state)
        assert_same_batches(take(s, 3), more)
    assert len(ref) == 4
    with stream(folder) as s, stream(folder, batch_size=2) as other, pytest.raises(ValueError, match="batch_size=3"):
        other.load_state_dict(s.state_dict())  # a resume must share the order's settings


def test_distributed_split(folder: Path):
    """17 samples, 2 ranks × 3: 2 batches per rank, disjoint, and together the batches of a 1-rank batch of 6."""
    ranks = []
    for rank in (0, 1):
        with stream(folder, rank=rank, world_size=2) as s:
            assert s.batches_per_epoch == 2 and s.samples_per_epoch == 12
            ranks.append(take(s, 4))  # two epochs
    with stream(folder, batch_size=6) as s:
        single = take(s, 4)
    for j in range(4):
        assert not set(ranks[0][j]["key"]) & set(ranks[1][j]["key"])
        assert ranks[0][j]["key"] + ranks[1][j]["key"] == single[j]["key"]
        assert torch.equal(torch.cat([ranks[0][j]["image"], ranks[1][j]["image"]]), single[j]["image"])
    keys = [k for r in ranks for b in r[:2] for k in b["key"]]
    assert len(keys) == len(set(keys)) == 12


def test_bad_samples_counted_in_workers(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """One corrupt file in 120 (0.8%): skipped with a warning naming it, counted through worker processes."""
    root = image_folder(tmp_path, {"a": 60, "b": 59})
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with caplog.at_level(logging.WARNING, logger="open_magvit2.data"), stream(root, batch_size=10, num_workers=2) as s:
        batches = take(s, 12)  # one epoch
        state = s.state_dict()
    assert sorted(len(b["key"]) for b in batches) == [9] + [10] * 11
    assert state["bad_samples"] == 1 and state["bad_examples"] == ["b/broken.jpg"] and state["samples_seen"] == 120
    (record,) = [r for r in caplog.records if "broken.jpg" in r.getMessage()]
    assert "\n" not in record.getMessage()


def test_too_many_bad_samples_stop_the_stream(tmp_path: Path):
    root = image_folder(tmp_path / "few", {"a": 14}, bad=2)  # 2 of 16 bad: judged at the end of the epoch
    with stream(root, batch_size=4) as s:
        take(s, 4)
        with pytest.raises(ValueError, match=r"2 of 16 samples could not be read .* a/bad_000.jpg"):
            next(s)
    root = image_folder(tmp_path / "many", {"a": 60, "b": 57}, bad=2)  # 4 of 121: judged once 100 were seen
    with stream(root, batch_size=10) as s, pytest.raises(ValueError, match=r"of 1[01]0 samples"):
        take(s, 12)


def test_all_bad_batch_is_skipped_consistently(tmp_path: Path):
    root = image_folder(tmp_path, {"a": 4}, bad=4)
    kw = {"batch_size": 1, "max_bad_fraction": 1.0}
    with stream(root, **kw) as s:
        ref = take(s, 8)  # 8 positions per epoch, 4 of them empty and skipped: two epochs
        assert s.epoch == 1 and s.bad_samples == 8
    with stream(root, **kw) as s:
        take(s, 3)
        state = s.state_dict()
    with stream(root, **kw) as s:
        s.load_state_dict(state)
        assert_same_batches(take(s, 5), ref[3:])


def test_global_rngs_untouched(folder: Path):
    """The trainer's RNG streams (dropout, ...) must not depend on when the data loader starts or restarts."""
    import random

    import numpy as np

    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    expected = (torch.rand(1), random.random(), np.random.rand())
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    with stream(folder, num_workers=2) as s:
        take(s, 7)  # crosses an epoch: a second DataLoader
    assert (torch.rand(1), random.random(), np.random.rand()) == expected
