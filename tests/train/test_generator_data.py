"""The training stream over a token set: a seeded permutation per epoch split over ranks, one view per
(seed, epoch, sample), exact resume, and the same batches with DataLoader workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from open_magvit2.data.tokens import TokenShards, build_token_stream, finalize_index, write_shard

N, VIEWS = 10, 3


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    """10 samples in 3 shards; token value = 100 · sample + view, so a batch tells which sample and view it holds."""
    root = tmp_path_factory.mktemp("tokens")
    base = np.arange(N)[:, None, None, None] * 100 + np.arange(VIEWS)[None, :, None, None]
    tok = np.broadcast_to(base, (N, VIEWS, 2, 2)).copy()
    for c, sl in enumerate((slice(0, 4), slice(4, 8), slice(8, 10))):
        write_shard(root, c, tok[sl], np.arange(N)[sl] % 3, [f"k{i}" for i in range(N)[sl]])
    finalize_index(root, {"bits": 12, "num_classes": 3}, 3)
    return root


def _take(stream, n):
    out = []
    for _ in range(n):
        b = next(stream)
        t = b["tokens"][:, 0, 0]
        out.append(((t // 100).tolist(), (t % 100).tolist(), b["label"].tolist()))
    return out


def test_epochs_are_seeded_permutations(tokens):
    a = _take(build_token_stream(tokens, batch_size=3, rank=0, world_size=1, seed=5), 6)  # 3 batches per epoch
    assert a == _take(build_token_stream(tokens, batch_size=3, rank=0, world_size=1, seed=5), 6)
    for epoch in (a[:3], a[3:]):
        seen = [i for ids, _, _ in epoch for i in ids]
        assert len(seen) == 9 and len(set(seen)) == 9  # drop-last: 9 of 10, none twice
    assert [ids for ids, _, _ in a[:3]] != [ids for ids, _, _ in a[3:]]  # a new order each epoch
    assert all(lab == [i % 3 for i in ids] for ids, _, lab in a)
    b = _take(build_token_stream(tokens, batch_size=3, rank=0, world_size=1, seed=6), 3)
    assert [ids for ids, _, _ in b] != [ids for ids, _, _ in a[:3]]


def test_views_are_drawn_per_epoch_and_sample(tokens):
    batches = _take(build_token_stream(tokens, batch_size=5, rank=0, world_size=1, seed=0), 40)  # 20 epochs
    views: dict[int, set[int]] = {}
    for ids, vs, _ in batches:
        for i, v in zip(ids, vs):
            views.setdefault(i, set()).add(v)
    assert all(v <= {0, 1, 2} for v in views.values()) and all(len(v) > 1 for v in views.values())


def test_two_ranks_split_the_one_rank_batches(tokens):
    one = _take(build_token_stream(tokens, batch_size=4, rank=0, world_size=1, seed=3), 4)
    r0 = _take(build_token_stream(tokens, batch_size=2, rank=0, world_size=2, seed=3), 4)
    r1 = _take(build_token_stream(tokens, batch_size=2, rank=1, world_size=2, seed=3), 4)
    for whole, a, b in zip(one, r0, r1):
        assert whole[0] == a[0] + b[0] and whole[1] == a[1] + b[1]


def test_resume_and_workers_give_the_same_batches(tokens):
    s = build_token_stream(tokens, batch_size=3, rank=0, world_size=1, seed=1)
    _take(s, 4)  # into the second epoch
    state = s.state_dict()
    rest = _take(s, 5)
    resumed = build_token_stream(tokens, batch_size=3, rank=0, world_size=1, seed=1)
    resumed.load_state_dict(state)
    assert _take(resumed, 5) == rest
    with build_token_stream(tokens, batch_size=3, rank=0, world_size=1, seed=1, num_workers=1) as w:
        assert _take(w, 9) == _take(build_token_stream(tokens, batch_size=3, rank=0, world_size=1, seed=1), 9)
    with pytest.raises(ValueError, match="resume with the same data, batch size"):
        build_token_stream(tokens, batch_size=4, rank=0, world_size=1, seed=1).load_state_dict(state)


def test_shards_pickle_without_copying_the_memory_maps(tokens):
    ds = TokenShards(tokens)
    blob = pickle.dumps(ds)
    assert len(blob) < 4000  # the index and labels, not the token arrays
    np.testing.assert_array_equal(pickle.loads(blob)[7].tokens, ds[7].tokens)
    np.testing.assert_array_equal(ds.view(7, 2), np.full((2, 2), 702))


def test_unlabelled_samples_are_refused(tmp_path):
    write_shard(tmp_path, 0, np.zeros((4, 2, 2), np.int64), [-1, 0, 1, 0], list("abcd"))
    finalize_index(tmp_path, {"bits": 4}, 1)
    with pytest.raises(ValueError, match="no class label"):
        build_token_stream(tmp_path, batch_size=2, rank=0, world_size=1, seed=0)
