"""Files, folders (recursive) and globs as inputs; batched tokenize into one token set; resumable shards."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from open_magvit2.cli import main
from open_magvit2.data.tokens import TokenShards, shard_files
from open_magvit2.fileio import find_files
from open_magvit2.imaging import load_image
from open_magvit2.tokenizer import ImageTokenizer

from official import FIXTURES

CKPT = str(FIXTURES / "image_tokenizer_tiny" / "tokenizer.ckpt")  # 2× downsampling: native size 32
SUFFIXES = (".png", ".jpg")


def _save(path, rng, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rng.random((*size, 3)) * 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """root/a.png, root/x/b.png, root/x/y/c.jpg, root/.hidden/d.png, root/notes.txt"""
    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(0)
    for name in ("a.png", "x/b.png", "x/y/c.jpg", ".hidden/d.png"):
        _save(root / name, rng)
    (root / "notes.txt").write_text("not an image")
    return root


def test_folders_recurse_and_keep_sub_folders(tree):
    files = find_files([tree], SUFFIXES, "image")
    assert [f.name for f in files] == ["a.png", "x/b.png", "x/y/c.jpg"]  # sorted, hidden skipped, .txt ignored
    assert [f.stem for f in files] == ["a", "x/b", "x/y/c"]


def test_globs_recurse_relative_to_their_folder(tree):
    assert [f.name for f in find_files([str(tree / "**" / "*.png")], SUFFIXES, "image")] == ["a.png", "x/b.png"]
    assert [f.name for f in find_files([str(tree / "x" / "*")], SUFFIXES, "image")] == ["b.png"]
    assert [f.name for f in find_files([str(tree / "x" / "**" / "*.jpg")], SUFFIXES, "image")] == ["y/c.jpg"]


def test_files_are_taken_as_given_and_counted_once(tree):
    files = find_files([tree / "x" / "b.png", str(tree / "notes.txt"), tree / "x"], SUFFIXES, "image")
    assert [f.name for f in files] == ["b.png", "notes.txt", "y/c.jpg"]  # b.png again through x/: counted once


def test_input_errors(tree, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such image file or folder"):
        find_files([tmp_path / "missing"], SUFFIXES, "image")
    with pytest.raises(ValueError, match="no image files"):
        find_files([str(tmp_path / "*.png")], SUFFIXES, "image")
    with pytest.raises(ValueError, match="same name"):  # x.png and other/x.jpg would both write x_recon.png
        _save(tmp_path / "x.png", np.random.default_rng(1))
        _save(tmp_path / "other" / "x.jpg", np.random.default_rng(2))
        find_files([tmp_path / "x.png", tmp_path / "other" / "x.jpg"], SUFFIXES, "image")


def test_reconstruct_a_folder_glob_and_file_mix(tree, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["reconstruct", CKPT, str(tree / "x"), str(tree / "*.png"), "-o", str(out), "--batch-size", "2"]
    assert main([*args, "--workers", "1", "--no-progress"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*_recon.png")) == [
        "a_recon.png", "b_recon.png", "y/c_recon.png"]
    assert "mean PSNR" in capsys.readouterr().out


@pytest.fixture(scope="module")
def thousand(tmp_path_factory):
    """1,000 small images in 4 class folders."""
    root = tmp_path_factory.mktemp("thousand")
    rng = np.random.default_rng(3)
    for i in range(1000):
        _save(root / f"class{i % 4}" / f"img{i:04d}.png", rng, size=(10, 9))
    return root


def test_tokenize_1000_images_batched_into_one_shard(thousand, tmp_path):
    out = tmp_path / "tokens"
    args = ["tokenize", CKPT, str(thousand), "-o", str(out), "--shards", "--size", "8", "--batch-size", "64",
            "--labels", "folders", "--no-progress"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [  # the token set of tokenize-dataset, with its tokenizer
        "classes.json", "index.json", "shard-000000.keys.json", "shard-000000.labels.npy", "shard-000000.tokens.npy",
        "tokenize.json", "tokenizer"]
    ts = TokenShards(out)
    assert len(ts) == 1000 and ts.grid == (4, 4) and ts.bits == 18 and ts.classes == [f"class{c}" for c in range(4)]
    tok = ImageTokenizer.from_pretrained(CKPT)
    for i in (0, 517, 999):
        sample = ts[i]
        x = load_image(thousand / sample.key, 8)
        with torch.no_grad():
            assert np.array_equal(sample.tokens[0], tok.encode(x)[0].numpy()), sample.key
        assert sample.label == int(sample.key[5]) and sample.key.startswith("class")


def test_token_shards_resume_only_what_is_missing(thousand, tmp_path):
    out = tmp_path / "tokens"
    args = ["tokenize", CKPT, str(thousand / "class1"), "-o", str(out), "--shards", "--size", "8",
            "--shard-size", "100", "--workers", "0", "--no-progress"]
    assert main(args) == 0  # 250 images: shards of 100, 100, 50
    first = TokenShards(out)
    assert [s["count"] for s in first.index["shards"]] == [100, 100, 50] and first[0].label == -1
    shard_files(out, 1).keys.unlink()  # as if the run had been killed while writing shard 1
    before = {c: os.stat(shard_files(out, c).tokens).st_mtime_ns for c in (0, 2)}
    assert main(args) == 0
    assert {c: os.stat(shard_files(out, c).tokens).st_mtime_ns for c in (0, 2)} == before  # kept, not redone
    again = TokenShards(out)
    assert all(np.array_equal(first[i].tokens, again[i].tokens) for i in (0, 150, 249))


def test_per_image_tokens_and_stale_sidecars(tree, tmp_path, capsys):
    tokdir, imgdir = tmp_path / "tok", tmp_path / "img"
    assert main(["tokenize", CKPT, str(tree), "--original-resolution", "-o", str(tokdir), "--workers", "0"]) == 0
    assert json.loads((tokdir / "x" / "b.json").read_text())["crop_box"] == [0, 0, 12, 10]
    assert main(["tokenize", CKPT, str(tree), "--size", "8", "-o", str(tokdir), "--workers", "0"]) == 0
    assert not (tokdir / "x" / "b.json").exists()  # the padded run's sidecar went with its tokens
    assert main(["detokenize", CKPT, str(tokdir / "x"), "-o", str(imgdir)]) == 0
    assert Image.open(imgdir / "b.png").size == (8, 8) and Image.open(imgdir / "y" / "c.png").size == (8, 8)
    capsys.readouterr()
    # a sidecar written for other tokens is ignored (and said), not applied
    (tokdir / "a.json").write_text(json.dumps({"crop_box": [0, 0, 3, 3], "tokens_sha256": "0" * 16}))
    assert main(["detokenize", CKPT, str(tokdir / "a.npy"), "-o", str(imgdir)]) == 0
    assert Image.open(imgdir / "a.png").size == (8, 8) and "ignoring" in capsys.readouterr().err


def test_batch_size_does_not_change_tokens(tree, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out, bs in ((a, "1"), (b, "3")):
        assert main(["tokenize", CKPT, str(tree), "-o", str(out), "--batch-size", bs, "--workers", "0"]) == 0
    for name in ("a.npy", "x/b.npy", "x/y/c.npy"):
        assert np.array_equal(np.load(a / name), np.load(b / name))
