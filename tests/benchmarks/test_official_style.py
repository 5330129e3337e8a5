"""The speed baselines are the official computation (pinned to the golden fixtures), and the GPU check runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from open_magvit2 import ImageTokenizer

from official import FIXTURES, io_tensors, write_official_ckpt

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
from official_style import OfficialStyleTokenizer, official_style_sample  # noqa: E402


@pytest.mark.parametrize("name", ["image_tokenizer_tiny", "image_tokenizer_tiny_z14"])
def test_official_style_tokenizer_reproduces_the_fixture(name, tmp_path):
    path = FIXTURES / name / "tokenizer.ckpt" if name == "image_tokenizer_tiny" else write_official_ckpt(
        name, tmp_path / "z14.ckpt")
    ours = ImageTokenizer.from_pretrained(path)
    baseline = OfficialStyleTokenizer(ours.config).eval()
    baseline.load_state_dict(ours.state_dict(), strict=True)
    io = io_tensors(name)
    with torch.no_grad():
        decoded, indices = baseline(io["images"])
    assert torch.equal(indices, io["ema/images/indices"].flatten())
    torch.testing.assert_close(decoded, io["ema/images/decoded"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("case", "cfg"), [("cfg_off", (0.5, 0.5)), ("cfg_on", (1.9, 2.0))])
def test_official_style_sampler_reproduces_the_greedy_fixture(tiny_transformer, case, cfg):
    io = io_tensors("ar_tiny")
    pre, post = official_style_sample(tiny_transformer, torch.tensor([0, 3, 7]), cfg, top_k=(1, 1))
    assert torch.equal(pre, io[f"{case}/pre"]) and torch.equal(post, io[f"{case}/post"])


@pytest.mark.slow  # 25 s: `make test-slow`; run it before spending a lent GPU's minutes on benchmarks/gpu_check.sh
def test_gpu_check_dry_run(tmp_path):
    """benchmarks/gpu_check.sh --dry-run (CPU, tiny presets) prints a JSON report with every section filled, and the
    cost table of docs/training.md filled in from it."""
    env = {"PATH": "/usr/bin:/bin", "OUT": str(tmp_path), "PYTHON": sys.executable}
    out = subprocess.run([str(BENCH / "gpu_check.sh"), "--dry-run"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = ("limits", "tokenizer", "sampling", "train_tokenizer", "train_generator", "video",
                "train_tokenizer_compiled", "video_sampling")
    assert set(report) >= {*sections, "total_s"}
    assert not any("error" in report[s] or "skipped" in report[s] for s in sections), report
    assert report["sampling"]["compiled_equals_eager"] is True
    assert 0.5 < report["tokenizer"]["bf16_token_agreement"] <= 1.0
    assert report["tokenizer"]["fp32_encode_of_gemm_limit"] > 0
    for s, presets in (("train_tokenizer", ("imagenet_128_L", "imagenet_256_L")),
                       ("train_tokenizer_compiled", ("imagenet_128_L",))):  # the dry run compiles one preset
        for preset in presets:
            assert report[s][preset]["images_per_s"] > 0 and report[s][preset]["losses_finite"], report[s]
    assert report["train_generator"]["tiny"]["tokens_per_s"] > 0 and report["train_generator"]["tiny"]["loss_finite"]
    assert report["video"]["fp32_encode_clips_s"] > 0 and report["video"]["fp32_decode_clips_s"] > 0
    vs = report["video_sampling"]  # eager, compiled and the official-style sampler give the same tokens
    assert vs["equal_outputs"] is True and vs["tokens_per_clip"] == 32 and vs["ours eager"]["tokens_per_s"] > 0
    assert "| tokenizer | fp32_encode_img_s |" in out.stdout
    # the cost table: one row per full-size recipe; the dry run measured none of them under their names
    assert "| imagenet_128_L | 8 × 32 = 256 | 1,751,400 (350 epochs) | 448,358,400 images |" in out.stdout
    assert "| XL | 8 × 96 = 768 | 583,800 (350 epochs) |" in out.stdout
