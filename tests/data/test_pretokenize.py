"""The one writer of token sets (``data/pretokenize.py``): ``tokenize --shards`` writes exactly what
``tokenize-dataset`` writes, an unreadable image is skipped, named and tried again (the batch rule), and the advice
after a bad image works: a rerun after removing or fixing it finishes the set and keeps the shards before it."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_builders import image_folder, write_shards

from open_magvit2.cli import main
from open_magvit2.data.pretokenize import tokenize_dataset
from open_magvit2.data.tokens import TokenShards, read_index, shard_files

from official import FIXTURES

CKPT = FIXTURES / "image_tokenizer_tiny" / "tokenizer.ckpt"  # 2× downsampling: --size 8 gives 4×4 tokens
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def images(tmp_path) -> Path:
    """5 images: a/img_000..002, b/img_000..001; with 2 per shard, the chunks are [a0, a1], [a2, b0], [b1]."""
    return image_folder(tmp_path / "images", {"a": 3, "b": 2})


def _tree(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _run(images: Path, out: Path, **kw) -> dict:
    return tokenize_dataset(CKPT, images, 8, out, batch_size=2, shard_size=2, num_workers=0, verbose=False, **kw)


def _mtimes(out: Path, shards: range) -> list[int]:
    return [shard_files(out, c).tokens.stat().st_mtime_ns for c in shards]


def test_tokenize_shards_writes_what_tokenize_dataset_writes(images, tmp_path, capsys):
    index = _run(images, tmp_path / "library")
    assert index["num_samples"] == 5 and index["grid"] == [4, 4] and index["skipped"] == []
    common = ["--size", "8", "--shard-size", "2", "--batch-size", "2", "--workers", "0"]
    assert main(["tokenize", str(CKPT), str(images), "-o", str(tmp_path / "cli"), "--shards", "--labels", "folders",
                 "--no-progress", *common]) == 0
    assert main(["tokenize-dataset", "-c", str(CKPT), "--data", str(images), "--output", str(tmp_path / "dataset"),
                 *common]) == 0
    library = _tree(tmp_path / "library")
    assert {"index.json", "tokenize.json", "classes.json", "tokenizer/config.json"} <= set(library)
    assert _tree(tmp_path / "cli") == library and _tree(tmp_path / "dataset") == library  # byte for byte
    assert "5 images → " in capsys.readouterr().out


def test_an_unreadable_image_is_skipped_named_and_its_removal_finishes_the_set(images, tmp_path, capsys):
    bad = images / "b" / "img_001.png"
    bad.write_bytes(b"not a png")
    out = tmp_path / "t"
    args = ["tokenize", str(CKPT), str(images), "-o", str(out), "--shards", "--size", "8", "--shard-size", "2",
            "--batch-size", "2", "--labels", "folders", "--workers", "0", "--no-progress"]
    assert main(args) == 2  # the batch rule: the others are written, the command says which failed and exits 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1 of 5 images could not be read: b/img_001.png (" in err, err
    index = read_index(out)
    assert index["num_samples"] == 4 and [key for key, _ in index["skipped"]] == ["b/img_001.png"]
    assert len(TokenShards(out)) == 4  # a finished set: training can use it as it is
    kept = _mtimes(out, range(2))
    bad.unlink()  # the advice: remove it and rerun (was refused: "started with num_samples=5, now 4")
    assert main(args) == 0
    assert _mtimes(out, range(2)) == kept  # the shards before it are kept
    assert not shard_files(out, 2).tokens.exists()  # its shard held only it: gone with it
    index = read_index(out)
    assert index["num_samples"] == 4 and index["skipped"] == [] and len(index["shards"]) == 2
    fresh = tmp_path / "fresh"
    assert main([*args[:4], str(fresh), *args[5:]]) == 0
    assert _tree(out) == _tree(fresh)  # what a run on the folder as it is now writes


def test_a_fixed_image_is_added_on_rerun(images, tmp_path):
    bad = images / "a" / "img_002.png"
    good = bad.read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # truncated
    out = tmp_path / "t"
    assert [key for key, _ in _run(images, out)["skipped"]] == ["a/img_002.png"]
    kept = _mtimes(out, range(0, 1)) + _mtimes(out, range(2, 3))
    bad.write_bytes(good)
    index = _run(images, out)
    assert index["num_samples"] == 5 and index["skipped"] == []
    assert _mtimes(out, range(0, 1)) + _mtimes(out, range(2, 3)) == kept  # only shard 1 was written again
    assert TokenShards(out).key(2) == "a/img_002.png"


def test_strict_stops_at_the_first_unreadable_image_and_its_advice_works(images, tmp_path):
    bad = images / "b" / "img_000.png"
    bad.write_bytes(b"not a png")
    out = tmp_path / "t"
    with pytest.raises(ValueError, match=r"^b/img_000\.png: cannot read the image \(.*\); fix or remove it and "
                                         r"rerun \(finished shards are kept\)$"):
        _run(images, out, strict=True)
    assert not (out / "index.json").exists()
    bad.unlink()
    index = _run(images, out, strict=True)  # the rerun the message advises is accepted
    assert index["num_samples"] == 4 and [TokenShards(out).key(i) for i in range(4)] == [
        "a/img_000.png", "a/img_001.png", "a/img_002.png", "b/img_001.png"]


def test_a_bad_sample_in_webdataset_shards_is_skipped_and_tried_again(tmp_path):
    write_shards(tmp_path / "wds", [3, 2], bad=("s00_0001",))
    out = tmp_path / "t"
    index = tokenize_dataset(CKPT, tmp_path / "wds", 8, out, batch_size=2, num_workers=0, verbose=False)
    assert index["num_samples"] == 4 and [s["count"] for s in index["shards"]] == [2, 2]
    assert index["skipped"] == [["train-000000.tar/s00_0001",
                                 "UnidentifiedImageError: cannot identify image file 'train-000000.tar/s00_0001'"]]
    kept = _mtimes(out, range(1, 2))
    again = tokenize_dataset(CKPT, tmp_path / "wds", 8, out, batch_size=2, num_workers=0, verbose=False)
    assert again["skipped"] == index["skipped"] and _mtimes(out, range(1, 2)) == kept  # the complete tar is kept


def test_a_grid_too_small_for_the_models_is_refused_before_any_write(images, tmp_path):
    with pytest.raises(ValueError, match=r"--size 2 must be a multiple of 2 and at least 4 \(a 2×2 token grid"):
        tokenize_dataset(CKPT, images, 2, tmp_path / "t", num_workers=0)
    assert not (tmp_path / "t").exists()


def test_tokenize_dataset_cli_follows_the_batch_rule(images, tmp_path, capsys):
    (images / "b" / "img_001.png").write_bytes(b"x")
    args = ["tokenize-dataset", "-c", str(CKPT), "--data", str(images), "--size", "8", "--output",
            str(tmp_path / "t"), "--workers", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 of 5 images could not be read: b/img_001.png (" in err
    assert read_index(tmp_path / "t")["num_samples"] == 4  # the others are written
