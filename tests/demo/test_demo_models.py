"""The bundled demo models: loading by name, measured quality on held-out data, the demo command, CLI defaults.

The floors are a little under what the shipped weights measure (docs/model_zoo.md), so a rebuild that loses
quality fails here. The issue's targets were PSNR ≥ 22 dB on held-out photos (met on chelsea, not on coffee),
≥ 20 dB on a held-out clip (met over chelsea; not over coffee, the bundled clip) and ≥ 90% of generated digits
recognised (met); the model card says so.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from open_magvit2 import ImageGenerator, ImageTokenizer, VideoGenerator, VideoTokenizer, load_pretrained
from open_magvit2.checkpoints.hub import DEMO_ROOT, demo_sample
from open_magvit2.data.video_io import read_video
from open_magvit2.demo.data import DEMO_CLIP, HELD_OUT_PHOTOS
from open_magvit2.demo.evaluate import (
    clip_psnr,
    digits_accuracy,
    first_frame_scores,
    held_out_clip,
    moving_digits_reconstruction,
    photo_psnr,
    video_digits_scores,
    video_motion_psnr,
)

VIDEO_FLOOR_DB = 17.0  # the bundled clip over coffee


@pytest.fixture(scope="module")
def tok():
    return ImageTokenizer.from_pretrained("demo")


@pytest.fixture(scope="module")
def vgen():
    return VideoGenerator.from_pretrained("demo")


def test_all_four_load_by_name_offline(tok, vgen):
    vtok = VideoTokenizer.from_pretrained("demo")
    gen = ImageGenerator.from_pretrained("demo")
    assert tok.config.spatial_factor == 8 and tok.config.codebook_size >= 2**14
    assert vtok.config.dims == 3 and vtok.config.z_channels == tok.config.z_channels
    assert gen.tokenizer is not None and gen.config.num_classes == 10
    assert vgen.config.num_classes == 10 and vgen.grid == (9, 8, 8) and vgen.num_frames == 17
    assert vgen.frame_size == 64 and vgen.tokenizer.config.dims == 3
    for model in (tok, vtok, gen, vgen):
        assert all(p.dtype == torch.float32 for p in model.parameters())  # stored float16, loaded float32
    with pytest.raises(ValueError, match="one bundled model per class"):
        load_pretrained("demo")
    sizes = sum(f.stat().st_size for f in DEMO_ROOT.rglob("*") if f.is_file())
    assert sizes <= 45 * 2**20  # the budget for the package data: 30 MB, then 15 MB more for the video generator


def test_image_tokenizer_on_held_out_photos(tok):
    psnr = photo_psnr(tok, HELD_OUT_PHOTOS)
    assert psnr["chelsea"] >= 24.0 and psnr["coffee"] >= 20.5, psnr
    recorded = json.loads((DEMO_ROOT / "metrics.json").read_text())["image_tokenizer"]["held_out_psnr"]
    for name, value in psnr.items():  # the model card's figures are these weights' figures
        assert value == pytest.approx(recorded[name], abs=0.05)


def test_video_tokenizer_on_the_held_out_clip():
    vtok = VideoTokenizer.from_pretrained("demo")
    psnr = clip_psnr(vtok, read_video(demo_sample(DEMO_CLIP)))
    recorded = json.loads((DEMO_ROOT / "metrics.json").read_text())["video_tokenizer"]["held_out_clip_psnr"]
    assert psnr == pytest.approx(recorded, abs=0.05) and psnr >= VIDEO_FLOOR_DB
    # the same camera motion over the other held-out photo: 21.99 dB shipped (docs/model_zoo.md)
    assert clip_psnr(vtok, held_out_clip("chelsea")) >= 21.7


def test_video_tokenizer_on_the_held_out_motion(tok):
    """The figures of the model card on the held-out pans, zooms and rotations (64 × 64): these weights' figures;
    the frozen encoder keeps the key frames within 1 dB of the image tokenizer's; zooms and rotations within 1 dB
    of the image tokenizer; and on the pans the video tokenizer is within 0.3 dB of the image tokenizer at the same
    bits per frame (``image_quarter``: shipped +0.12 / −0.11 dB)."""
    got = video_motion_psnr(VideoTokenizer.from_pretrained("demo"), tok)
    recorded = json.loads((DEMO_ROOT / "metrics.json").read_text())["video_tokenizer"]["held_out_motion"]
    assert got.keys() == recorded.keys() and len(got) == 6
    for name, row in got.items():
        assert row == pytest.approx(recorded[name], abs=0.05), name
        assert row["image_key"] - row["video_key"] <= 1.0, (name, row)
        if name.endswith("_pan5"):
            assert row["video"] >= row["image_quarter"] - 0.3, (name, row)
        else:
            assert row["difference"] >= -1.0, (name, row)


def test_video_generator_tokenizer_keeps_up_with_the_digits(vgen):
    """The moving-digits tokenizer inside the video generator, on held-out clips: in-between frames within 1.5 dB of
    the key frames, frame 0 (coded alone) at >= 24 dB; the model card's figures are these weights' figures."""
    r = moving_digits_reconstruction(vgen.tokenizer, num_clips=10)
    assert r["key_psnr"] - r["between_psnr"] <= 1.5 and r["frame0_psnr"] >= 24.0, r
    recorded = json.loads((DEMO_ROOT / "metrics.json").read_text())["video_generator"]["tokenizer_held_out"]
    assert recorded["clips"] == 297 and recorded["key_psnr"] - recorded["between_psnr"] <= 1.5  # all held out
    assert r["psnr"] == pytest.approx(recorded["psnr"], abs=1.0)  # 10 of its 297 clips


@pytest.mark.slow  # 12 s; test_generated_video_digits_are_recognised_and_move measures it on 50 clips
def test_video_generator_continues_a_held_out_first_frame(vgen):
    s = first_frame_scores(vgen, num_clips=10)
    assert s["frame0_psnr"] >= 24.0 and s["clips_moving"] >= 0.8 and s["frame_accuracy"] >= 0.7, s


@pytest.mark.slow
def test_generated_video_digits_are_recognised_and_move(vgen):
    """Floors under what the shipped weights measure on 200 / 100 clips (91.5% of frames, 100% moving; continued
    first frames 89.9%, 27.2 dB; docs/model_zoo.md), with room for the noise of 100 / 50 clips."""
    cond = video_digits_scores(vgen, per_class=10)
    assert cond["frame_accuracy"] >= 0.85 and cond["clips_moving"] >= 0.9, cond
    first = first_frame_scores(vgen, num_clips=50)
    assert first["frame0_psnr"] >= 24.0 and first["frame_accuracy"] >= 0.8, first


@pytest.mark.slow
def test_generated_digits_are_recognised():
    gen = ImageGenerator.from_pretrained("demo")
    acc = digits_accuracy(gen, per_class=20)
    assert acc["overall"] >= 0.9, acc


def test_demo_command(tmp_path):
    out = tmp_path / "demo-output"
    proc = subprocess.run([sys.executable, "-m", "open_magvit2", "demo", "--output", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("photo_side_by_side.png", "photo_tokens.png", "clip_reconstruction.mp4", "clip_side_by_side.mp4",
                 "digits_grid.png", "video_digits.mp4", "video_continue.mp4"):
        assert (out / name).stat().st_size > 0, name
    assert "PSNR" in proc.stdout and "distinct codes" in proc.stdout and "video generator:" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr  # the demo's output is clean (issue 17)
    from PIL import Image

    grid = np.asarray(Image.open(out / "digits_grid.png"))
    assert grid.std() > 20  # not blank


def test_cli_defaults_to_the_demo_model(tmp_path):
    from open_magvit2.cli import main

    photo = demo_sample("chelsea.png")
    assert main(["reconstruct", str(photo), "--original-resolution", "-o", str(tmp_path / "rec")]) == 0
    assert any((tmp_path / "rec").iterdir())


def test_training_starts_from_the_demo_models_by_name(tok):
    """``init.checkpoint=demo`` / ``init.inflate_from=demo`` (fine-tuning, docs/training.md) start from exactly the
    bundled weights."""
    from open_magvit2.tokenizer.inflate import inflate_image_to_video
    from open_magvit2.train.config import InitConfig
    from open_magvit2.train.init import load_generator_init, load_tokenizer_init

    weights, disc = load_tokenizer_init(InitConfig(checkpoint="demo"), tok.config)
    assert disc is None
    ref = tok.state_dict()
    assert weights.keys() == ref.keys() and all(torch.equal(weights[k], ref[k]) for k in ref)
    vtok = VideoTokenizer.from_pretrained("demo")
    inflated, _ = load_tokenizer_init(InitConfig(inflate_from="demo"), vtok.config)
    expected = inflate_image_to_video(ref)
    assert all(torch.equal(inflated[k], expected[k]) for k in expected)
    gen = ImageGenerator.from_pretrained("demo")
    sd = load_generator_init(InitConfig(checkpoint="demo"), gen.config)
    assert all(torch.equal(sd[k], v) for k, v in gen.transformer.state_dict().items())


def test_demo_without_pyav_says_so_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import importlib.util

    from open_magvit2.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "av" else real(name, *a))
    assert main(["demo", "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install open-magvit2[video]" in err[0]
    assert not (tmp_path / "out").exists()
