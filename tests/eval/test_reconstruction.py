"""evaluate-tokenizer end to end on a tiny tokenizer: every number recomputed directly, resume, padding, CLI."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from open_magvit2.eval import metrics as M
from open_magvit2.eval.datasets import list_files, shard, subset
from open_magvit2.eval.reconstruction import TokenizerEvalConfig, evaluate_tokenizer
from open_magvit2.imaging import crop_box, load_image, pad_to_multiple, to_uint8
from open_magvit2.tokenizer import ImageTokenizer
from preemption import FailingAt


@pytest.fixture(scope="module")
def cfg(tiny_tokenizer_dir, image_dir, weights, tmp_path_factory) -> TokenizerEvalConfig:
    return TokenizerEvalConfig(
        checkpoint=str(tiny_tokenizer_dir), data=str(image_dir), output=str(tmp_path_factory.mktemp("out")), size=32,
        max_images=3, batch_size=1, protocol_batch_size=2, num_workers=0, progress=False, restart=True,
        inception_weights=weights["inception"], lpips_alex_weights=weights["alex"], lpips_vgg_weights=weights["vgg"],
    )


class _RecordingInception(torch.nn.Module):
    """The rFID network, keeping every input and output (its equality with pytorch-fid is in test_backbones)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.weights_path, self.calls = net, net.weights_path, []

    def fid_features(self, x01: torch.Tensor) -> torch.Tensor:
        out = self.net.fid_features(x01)
        self.calls.append((x01.clone(), out))
        return out


@pytest.fixture(scope="module")
def recorded(reconstruction_nets):
    return _RecordingInception(reconstruction_nets.inception)


@pytest.fixture(scope="module")
def result(cfg, reconstruction_nets, recorded):
    nets = type(reconstruction_nets)(recorded, reconstruction_nets.alex, reconstruction_nets.vgg)
    return evaluate_tokenizer(cfg, nets=nets)


def _nuclear_fd(a: np.ndarray, b: np.ndarray) -> float:
    """FD of two small sample sets via the nuclear norm of A1ᵀA2 (independent of the library's formula)."""
    ca, cb = (a - a.mean(0)) / np.sqrt(len(a) - 1), (b - b.mean(0)) / np.sqrt(len(b) - 1)
    tr = np.linalg.svd(ca @ cb.T, compute_uv=False).sum()
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + (ca**2).sum() + (cb**2).sum() - 2 * tr)


def test_every_metric_equals_a_direct_computation(cfg, result, reconstruction_nets, recorded):
    files = subset(list_files(cfg.data, (".png",), "image"), 3)
    assert files == ["n0001/img0.png", "n0001/img1.png", "n0002/img3.png"]  # sorted, evenly spaced subset
    tok = ImageTokenizer.from_pretrained(cfg.checkpoint).eval()
    x = torch.cat([load_image(Path(cfg.data) / f, 32) for f in files])
    with torch.no_grad():
        outs = [tok(x[i : i + 1]) for i in range(3)]  # the pipeline's batches of 1: same float rounding
        rec = torch.cat([o.reconstruction for o in outs]).clamp(-1, 1)
        indices = torch.cat([o.quantizer.indices for o in outs])
        lp_alex = reconstruction_nets.alex(x, rec).flatten().numpy()
    # rFID: real then reconstructed [0, 1] float images of each batch went through the Inception network
    inputs = [c[0] for c in recorded.calls]
    torch.testing.assert_close(torch.cat(inputs[0::2]), (x + 1) / 2, rtol=0, atol=0)
    torch.testing.assert_close(torch.cat(inputs[1::2]), (rec + 1) / 2, rtol=0, atol=0)
    f_real = torch.cat([c[1] for c in recorded.calls[0::2]]).double().numpy()
    f_rec = torch.cat([c[1] for c in recorded.calls[1::2]]).double().numpy()
    gt_u8 = ((x + 1) / 2 * 255.0).permute(0, 2, 3, 1).to(torch.uint8).numpy()
    rec_u8 = ((rec + 1) / 2 * 255.0).permute(0, 2, 3, 1).to(torch.uint8).numpy()
    psnr = [peak_signal_noise_ratio(g.astype(np.float32) / 255, r.astype(np.float32) / 255)
            for g, r in zip(gt_u8, rec_u8)]
    ssim = [structural_similarity(r.astype(np.float32) / 255, g.astype(np.float32) / 255, data_range=1.0,
                                  channel_axis=-1) for g, r in zip(gt_u8, rec_u8)]
    exact = [peak_signal_noise_ratio(g / 255.0, (r.double().numpy().transpose(1, 2, 0) + 1) / 2, data_range=1.0)
             for g, r in zip(np.round((x.double().numpy() + 1) * 127.5).transpose(0, 2, 3, 1), rec)]

    assert result.psnr == pytest.approx(((psnr[0] + psnr[1]) / 2 + psnr[2]) / 2, rel=1e-12)  # official groups of 2
    assert result.ssim == pytest.approx(((ssim[0] + ssim[1]) / 2 + ssim[2]) / 2, rel=1e-12)
    assert result.psnr_exact == pytest.approx(np.mean(exact), rel=1e-9)
    assert result.lpips_alex == pytest.approx(float(np.mean(lp_alex)), rel=1e-6)
    assert result.rfid == pytest.approx(_nuclear_fd(f_real, f_rec), rel=1e-6)
    counts = torch.bincount(indices.flatten(), minlength=2**18)
    assert result.used_codes == int((counts > 0).sum()) and result.codebook_size == 2**18
    assert result.num_images == 3 and result.images_per_second > 0
    assert result.protocol["fid_method"].startswith("exact low-rank")


def test_outputs_are_written(cfg, result):
    out = Path(cfg.output)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["rfid"] == pytest.approx(result.rfid) and saved["protocol"]["images"] == 3
    assert "| rFID |" in (out / "metrics.md").read_text()
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [r["file"] for r in rows] == ["n0001/img0.png", "n0001/img1.png", "n0002/img3.png"]
    for name in ("code_usage.png", "worst_psnr.png"):
        assert Image.open(out / name).size[0] > 100



def test_interrupted_run_resumes_to_the_same_numbers(cfg, result, reconstruction_nets, tmp_path):
    tok = ImageTokenizer.from_pretrained(cfg.checkpoint).eval()
    rcfg = replace(cfg, output=str(tmp_path), save_every=1, restart=False)  # a state after every image
    with pytest.raises(KeyboardInterrupt):
        evaluate_tokenizer(rcfg, model=FailingAt(tok, fail_at=3), nets=reconstruction_nets)
    assert (tmp_path / "state" / "rank0-of-1.pt").is_file()
    resumed = FailingAt(tok, fail_at=None)
    again = evaluate_tokenizer(replace(rcfg, metric_workers=1), model=resumed, nets=reconstruction_nets)
    assert resumed.calls == 1  # only the third image was left
    for name in ("psnr", "ssim", "psnr_exact", "ssim_exact", "lpips_alex", "lpips_vgg", "rfid"):
        assert getattr(again, name) == pytest.approx(getattr(result, name), rel=1e-12), name
    assert again.used_codes == result.used_codes
    with pytest.raises(ValueError, match=r"different evaluation.*size"):
        evaluate_tokenizer(replace(rcfg, size=64), model=tok, nets=reconstruction_nets)


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory, photo) -> Path:
    root = tmp_path_factory.mktemp("odd")
    Image.fromarray(photo("astronaut")[:33:3, :41:2].copy()).save(root / "a.png")  # 11×21
    Image.fromarray(photo("coffee")[:27, :35].copy()).save(root / "b.png")  # 27×35
    return root


def test_original_resolution_pads_and_crops_back(cfg, reconstruction_nets, odd_images, tmp_path):
    ocfg = replace(cfg, data=str(odd_images), original_resolution=True, max_images=None, output=str(tmp_path),
                   lpips=False)
    r = evaluate_tokenizer(ocfg, nets=type(reconstruction_nets)(reconstruction_nets.inception, None, None))
    tok = ImageTokenizer.from_pretrained(cfg.checkpoint).eval()
    psnr = []
    for f in ("a.png", "b.png"):  # odd sizes: padded to even (the tiny tokenizer's factor 2), cropped back
        x = load_image(odd_images / f, None)
        xp, box = pad_to_multiple(x, 2)
        assert xp.shape != x.shape
        with torch.no_grad():
            rec = crop_box(tok(xp).reconstruction.clamp(-1, 1), box)
        assert rec.shape == x.shape
        g, q = to_uint8(x), to_uint8(rec)
        psnr.append(M.psnr_ssim_official(q, g, ssim=False)[0][0])
    assert r.psnr == pytest.approx(np.mean(psnr), rel=1e-12)  # batch 1: a plain mean
    assert r.lpips_alex is None and "batch 1" in r.protocol["preprocessing"]


def test_shards_partition_the_list():
    parts = [shard(10, r, 3) for r in range(3)]
    assert sorted(p for part in parts for p in part) == list(range(10)) and parts[1] == [1, 4, 7]
    with pytest.raises(ValueError):
        shard(10, 3, 3)


def test_cli_under_torchrun_gives_the_single_process_numbers(cfg, result, tmp_path):
    """The command a user runs, under torchrun with 2 CPU ranks (Gloo), against the in-process result."""
    args = ["evaluate-tokenizer", "-c", cfg.checkpoint, "--data", cfg.data, "--size", "32", "--max-images", "3",
            "--batch-size", "1", "--protocol-batch-size", "2", "--workers", "0", "--no-progress", "--no-lpips",
            "--device", "cpu", "--inception-weights", cfg.inception_weights, "-o", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "open_magvit2", *args], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    ddp = json.loads((tmp_path / "metrics.json").read_text())
    assert ddp["protocol"]["world_size"] == 2 and ddp["num_images"] == 3
    assert json.loads(run.stdout.split("report:")[0])["num_images"] == 3  # rank 0 printed the summary
    assert (tmp_path / "state" / "rank1-of-2.pt").is_file()
    for name in ("psnr", "ssim", "psnr_exact", "ssim_exact", "used_codes"):
        assert ddp[name] == pytest.approx(getattr(result, name), rel=1e-9), name
    assert ddp["rfid"] == pytest.approx(result.rfid, rel=1e-5)  # float32 Inception, 1 vs 2 threads per process


def test_cli_reports_missing_weights_in_one_line(tiny_tokenizer_dir, image_dir, tmp_path, capsys):
    from open_magvit2.cli import main

    code = main(["evaluate-tokenizer", "-c", str(tiny_tokenizer_dir), "--data", str(image_dir), "-o", str(tmp_path),
                 "--inception-weights", str(tmp_path / "missing.pth"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "missing.pth" in err and "pt_inception-2015-12-05-6726825d.pth" in err
    assert len(err.strip().splitlines()) == 1


# ---- the batch rule: an image that cannot be read is skipped, recorded and named at the end ----------------------
_METRICS = ("rfid", "psnr", "ssim", "psnr_exact", "ssim_exact", "lpips_alex", "lpips_vgg")
_CORRUPT = b"\x89PNG\r\n\x1a\n" + b"garbage" * 50


@pytest.fixture
def with_corrupt(image_dir, tmp_path) -> Path:
    """The three images of ``result`` with a corrupt PNG at position 1 (before img1: the batches of 2 change)."""
    root = tmp_path / "val"
    for name in ("n0001/img0.png", "n0001/img1.png", "n0002/img3.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes((image_dir / name).read_bytes())
    (root / "n0001" / "img0_corrupt.png").write_bytes(_CORRUPT)
    return root


def test_an_unreadable_image_is_left_out_of_every_metric(cfg, result, reconstruction_nets, with_corrupt, tmp_path):
    r = evaluate_tokenizer(replace(cfg, data=str(with_corrupt), max_images=None, output=str(tmp_path / "o")),
                           nets=reconstruction_nets)
    for name in _METRICS:  # the numbers of the list without it: batches of 2 are (img0, img1), (img3)
        assert getattr(r, name) == pytest.approx(getattr(result, name), rel=1e-12), name
    assert r.used_codes == result.used_codes and r.num_images == 3
    [(name, reason)] = r.unreadable
    assert name == "n0001/img0_corrupt.png" and re.fullmatch(r"cannot read the image \(.+\); is it a complete image "
                                                             r"file\?", reason)
    saved = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert saved["unreadable"] == [[name, reason]] and saved["num_images"] == 3 and saved["protocol"]["images"] == 4
    assert saved["protocol"]["unreadable"].startswith("1 of 4 listed images could not be read")
    assert "| images | 3 of 4 | 1 could not be read" in (tmp_path / "o" / "metrics.md").read_text()
    rows = list(csv.DictReader((tmp_path / "o" / "per_image.csv").open()))
    assert [(r["position"], r["file"]) for r in rows] == [("0", "n0001/img0.png"), ("2", "n0001/img1.png"),
                                                          ("3", "n0002/img3.png")]


def test_strict_stops_at_the_unreadable_image(cfg, reconstruction_nets, with_corrupt, tmp_path):
    tok = FailingAt(ImageTokenizer.from_pretrained(cfg.checkpoint).eval(), fail_at=None)
    scfg = replace(cfg, data=str(with_corrupt), max_images=None, output=str(tmp_path), strict=True)
    with pytest.raises(ValueError) as info:
        evaluate_tokenizer(scfg, model=tok, nets=reconstruction_nets)
    assert re.fullmatch(rf"{re.escape(str(with_corrupt))}/n0001/img0_corrupt.png: cannot read the image \(.+\); is "
                        r"it a complete image file\?", str(info.value))
    assert tok.calls == 1 and not (tmp_path / "metrics.json").exists()  # img0, then stopped at position 1


def test_a_run_resumed_after_a_skip_gives_the_uninterrupted_numbers(cfg, result, reconstruction_nets, with_corrupt,
                                                                     tmp_path, photo):
    tok = ImageTokenizer.from_pretrained(cfg.checkpoint).eval()
    rcfg = replace(cfg, data=str(with_corrupt), max_images=None, output=str(tmp_path), save_every=1, restart=False)
    with pytest.raises(KeyboardInterrupt):  # img0 evaluated, the corrupt one skipped (a state after each), dies at img1
        evaluate_tokenizer(rcfg, model=FailingAt(tok, fail_at=2), nets=reconstruction_nets)
    state = torch.load(tmp_path / "state" / "rank0-of-1.pt", weights_only=True)
    assert state["done"] == 2 and [p for p, _ in state["unreadable"]] == [1]
    resumed = FailingAt(tok, fail_at=None)
    again = evaluate_tokenizer(rcfg, model=resumed, nets=reconstruction_nets)
    assert resumed.calls == 2  # img1 and img3; the corrupt file was tried again and is still unreadable
    for name in _METRICS:
        assert getattr(again, name) == pytest.approx(getattr(result, name), rel=1e-12), name
    assert again.num_images == 3 and [n for n, _ in again.unreadable] == ["n0001/img0_corrupt.png"]

    Image.fromarray(photo("chelsea")[:131, :171]).save(with_corrupt / "n0001" / "img0_corrupt.png")  # fixed
    fixed = FailingAt(tok, fail_at=None)
    done = evaluate_tokenizer(rcfg, model=fixed, nets=reconstruction_nets)
    fresh = evaluate_tokenizer(replace(rcfg, output=str(tmp_path / "fresh")), model=tok, nets=reconstruction_nets)
    assert fixed.calls == 1 and done.unreadable == [] and done.num_images == 4  # only the fixed image was run
    for name in _METRICS:
        assert getattr(done, name) == pytest.approx(getattr(fresh, name), rel=1e-9), name


def test_cli_skips_an_unreadable_image_names_it_and_exits_2(cfg, with_corrupt, tmp_path, capsys):
    from open_magvit2.cli import main

    argv = ["evaluate-tokenizer", "-c", cfg.checkpoint, "--data", str(with_corrupt), "--size", "32", "--batch-size",
            "2", "--workers", "2", "--no-progress", "--no-lpips", "--device", "cpu",
            "--inception-weights", cfg.inception_weights]
    assert main([*argv, "-o", str(tmp_path / "out")]) == 2  # read by DataLoader workers: no worker traceback
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [err.strip()] and "Traceback" not in err
    assert re.fullmatch(r"open-magvit2 evaluate-tokenizer: error: 1 of 4 images could not be read: "
                        r"n0001/img0_corrupt.png \(cannot read the image \(.+\); is it a complete image file\?\)",
                        err.strip())
    assert "the metrics cover 3 of 4 images" in out
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())  # written for the readable images
    assert saved["num_images"] == 3 and [n for n, _ in saved["unreadable"]] == ["n0001/img0_corrupt.png"]

    assert main([*argv, "-o", str(tmp_path / "strict"), "--strict"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(r"open-magvit2 evaluate-tokenizer: error: .*/n0001/img0_corrupt.png: cannot read the image "
                        r"\(.+\); is it a complete image file\?", err)
    assert not (tmp_path / "strict").exists()  # stopped before any state or report: nothing left
