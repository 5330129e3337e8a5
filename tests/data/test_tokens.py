"""The token-shard format: write → verify → read back, resume markers, and the checks of finalize_index."""

from __future__ import annotations

import json

import numpy as np
import pytest

from open_magvit2.data.tokens import (
    TokenShards,
    finalize_index,
    read_index,
    shard_files,
    shard_is_complete,
    write_classes,
    write_shard,
)


def _chunk(rng: np.random.Generator, n: int, start: int, views: int = 1) -> tuple[np.ndarray, np.ndarray, list[str]]:
    tokens = rng.integers(0, 2**18, size=(n, views, 4, 5))
    labels = rng.integers(0, 3, size=n)
    return tokens, labels, [f"img{start + i:04d}.png" for i in range(n)]


def test_round_trip_random_access(tmp_path):
    rng = np.random.default_rng(0)
    chunks = [_chunk(rng, n, s, views=2) for n, s in ((5, 0), (3, 5), (4, 8))]
    for c, (t, lab, k) in enumerate(chunks):
        write_shard(tmp_path, c, t, lab, k)
    write_classes(tmp_path, ["a", "b", "c"])
    index = finalize_index(tmp_path, {"bits": 18, "tokenizer": {"source": "test"}}, num_shards=3)
    assert index["num_samples"] == 12 and index["grid"] == [4, 5] and index["views"] == 2
    ds = TokenShards(tmp_path)
    assert len(ds) == 12 and ds.grid == (4, 5) and ds.bits == 18 and ds.num_classes == 3
    all_tokens = np.concatenate([c[0] for c in chunks])
    all_labels = np.concatenate([c[1] for c in chunks])
    all_keys = [k for c in chunks for k in c[2]]
    for i in range(12):
        s = ds[i]
        np.testing.assert_array_equal(s.tokens, all_tokens[i])
        assert s.label == all_labels[i] and s.key == all_keys[i]
    assert ds[-1].key == all_keys[-1]
    assert np.load(shard_files(tmp_path, 0).tokens).dtype == np.int32  # 18-bit indices stored as int32
    with pytest.raises(IndexError):
        ds[12]


def test_single_view_tokens_get_a_view_axis(tmp_path):
    write_shard(tmp_path, 0, np.zeros((2, 3, 3), np.int64), [0, 1], ["a", "b"])
    finalize_index(tmp_path, {"bits": 4}, 1)
    assert TokenShards(tmp_path)[1].tokens.shape == (1, 3, 3)


def test_keys_file_marks_a_complete_shard(tmp_path):
    t, lab, k = _chunk(np.random.default_rng(1), 3, 0)
    write_shard(tmp_path, 0, t, lab, k)
    assert shard_is_complete(tmp_path, 0)
    shard_files(tmp_path, 0).keys.unlink()  # as if killed before the last file
    assert not shard_is_complete(tmp_path, 0)
    with pytest.raises(ValueError, match="shard 0 of 1 is missing"):
        finalize_index(tmp_path, {"bits": 18}, 1)


@pytest.mark.parametrize(
    "second, message",
    [
        (("img0000.png",), "duplicated"),  # the same source twice
        (("x",), None),
    ],
)
def test_finalize_rejects_duplicates(tmp_path, second, message):
    write_shard(tmp_path, 0, np.zeros((1, 1, 2, 2), np.int64), [0], ["img0000.png"])
    write_shard(tmp_path, 1, np.zeros((1, 1, 2, 2), np.int64), [0], list(second))
    if message is None:
        assert finalize_index(tmp_path, {"bits": 18}, 2)["num_samples"] == 2
    else:
        with pytest.raises(ValueError, match=message):
            finalize_index(tmp_path, {"bits": 18}, 2)


def test_finalize_rejects_out_of_range_and_shape_mismatch(tmp_path):
    write_shard(tmp_path, 0, np.full((1, 1, 2, 2), 16), [0], ["a"])
    with pytest.raises(ValueError, match=r"outside \[0, 2\^4\)"):
        finalize_index(tmp_path, {"bits": 4}, 1)
    write_shard(tmp_path, 0, np.zeros((1, 1, 2, 2), np.int64), [0], ["a"])
    write_shard(tmp_path, 1, np.zeros((1, 1, 3, 2), np.int64), [0], ["b"])
    with pytest.raises(ValueError, match="token maps"):
        finalize_index(tmp_path, {"bits": 4}, 2)


def test_write_shard_validates(tmp_path):
    with pytest.raises(ValueError, match="tokens must be integer"):
        write_shard(tmp_path, 0, np.zeros((1, 2, 2), np.float32), [0], ["a"])
    with pytest.raises(ValueError, match="labels"):
        write_shard(tmp_path, 0, np.zeros((2, 2, 2), np.int64), [0], ["a", "b"])


def test_read_index_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenize-dataset"):
        read_index(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not an open-magvit2 token index"):
        read_index(tmp_path)
