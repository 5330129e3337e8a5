"""``--device`` / ``--dtype`` on the inference subcommands: weights load straight to that dtype."""

import numpy as np
import pytest
import torch
from PIL import Image

from open_magvit2.cli import main

from official import FIXTURES

TOK = str(FIXTURES / "image_tokenizer_tiny" / "tokenizer.ckpt")


@pytest.fixture(scope="module")
def small_dir(small_gen, tmp_path_factory):
    return small_gen.save_pretrained(tmp_path_factory.mktemp("gen") / "small")


def test_generate_in_bf16_loads_bf16_weights(small_dir, tmp_path, monkeypatch):
    from open_magvit2 import registry

    loaded = []
    real = registry.load_pretrained
    monkeypatch.setattr(registry, "load_pretrained", lambda *a, **k: loaded.append(real(*a, **k)) or loaded[-1])
    out = tmp_path / "out"
    argv = ["generate", "-c", str(small_dir), "--classes", "1", "--num-per-class", "2", "-o", str(out)]
    assert main([*argv, "--device", "cpu", "--dtype", "bf16", "--seed", "5"]) == 0
    assert {p.dtype for p in loaded[0].parameters()} == {torch.bfloat16}
    png = np.asarray(Image.open(out / "1" / "0.png"))
    assert png.shape == (8, 8, 3) and png.dtype == np.uint8


def test_reconstruct_in_bf16_is_close_to_fp32(tmp_path):
    """A smooth image through the tiny official tokenizer (hash weights: ~9 dB reconstructions) in bf16: a few tokens
    differ (bf16 flips some index bits), so it is close to the float32 reconstruction (within a fifth of that
    reconstruction's own error), not equal."""
    yy, xx = np.mgrid[0:32, 0:32]
    arr = np.stack([4 * xx + 60, 4 * yy + 40, 2 * (xx + yy) + 30], -1).astype(np.uint8)
    img = tmp_path / "a.png"
    Image.fromarray(arr).save(img)
    outs = {}
    for dtype in ("fp32", "bf16"):
        out = tmp_path / dtype
        assert main(["reconstruct", str(img), "-c", TOK, "--size", "32", "--dtype", dtype, "-o", str(out)]) == 0
        outs[dtype] = np.asarray(Image.open(out / "a_recon.png")).astype(int)
    diff = np.abs(outs["bf16"] - outs["fp32"]).mean()
    assert 0 < diff < 0.2 * np.abs(outs["fp32"] - arr.astype(int)).mean()


def test_dtype_choices_are_checked(capsys):
    with pytest.raises(SystemExit):
        main(["reconstruct", "x.png", "-c", TOK, "--dtype", "int8", "-o", "out"])
    assert "invalid choice" in capsys.readouterr().err
