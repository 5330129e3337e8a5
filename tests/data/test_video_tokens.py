"""Video token sets (``tokenize-dataset`` with a video tokenizer): every clip's (t, h, w) grid is exactly what
``VideoTokenizer.encode`` gives for the clip ``data.clips.read_clip`` reads, the clips are cut by --frames and
--stride, a too-short video follows the batch rule, a partial set resumes, and image sets keep their format."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from data_builders import gop_video

from open_magvit2.cli import main
from open_magvit2.data.clips import read_clip
from open_magvit2.data.pretokenize import clip_video, tokenize_dataset
from open_magvit2.data.tokens import (
    TokenShards,
    build_token_stream,
    finalize_index,
    read_index,
    shard_files,
    write_shard,
)
from open_magvit2.data.video_io import uint8_to_video
from open_magvit2.tokenizer import TokenizerConfig, VideoTokenizer

pytest.importorskip("av")
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

LENGTHS = {"a/v0.mp4": 17, "a/v1.mp4": 11, "b/v2.mp4": 9}  # frames of each video
FRAMES, STRIDE, SIZE = 5, 3, 16  # overlapping clips; 16² pixels → 4×4 tokens at 4×
STARTS = {"a/v0.mp4": [0, 3, 6, 9, 12], "a/v1.mp4": [0, 3, 6], "b/v2.mp4": [0, 3]}  # while start + 5 <= length


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    """A tiny random video tokenizer: 4× spatial, one temporal downsampling (clips of 1 + 2k frames)."""
    torch.manual_seed(0)
    tok = VideoTokenizer(TokenizerConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, dims=3, z_channels=10))
    return tok.save_pretrained(tmp_path_factory.mktemp("video_tok") / "tok")


@pytest.fixture
def videos(tmp_path) -> Path:
    root = tmp_path / "videos"
    for key, n in LENGTHS.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        gop_video(root / key, n, gop=4)
    return root


def _run(tok_dir: Path, data: Path, out: Path, **kw) -> dict:
    return tokenize_dataset(tok_dir, data, SIZE, out, num_workers=0, verbose=False,
                            **{"frames": FRAMES, "stride": STRIDE, "batch_size": 4, **kw})


def _tree(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_every_clip_holds_exactly_the_tokens_encode_gives(tok_dir, videos, tmp_path):
    index = _run(tok_dir, videos, tmp_path / "t")
    assert index["version"] == 2 and index["grid"] == [3, 4, 4] and index["views"] == 1
    assert (index["frames"], index["stride"], index["num_videos"], index["skipped"]) == (FRAMES, STRIDE, 3, [])
    shards = TokenShards(tmp_path / "t")
    assert shards.grid == (3, 4, 4) and shards.classes == ["a", "b"] and shards.num_classes == 2
    keys = [shards.key(i) for i in range(len(shards))]
    assert keys == [f"{video}#{s}" for video, starts in STARTS.items() for s in starts]
    tok = VideoTokenizer.from_pretrained(tok_dir).eval()
    for i, key in enumerate(keys):
        video, start = key.rsplit("#", 1)
        clip = read_clip(videos / video, frames=FRAMES, size=SIZE, start=int(start))  # the training reader
        with torch.no_grad():
            expected = tok.encode(uint8_to_video(clip.video)[None])[0].numpy()  # (t, h, w) int64
        sample = shards[i]
        assert sample.tokens.shape == (1, 3, 4, 4) and np.array_equal(sample.tokens[0].astype(np.int64), expected)
        assert sample.label == (0 if video.startswith("a/") else 1) and clip_video(key) == video


def test_the_training_stream_yields_t_h_w_grids(tok_dir, videos, tmp_path):
    _run(tok_dir, videos, tmp_path / "t")
    shards = TokenShards(tmp_path / "t")
    with build_token_stream(tmp_path / "t", batch_size=2, rank=0, world_size=1, seed=0) as stream:
        batch = next(stream)
    assert batch["tokens"].dtype == torch.int64 and batch["tokens"].shape == (2, 3, 4, 4)
    for tokens, label, key in zip(batch["tokens"], batch["label"], batch["key"]):
        sample = shards[int(key)]
        assert torch.equal(tokens, torch.from_numpy(sample.tokens[0].astype(np.int64))) and label == sample.label


def test_default_stride_cuts_clips_that_do_not_overlap(tok_dir, videos, tmp_path):
    index = _run(tok_dir, videos, tmp_path / "t", stride=None)
    keys = [TokenShards(tmp_path / "t").key(i) for i in range(index["num_samples"])]
    assert index["stride"] == FRAMES
    assert keys == ["a/v0.mp4#0", "a/v0.mp4#5", "a/v0.mp4#10", "a/v1.mp4#0", "a/v1.mp4#5", "b/v2.mp4#0"]


def test_a_partial_set_resumes_and_keeps_its_finished_shards(tok_dir, videos, tmp_path):
    out = tmp_path / "t"
    _run(tok_dir, videos, out, shard_size=2)  # chunks [v0, v1], [v2]
    complete = _tree(out)
    shard_files(out, 1).keys.unlink()  # killed while writing shard 1
    (out / "index.json").unlink()
    kept = shard_files(out, 0).tokens.stat().st_mtime_ns
    index = _run(tok_dir, videos, out, shard_size=2)
    assert shard_files(out, 0).tokens.stat().st_mtime_ns == kept and index["num_samples"] == 10
    assert _tree(out) == complete
    with pytest.raises(ValueError, match=r"was started with stride=3, now stride=5"):
        _run(tok_dir, videos, out, shard_size=2, stride=5)


def test_a_too_short_video_is_skipped_named_and_tried_again(tok_dir, videos, tmp_path, capsys):
    gop_video(videos / "b" / "short.mp4", 3)
    out = tmp_path / "t"
    args = ["tokenize-dataset", "-c", str(tok_dir), "--data", str(videos), "--output", str(out), "--size", "16",
            "--frames", "5", "--workers", "0"]
    assert main(args) == 2  # the batch rule: the others are written, the command names it and exits 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert err == ["open-magvit2 tokenize-dataset: error: 1 of 4 videos could not be read: b/short.mp4 (the video "
                   "has 3 frames, fewer than --frames 5)"]
    index = read_index(out)
    assert index["num_samples"] == 6 and [key for key, _ in index["skipped"]] == ["b/short.mp4"]
    gop_video(videos / "b" / "short.mp4", 5)  # now long enough: the rerun adds its clip
    assert main(args) == 0
    assert read_index(out)["num_samples"] == 7 and TokenShards(out).key(5) == "b/short.mp4#0"  # sorted: before v2
    assert re.search(r"7 clips of 5 frames \(stride 5\) from 4 videos, 3×4×4 tokens each", capsys.readouterr().out)


def test_strict_stops_at_a_too_short_video(tok_dir, videos, tmp_path):
    gop_video(videos / "a" / "short.mp4", 3)
    with pytest.raises(ValueError, match=r"^a/short\.mp4: the video has 3 frames, fewer than --frames 5; "
                                         r"fix or remove it and rerun \(finished shards are kept\)$"):
        _run(tok_dir, videos, tmp_path / "t", strict=True)
    assert not (tmp_path / "t" / "index.json").exists()


def test_a_single_video_file_is_a_set_of_one_class(tok_dir, videos, tmp_path):
    index = _run(tok_dir, videos / "a" / "v1.mp4", tmp_path / "t")
    shards = TokenShards(tmp_path / "t")
    assert index["num_samples"] == 3 and shards.classes == ["a"] and list(shards.labels) == [0, 0, 0]
    assert [shards.key(i) for i in range(3)] == ["v1.mp4#0", "v1.mp4#3", "v1.mp4#6"]


@pytest.mark.parametrize(("frames", "lengths", "pattern"), [
    (9, {"a/x.mp4": 5, "b/y.mp4": 7}, r"every video under .* is shorter than --frames 9 \(the longest has 7 frames\); "
                                       r"pass --frames 7 or fewer$"),
    (4, {"a/x.mp4": 9}, r"--frames 4 does not fit this video tokenizer: a clip has 1 \+ k·2 frames"),
])
def test_no_usable_clip_is_refused_before_any_write(tok_dir, tmp_path, frames, lengths, pattern):
    for key, n in lengths.items():
        (tmp_path / "v" / key).parent.mkdir(parents=True, exist_ok=True)
        gop_video(tmp_path / "v" / key, n)
    with pytest.raises(ValueError, match=pattern):
        _run(tok_dir, tmp_path / "v", tmp_path / "t", frames=frames)
    assert not (tmp_path / "t").exists()


def test_image_sets_keep_version_1_and_video_sets_say_version_2(tmp_path):
    write_shard(tmp_path / "img", 0, np.zeros((2, 1, 4, 4), np.int64), [0, 1], ["a", "b"])
    assert finalize_index(tmp_path / "img", {"bits": 4}, 1)["version"] == 1  # older packages read image sets
    assert TokenShards(tmp_path / "img").grid == (4, 4) and TokenShards(tmp_path / "img")[1].tokens.shape == (1, 4, 4)
    write_shard(tmp_path / "vid", 0, np.ones((2, 1, 3, 4, 4), np.int64), [0, 1], ["a#0", "a#4"])
    index = finalize_index(tmp_path / "vid", {"bits": 4}, 1)
    assert (index["version"], index["grid"]) == (2, [3, 4, 4]) and TokenShards(tmp_path / "vid").view(1, 0).shape == (
        3, 4, 4)
    index["version"] = 3
    (tmp_path / "vid" / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"token format version 3 is newer than this package"):
        read_index(tmp_path / "vid")
