"""``tokenize-dataset``: shards hold exactly the indices the tokenizer gives, resume after a kill without duplicates
or gaps (1 or 2 ranks), WebDataset input, and the user errors."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from open_magvit2.cli import main
from open_magvit2.data import pretokenize
from open_magvit2.data.pretokenize import image_views, tokenize_dataset
from open_magvit2.data.tokens import TokenShards, read_index, shard_files
from open_magvit2.imaging import load_image, pil_to_tensor, resize_shorter_side
from open_magvit2.tokenizer import ImageTokenizer

sys.path.insert(0, str(Path(__file__).parent))
from generator_helpers import ar_ckpt, image_folder, torchrun

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp("images"), classes=("cat", "dog", "eel"), per_class=3, size=16)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return ar_ckpt(tmp_path_factory.mktemp("ckpt"))


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("shard-*"))}


def _run(ckpt, images, out, **kw):
    return tokenize_dataset(ckpt, images, 16, out, batch_size=4, shard_size=4, num_workers=0, **kw)


def test_shards_hold_the_indices_the_tokenizer_gives(ckpt, images, tmp_path):
    index = _run(ckpt, images, tmp_path / "t", augment="flip")
    assert index["num_samples"] == 9 and index["views"] == 2 and index["grid"] == [4, 4] and index["bits"] == 18
    assert [s["count"] for s in index["shards"]] == [4, 4, 1] and index["num_classes"] == 3
    ds = TokenShards(tmp_path / "t")
    assert ds.classes == ["cat", "dog", "eel"] and ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    tok = ImageTokenizer.from_pretrained(tmp_path / "t" / "tokenizer")  # the copy the token set ships
    assert index["tokenizer"]["sha256"] == pretokenize.weights_sha256(tok)
    assert index["tokenizer"]["config"]["factorized_bits"] == [6, 12]  # the AR file's first stage
    for i in range(len(ds)):
        sample = ds[i]
        x = load_image(images / sample.key, size=16)  # official resize + centre crop, (1, 3, 16, 16)
        expected = tok.encode(torch.cat([x, x.flip(-1)]))  # the view and its mirror image
        np.testing.assert_array_equal(sample.tokens, expected.numpy())
        assert sample.key.startswith(ds.classes[sample.label] + "/")
    assert sorted(ds.key(i) for i in range(len(ds))) == [ds.key(i) for i in range(len(ds))]


def test_tencrop_views():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    v = image_views(img, 32, "tencrop")
    assert v.shape == (10, 3, 32, 32)
    torch.testing.assert_close(v[5:], v[:5].flip(-1), rtol=0, atol=0)  # the mirrored five crops
    big = pil_to_tensor(resize_shorter_side(img, 35))[0]  # 40 × 50 → 35 × 43: round(1.1 · 32) = 35
    big = big[:, :, 4:39]  # its centre 35 × 35 square
    torch.testing.assert_close(v[0], big[:, :32, :32], rtol=0, atol=0)  # top-left
    torch.testing.assert_close(v[3], big[:, -32:, -32:], rtol=0, atol=0)  # bottom-right
    torch.testing.assert_close(v[4], big[:, 2:34, 2:34], rtol=0, atol=0)  # centre (offset round(3 / 2) = 2)
    assert image_views(img, 32, "none").shape == (1, 3, 32, 32)


def test_killed_run_resumes_without_duplicates_or_gaps(ckpt, images, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    _run(ckpt, images, whole)
    real, calls = pretokenize.write_shard, []

    def killed_in_second_shard(out, c, tokens, labels, keys):
        calls.append(c)
        if len(calls) == 2:  # the tokens file is on disk, the keys file (the completion mark) is not
            np.save(shard_files(out, c).tokens, tokens)
            raise KeyboardInterrupt
        return real(out, c, tokens, labels, keys)

    monkeypatch.setattr(pretokenize, "write_shard", killed_in_second_shard)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        _run(ckpt, images, part)
    assert not (part / "index.json").exists() and calls == [0, 1]
    first = shard_files(part, 0).tokens.stat().st_mtime_ns
    monkeypatch.setattr(pretokenize, "write_shard", real)
    index = _run(ckpt, images, part)
    assert shard_files(part, 0).tokens.stat().st_mtime_ns == first  # a complete shard is not redone
    assert _files(part) == _files(whole) and index["num_samples"] == 9
    keys = [TokenShards(part).key(i) for i in range(9)]
    assert len(set(keys)) == 9
    assert _run(ckpt, images, part) == index  # a complete output is only verified again


def test_sigkill_midway_then_resume(ckpt, tmp_path):
    """A real SIGKILL of the command while it writes shards; the rerun completes the same output."""
    images = image_folder(tmp_path / "images", classes=("a", "b", "c"), per_class=4, size=64)
    args = ["-m", "open_magvit2.cli", "tokenize-dataset", "--checkpoint", str(ckpt), "--data", str(images),
            "--size", "64", "--batch-size", "1", "--shard-size", "1", "--num-workers", "0", "--device", "cpu"]
    tokenize_dataset(ckpt, images, 64, tmp_path / "whole", batch_size=1, shard_size=1, num_workers=0)
    part = tmp_path / "part"
    proc = subprocess.Popen([sys.executable, *args, "--output", str(part)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not shard_files(part, 2).keys.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert not (part / "index.json").exists()  # killed halfway (12 shards)
    tokenize_dataset(ckpt, images, 64, part, batch_size=1, shard_size=1, num_workers=0)
    assert _files(part) == _files(tmp_path / "whole")
    assert not list(part.glob(".*.tmp"))


def test_two_ranks_finish_a_partial_run(ckpt, images, tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    _run(ckpt, images, whole)
    _run(ckpt, images, part)
    for c in (1, 2):  # as if the first run had finished only shard 0
        shard_files(part, c).keys.unlink()
    (part / "index.json").unlink()
    torchrun(["-m", "open_magvit2.cli", "tokenize-dataset", "--checkpoint", str(ckpt), "--data", str(images),
              "--size", "16", "--output", str(part), "--batch-size", "4", "--shard-size", "4", "--num-workers", "0",
              "--device", "cpu"])
    assert _files(part) == _files(whole)
    assert read_index(part)["shards"] == read_index(whole)["shards"]


def test_changed_settings_or_foreign_folder_are_refused(ckpt, images, tmp_path):
    _run(ckpt, images, tmp_path / "t")
    with pytest.raises(ValueError, match="started with augment='none', now augment='flip'"):
        _run(ckpt, images, tmp_path / "t", augment="flip")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        _run(ckpt, images, tmp_path / "other")
    with pytest.raises(ValueError, match="multiple of 4"):
        tokenize_dataset(ckpt, images, 18, tmp_path / "odd")


def test_unreadable_image_is_skipped_and_named(ckpt, tmp_path):
    """The batch-job rule: the set is finished without the bad image, which the index names; strict stops."""
    images = image_folder(tmp_path / "images", classes=("a",), per_class=2, size=16)
    (images / "a" / "001.png").write_bytes(b"not a png")
    index = _run(ckpt, images, tmp_path / "t")
    assert index["num_samples"] == 1 and [key for key, _ in index["skipped"]] == ["a/001.png"]
    with pytest.raises(ValueError, match=r"a/001\.png: cannot read the image"):
        _run(ckpt, images, tmp_path / "strict", strict=True)


def _write_tar(path: Path, samples: list[tuple[str, np.ndarray, int]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, arr, label in samples:
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            for ext, data in (("png", buf.getvalue()), ("cls", str(label).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards_one_token_shard_per_tar(ckpt, tmp_path):
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(5)]
    (tmp_path / "wds").mkdir()
    _write_tar(tmp_path / "wds" / "train-0.tar", [(f"s{i}", arrays[i], i % 2) for i in range(3)])
    _write_tar(tmp_path / "wds" / "train-1.tar", [(f"s{i}", arrays[i], 7) for i in range(3, 5)])
    index = _run(ckpt, tmp_path / "wds", tmp_path / "t")
    assert [s["count"] for s in index["shards"]] == [3, 2]
    ds = TokenShards(tmp_path / "t")
    assert [ds.key(i) for i in range(5)] == ["train-0.tar/s0", "train-0.tar/s1", "train-0.tar/s2",
                                             "train-1.tar/s3", "train-1.tar/s4"]
    assert ds.labels.tolist() == [0, 1, 0, 7, 7] and ds.num_classes == 8 and ds.classes is None
    tok = ImageTokenizer.from_pretrained(tmp_path / "t" / "tokenizer")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).double() / 127.5 - 1
    np.testing.assert_array_equal(np.stack([ds[i].tokens[0] for i in range(5)]), tok.encode(x.float()).numpy())


def test_cli(ckpt, images, tmp_path, capsys):
    args = ["tokenize-dataset", "--checkpoint", str(ckpt), "--data", str(images), "--size", "16", "--output",
            str(tmp_path / "t"), "--batch-size", "5", "--num-workers", "0"]
    assert main(args) == 0
    assert "9 images × 1 view(s) of 4×4 tokens" in capsys.readouterr().out
    assert json.loads((tmp_path / "t" / "classes.json").read_text()) == ["cat", "dog", "eel"]
    assert main([*args[:-4], "--output", str(tmp_path / "u"), "--data", str(tmp_path / "missing")]) == 2
    assert "no such image folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--augment", "rotate"])
