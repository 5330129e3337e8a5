"""ONNX export of the tokenizers, checked with onnxruntime against PyTorch on real photos (scikit-image's).

Encoder: indices identical, except at latent positions where some channel of PyTorch's z lies within 1e-4 of zero
(there the two runtimes' summation orders may disagree on a sign); such positions are counted and printed.
Decoder: images within 1e-4. Batch is dynamic: graphs exported with a batch of 2 run batches of 1 and 4.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from open_magvit2.cli import main
from open_magvit2.imaging import center_crop, pil_to_tensor, resize_shorter_side
from open_magvit2.quantize import indices_to_codes
from open_magvit2.quantize.codes import codes_to_indices, unchecked_indices_to_codes
from open_magvit2.tokenizer import ImageTokenizer, VideoTokenizer, tokenizer_config

from official import FIXTURES, write_official_ckpt

pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install open-magvit2[onnx])")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed (pip install open-magvit2[onnx])")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install open-magvit2[onnx])")
skimage_data = pytest.importorskip("skimage.data")

from open_magvit2.export_onnx import export_onnx, index_parity, onnx_session, run_onnx  # noqa: E402

IMAGE_CKPT = FIXTURES / "image_tokenizer_tiny" / "tokenizer.ckpt"  # official format, 2× downsampling
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
TOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def photos(size: int) -> torch.Tensor:
    """(4, 3, size, size) in [−1, 1]: four photos, resized and centre-cropped as the official pipeline does."""
    ims = [Image.fromarray(getattr(skimage_data, n)()).convert("RGB") for n in PHOTOS]
    return torch.cat([pil_to_tensor(center_crop(resize_shorter_side(im, size), size)) for im in ims])


def check_parity(tok, x: torch.Tensor, folder: Path, size: int, frames: int | None = None) -> dict:
    """Export both graphs, run them on ``x`` (batch 4, and its first item alone), compare with PyTorch."""
    enc = onnx_session(export_onnx(tok, "encoder", folder / "encoder.onnx", size=size, frames=frames), threads=1)
    dec = onnx_session(export_onnx(tok, "decoder", folder / "decoder.onnx", size=size, frames=frames), threads=1)
    with torch.no_grad():
        z = tok.encode_latent(x)
        ref = codes_to_indices(z)
        decoded = tok.decode(ref).numpy()
    got = run_onnx(enc, x)
    parity = index_parity(got, ref, z, TOL)
    assert got.dtype == np.int64 and got.shape == tuple(ref.shape)
    assert parity.unexplained == 0, parity.summary(TOL)
    assert np.array_equal(run_onnx(enc, x[:1]), got[:1])  # the batch is dynamic
    out = run_onnx(dec, ref)
    diff = float(np.abs(out.astype(np.float64) - decoded).max())
    assert out.shape == decoded.shape and diff <= TOL
    assert np.abs(run_onnx(dec, ref[:1]) - out[:1]).max() <= TOL
    print(f"\n{type(tok).__name__} {size}px: {parity.summary(TOL)}; decoder max |Δ| {diff:.2e}")
    return {"parity": parity, "diff": diff}


def test_unchecked_codes_are_the_codes():
    idx = torch.arange(2**10).view(4, 16, 16)
    assert torch.equal(unchecked_indices_to_codes(idx, 10), indices_to_codes(idx, 10))
    assert unchecked_indices_to_codes(idx, 10, torch.float64).dtype == torch.float64


def test_official_format_tokenizer_on_photos(tmp_path):
    tok = ImageTokenizer.from_pretrained(IMAGE_CKPT)
    check_parity(tok, photos(64), tmp_path, 64)


def test_tiny_256_preset_on_photos(tmp_path):
    torch.manual_seed(0)
    tok = ImageTokenizer(tokenizer_config("imagenet_256_L_tiny")).eval()
    check_parity(tok, photos(256), tmp_path, 256)


def test_demo_tokenizer_on_photos(tmp_path):
    from open_magvit2.checkpoints.hub import native_size

    tok = ImageTokenizer.from_pretrained("demo")  # package data: missing is a failure, not a skip
    size = native_size(tok.config.spatial_factor)
    check_parity(tok, photos(size), tmp_path, size)


def test_video_tokenizer_causal_3d_convs(tmp_path):
    tok = VideoTokenizer.from_pretrained(write_official_ckpt("video_tokenizer_tiny", tmp_path / "video.ckpt"))
    still = photos(48)  # (4, 3, 48, 48): a 5-frame pan over each photo, 32×32 frames
    clips = torch.stack([still[:, :, 4 : 36, 2 * t : 2 * t + 32] for t in range(5)], dim=2)  # (4, 3, 5, 32, 32)
    result = check_parity(tok, clips, tmp_path, 32, frames=5)
    assert result["parity"].cells == 4 * 3 * 8 * 8  # 5 frames → 3 latent frames (2k+1 rule), 4× spatial


def test_export_onnx_command(tmp_path, capsys):
    import onnx

    out = tmp_path / "enc" / "tok.onnx"
    assert main(["export-onnx", "--checkpoint", str(IMAGE_CKPT), "--part", "encoder", "--size", "32",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"wrote {re.escape(str(out))} \(encoder, 32×32, opset 18, [\d.]+ MiB\)", text), text
    assert re.search(r"onnxruntime vs PyTorch on 2 test inputs: 512/512 token positions identical", text), text
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert (meta["open_magvit2.part"], meta["open_magvit2.size"]) == ("encoder", "32")
    model = onnx.load(str(out))
    assert model.graph.input[0].name == "images" and model.graph.output[0].name == "indices"
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch
    assert main(["export-onnx", "-c", str(IMAGE_CKPT), "--part", "decoder", "--size", "32", "-o",
                 str(tmp_path / "dec.onnx")]) == 0
    assert re.search(r"decoded images agree within \d\.\d\de-\d\d", capsys.readouterr().out)


def test_requested_opset_is_written(tmp_path):
    import onnx

    tok = ImageTokenizer.from_pretrained(IMAGE_CKPT)
    path = export_onnx(tok, "decoder", tmp_path / "dec.onnx", size=8, opset=19)
    assert {o.domain or "ai.onnx": o.version for o in onnx.load(str(path)).opset_import}["ai.onnx"] == 19
    assert run_onnx(onnx_session(path, threads=1), torch.zeros(1, 4, 4, dtype=torch.long)).shape == (1, 3, 8, 8)


def test_a_graph_that_fails_its_check_is_not_kept(tmp_path, monkeypatch):
    import onnx

    def reject(path, full_check=False):
        raise onnx.checker.ValidationError("rejected")

    monkeypatch.setattr(onnx.checker, "check_model", reject)
    with pytest.raises(onnx.checker.ValidationError):
        export_onnx(ImageTokenizer.from_pretrained(IMAGE_CKPT), "encoder", tmp_path / "enc.onnx", size=8)
    assert not any(tmp_path.iterdir())  # neither the file nor its temporary


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["--size", "33"], r"--size 33 must be a multiple of the tokenizer's downsampling factor 2"),
        (["--size", "32", "--frames", "5"], r"--frames is for video tokenizers"),
    ],
)
def test_export_onnx_bad_arguments(tmp_path, capsys, extra, pattern):
    out = tmp_path / "x.onnx"
    assert main(["export-onnx", "-c", str(IMAGE_CKPT), "--part", "encoder", "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err) and err.count("\n") == 1, err
    assert not out.exists()


def test_export_onnx_refuses_a_generator(tmp_path, capsys):
    import dataclasses

    from open_magvit2.generator import GENERATOR_PRESETS, ImageGenerator
    from open_magvit2.tokenizer import TokenizerConfig

    cfg = dataclasses.replace(GENERATOR_PRESETS["tiny"], grid_size=4, num_classes=2, factorized_bits=(2, 2))
    gen = ImageGenerator(config=cfg, tokenizer_config=TokenizerConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1,
                                                                         z_channels=4))
    path = gen.save_pretrained(tmp_path / "gen")
    assert main(["export-onnx", "-c", str(path), "--part", "encoder", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "holds a ImageGenerator, not a Tokenizer" in capsys.readouterr().err
