"""WebDataset shards: sources, keys and labels, the rank × worker split, determinism, resume, bad samples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from data_builders import assert_same_batches, take, write_shards

import open_magvit2.data.webdataset as wds
from open_magvit2.data import build_image_stream


def stream(source, **kw):
    args = {"size": 8, "batch_size": 2, "rank": 0, "world_size": 1, "seed": 3, "lanes": 2} | kw
    return build_image_stream(source, **args)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    write_shards(folder, [7, 6, 7, 6, 5, 7, 6, 6])  # 50 samples
    return folder


def test_sources_keys_and_labels(shards: Path, tmp_path: Path):
    pattern = str(shards / "train-{000000..000007}.tar")
    assert wds.expand_shards(pattern) == wds.expand_shards(shards) == sorted(shards.glob("*.tar"))
    assert wds.expand_shards(shards / "train-000003.tar") == [shards / "train-000003.tar"]
    with stream(pattern, batch_size=5, lanes=1) as s:
        assert s.class_names is None and s.num_samples == 50
        assert s.batches_per_epoch == 10 and s.samples_per_epoch == 50  # one lane: nothing dropped
        batches = take(s, 10)
    keys = [k for b in batches for k in b["key"]]
    assert len(set(keys)) == 50 and keys[0].startswith("train-0000")  # "shard/key"
    for b in batches:
        assert b["image"].shape == (5, 3, 8, 8) and b["image"].dtype == torch.float32
        assert b["label"].tolist() == [int(k.split("/")[1][1:3]) % 3 for k in b["key"]]  # from .cls
    for ext in ("jpg", "jpeg.jpg", "jpg.jpg", "webp"):  # the image key variants of docs/design.md O-46
        write_shards(tmp_path / ext, [3], ext=ext, cls=False)
        with stream(tmp_path / ext, batch_size=3, lanes=1) as s:
            (b,) = take(s, 1)
            assert b["label"].tolist() == [0, 0, 0] and len(b["key"]) == 3


def test_same_batches_for_any_worker_count_and_construction(shards: Path):
    with stream(shards) as s:
        assert s.batches_per_epoch == 24  # 2 lanes of 25 samples: 12 batches of 2 each
        ref = take(s, 50)  # into the third epoch
        assert s.epoch == 2
    with stream(shards) as s:
        assert_same_batches(take(s, 50), ref)
    with stream(shards, num_workers=2) as s:
        assert_same_batches(take(s, 50), ref)


@pytest.mark.parametrize(("consumed", "workers"), [(3, 2), (12, 0), (17, 2)])
def test_exact_resume(shards: Path, consumed: int, workers: int):
    with stream(shards) as s:
        ref = take(s, 26)
    with stream(shards) as s:
        take(s, consumed)
        state = s.state_dict()
    with stream(shards, num_workers=workers) as s:
        s.load_state_dict(state)
        assert_same_batches(take(s, 26 - consumed), ref[consumed:])


def test_each_sample_decoded_once_by_one_rank_and_worker(shards: Path, tmp_path: Path, monkeypatch):
    """2 ranks × 2 workers (lanes 2): every shard is read by exactly one worker of one rank; every kept sample
    appears once, and both ranks take the same number of batches."""
    log = tmp_path / "reads.log"
    read = wds.iter_tar_samples

    def logged(path):  # runs in the forked workers: record (process, shard)
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {Path(path).name}\n")
        return read(path)

    monkeypatch.setattr(wds, "iter_tar_samples", logged)
    keys, counts = [], []
    for rank in (0, 1):
        with stream(shards, rank=rank, world_size=2, num_workers=2) as s:
            counts.append(s.batches_per_epoch)
            keys += [k for b in take(s, s.batches_per_epoch) for k in b["key"]]
    reads = [line.split() for line in log.read_text().splitlines()]
    assert sorted(name for _, name in reads) == sorted(p.name for p in shards.glob("*.tar"))  # each once
    assert len({pid for pid, _ in reads}) == 4  # 2 ranks × 2 workers, each with its own shards
    assert counts[0] == counts[1] and len(keys) == len(set(keys)) == 2 * counts[0] * 2


def test_split_errors(shards: Path):
    with pytest.raises(ValueError, match="too few for world_size × lanes = 2 × 8"):
        stream(shards, world_size=2, lanes=8)
    with pytest.raises(ValueError, match=r"num_workers \(3\) must divide lanes \(2\)"):
        stream(shards, num_workers=3)
    with pytest.raises(ValueError, match="lower batch_size or lanes"):
        stream(shards, batch_size=14, lanes=4)
    with pytest.raises(FileNotFoundError, match="1 of 9 shards"):
        stream(str(shards / "train-{000000..000008}.tar"))
    with stream(shards, lanes=None) as s:
        assert s.state_dict()["lanes"] == 8  # the default: the largest power of two up to 8 the shards allow


def test_corrupt_sample_in_a_shard(tmp_path: Path):
    write_shards(tmp_path, [60, 60], bad=("s01_0007",))
    with stream(tmp_path, batch_size=10, num_workers=2) as s:
        batches = take(s, s.batches_per_epoch)
        state = s.state_dict()
    assert state["bad_samples"] == 1 and state["bad_examples"] == ["train-000001.tar/s01_0007"]
    assert sum(len(b["key"]) for b in batches) == 119


def test_resume_skips_consumed_samples_undecoded(shards: Path, monkeypatch):
    decoded = []
    decode = wds.decode_image
    monkeypatch.setattr(wds, "decode_image", lambda *args: decoded.append(1) or decode(*args))
    with stream(shards) as s:
        s.load_state_dict(s.state_dict() | {"position": 15})
        take(s, 1)
    assert len(decoded) == 2  # one batch of 2, although 30 samples of this epoch were read before it


def test_shard_sizes_file_replaces_the_scan(shards: Path, tmp_path: Path, monkeypatch):
    import json

    counts = wds.count_shards(shards)
    assert counts == {f"train-{i:06d}.tar": n for i, n in enumerate([7, 6, 7, 6, 5, 7, 6, 6])}
    sizes = tmp_path / "sizes.json"
    sizes.write_text(json.dumps(counts))
    with stream(shards) as s:
        ref = take(s, 3)
    monkeypatch.setattr(wds, "count_samples", None)  # no scan
    with stream(shards, shard_sizes=sizes) as s:
        assert_same_batches(take(s, 3), ref)
    sizes.write_text(json.dumps({"shardlist": [{"url": str(shards / k), "nsamples": n} for k, n in counts.items()]}))
    with stream(shards, shard_sizes=sizes) as s:  # a wids index
        assert_same_batches(take(s, 3), ref)
    sizes.write_text(json.dumps({"train-000000.tar": 7}))
    with pytest.raises(ValueError, match=r"no sample count for shard 'train-000001\.tar'"):
        stream(shards, shard_sizes=sizes)
