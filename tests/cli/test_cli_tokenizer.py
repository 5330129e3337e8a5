"""The image-tokenizer subcommands, end to end on the official tiny checkpoint."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from open_magvit2 import ImageTokenizer
from open_magvit2.cli import main
from open_magvit2.imaging import load_image, pad_to_multiple, psnr_uint8, to_uint8

from official import FIXTURES

CKPT = str(FIXTURES / "image_tokenizer_tiny" / "tokenizer.ckpt")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(40, 52), (64, 48)]):
        arr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        paths.append(d / f"img{i}.png")
        Image.fromarray(arr).save(paths[-1])
    return paths


def test_reconstruct_writes_pngs_and_prints_psnr(images, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reconstruct", *map(str, images), "--checkpoint", CKPT, "--size", "32", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    tok = ImageTokenizer.from_pretrained(CKPT)
    x = load_image(images[0], 32)
    with torch.no_grad():
        rec = to_uint8(tok.decode(tok.encode(x))[0])
    assert np.array_equal(np.array(Image.open(out / "img0_recon.png")), rec)
    cmp = np.array(Image.open(out / "img0_compare.png"))
    assert cmp.shape == (36, 70, 3)  # two 32×32 images side by side with 2-pixel borders
    assert f"PSNR {psnr_uint8(to_uint8(x[0]), rec):.2f} dB" in printed
    assert "mean PSNR" in printed


def test_reconstruct_original_resolution_keeps_size(images, tmp_path):
    out = tmp_path / "out"
    assert main(["reconstruct", str(images[0]), "-c", CKPT, "--original-resolution", "-o", str(out)]) == 0
    assert np.array(Image.open(out / "img0_recon.png")).shape == (40, 52, 3)


def test_tokenize_detokenize_round_trip(images, tmp_path):
    tokdir, imgdir = tmp_path / "tok", tmp_path / "img"
    assert main(["tokenize", *map(str, images), "-c", CKPT, "--original-resolution", "-o", str(tokdir)]) == 0
    idx = np.load(tokdir / "img0.npy")
    assert idx.dtype == np.int64 and idx.shape == (20, 26)
    assert json.loads((tokdir / "img0.json").read_text())["crop_box"] == [0, 0, 40, 52]
    tok = ImageTokenizer.from_pretrained(CKPT)
    x, _ = pad_to_multiple(load_image(images[0], None), 2)
    with torch.no_grad():
        assert np.array_equal(idx, tok.encode(x)[0].numpy())
    assert main(["detokenize", str(tokdir / "img0.npy"), "-c", CKPT, "-o", str(imgdir)]) == 0
    assert np.array(Image.open(imgdir / "img0.png")).shape == (40, 52, 3)


def test_convert_then_load(tmp_path):
    assert main(["convert", CKPT, str(tmp_path / "conv")]) == 0
    a, b = ImageTokenizer.from_pretrained(CKPT), ImageTokenizer.from_pretrained(tmp_path / "conv")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_missing_checkpoint_means_the_demo_model(images, tmp_path, capsys):
    assert main(["reconstruct", str(images[0]), "-o", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "no --checkpoint: using the bundled demo image tokenizer" in err and "Traceback" not in err


def test_bad_token_file(tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros(5, dtype=np.float32))
    assert main(["detokenize", str(tmp_path / "bad.npy"), "-c", CKPT, "-o", str(tmp_path)]) == 2
    assert "expected a non-empty integer array" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["reconstruct", "tokenize", "detokenize", "convert"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0 and f"usage: open-magvit2 {cmd}" in capsys.readouterr().out


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "open_magvit2", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "reconstruct" in r.stdout
