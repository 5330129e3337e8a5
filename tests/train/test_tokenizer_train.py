"""Tokenizer training end to end on CPU: the CLI, the run directory, export, exact resume (also after a SIGKILL in
the middle of a checkpoint save), the non-finite guard, and the recipes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from open_magvit2 import ImageTokenizer, VideoTokenizer
from open_magvit2.train.config import load_recipe
from open_magvit2.train.metrics import read_metrics
from open_magvit2.train.tokenizer import TokenizerTrainConfig

sys.path.insert(0, str(Path(__file__).parent))
from tokenizer_helpers import REPO, TINY, TINY_VIDEO, exported, pan_clips, photo_folder, train

FAST = ["--set", "data.size=32", "--set", "data.batch_size=2", "--set", "run.log_every=1",
        "--set", "run.sample_every=3", "--set", "loss.disc_start=0"]  # the discriminator from step 0


@pytest.fixture(scope="module", autouse=True)
def fresh_process_threads():
    """Bit-exact comparisons between runs need the same number of threads (it changes float summation order):
    run in-process steps with the thread count that the subprocess runs below get, whatever earlier tests set."""
    fresh = int(subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                               capture_output=True, text=True, check=True).stdout)
    before = torch.get_num_threads()
    torch.set_num_threads(fresh)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def six_steps(tmp_path_factory, photos):
    """An uninterrupted 6-step run (checkpoints at 3 and 6), exported: the reference for the resume tests."""
    run = tmp_path_factory.mktemp("ref") / "run"
    assert train(TINY, photos, run, "--max-steps", "6", "--save-every", "3", *FAST) == 0
    return run, exported(run, run.parent / "ema"), exported(run, run.parent / "raw", "raw")


def test_run_directory_and_export(six_steps):
    run, ema, raw = six_steps
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000003", "step_0000006"]
    records = read_metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    for key in ("loss/l1", "loss/g_total", "d/d_total", "entropy/codebook", "entropy/per_sample", "codebook/usage",
                "grad_norm/g", "lr", "throughput/images_per_s"):
        assert key in records[0], key
    assert (run / "samples" / "step_0000003.png").is_file() and (run / "config.yaml").is_file()
    assert json.loads((run / "classes.json").read_text()) == ["class_a", "class_b"]
    tok = ImageTokenizer.from_pretrained(run.parent / "ema")
    with torch.no_grad():
        assert tok.encode(torch.zeros(1, 3, 32, 32)).shape == (1, 4, 4)
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)  # EMA and raw weights differ after 6 steps


def test_resume_is_bit_exact(tmp_path, photos, six_steps):
    _, ref_ema, ref_raw = six_steps
    run = tmp_path / "run"
    assert train(TINY, photos, run, "--max-steps", "3", "--save-every", "3", *FAST) == 0
    assert train(TINY, photos, run, "--max-steps", "6", "--save-every", "3", "--resume", "auto", *FAST) == 0
    for ref, got in ((ref_ema, exported(run, tmp_path / "ema")), (ref_raw, exported(run, tmp_path / "raw", "raw"))):
        assert ref.keys() == got.keys()
        for k in ref:
            assert torch.equal(ref[k], got[k]), k
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3, 4, 5, 6]


KILL_AT_SAVE = textwrap.dedent(
    """
    import sys, time
    import open_magvit2.train.checkpoint as c
    from open_magvit2.cli import main
    real = c._save
    def save(obj, path):  # the checkpoint of step 6 hangs half-written until SIGKILL
        if ".tmp-step_0000006" in str(path):
            path.write_bytes(b"PK half")
            print("saving", flush=True)
            time.sleep(120)
        real(obj, path)
    c._save = save
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.timeout(300)
def test_sigkill_during_save_then_resume(tmp_path, photos, six_steps):
    _, ref_ema, _ = six_steps
    run = tmp_path / "run"
    args = ["train-tokenizer", "--config", str(TINY), "--data", str(photos), "--output", str(run),
            "--max-steps", "6", "--save-every", "3", *FAST]
    proc = subprocess.Popen([sys.executable, "-c", KILL_AT_SAVE, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "saving"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [".tmp-step_0000006", "step_0000003"]
    assert train(TINY, photos, run, "--max-steps", "6", "--save-every", "3", "--resume", "auto", *FAST) == 0
    got = exported(run, tmp_path / "ema")
    assert all(torch.equal(ref_ema[k], got[k]) for k in ref_ema)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000003", "step_0000006"]


def test_refuses_used_directory_and_bad_resume(tmp_path, photos, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert train(TINY, photos, run, "--max-steps", "1", *FAST) == 2
    assert "is not empty; pass --resume auto" in capsys.readouterr().err
    assert (run / "notes.txt").read_text() == "mine" and not (run / "config.yaml").exists()
    assert train(TINY, photos, tmp_path / "r2", "--max-steps", "1", "--resume", str(tmp_path / "nope"), *FAST) == 2
    assert "neither a checkpoint directory" in capsys.readouterr().err


def test_video_smoke(tmp_path):
    clips = pan_clips(tmp_path / "clips")
    run = tmp_path / "run"
    assert train(TINY_VIDEO, clips, run, "--max-steps", "2", "--set", "run.log_every=1",
                 "--set", "run.sample_every=2") == 0
    assert [r["step"] for r in read_metrics(run)] == [1, 2]
    assert (run / "samples" / "step_0000002.png").is_file()
    exported(run, tmp_path / "out")
    tok = VideoTokenizer.from_pretrained(tmp_path / "out")
    with torch.no_grad():
        assert tok.encode(torch.zeros(1, 3, 5, 32, 32)).shape == (1, 2, 4, 4)


def test_video_zero_past_taps(tmp_path):
    """``init.zero_past_taps``: the run starts from the seed's random weights with every temporal kernel's past
    slices at zero. One step at lr 1e-12 leaves them within 1e-9 of zero while the last slices keep their random
    values, and the same run without the flag has past taps of the ordinary size."""
    clips = pan_clips(tmp_path / "clips")
    past = {}
    for name, extra in (("zeroed", ["--set", "init.zero_past_taps=true"]), ("plain", [])):
        run = tmp_path / name
        assert train(TINY_VIDEO, clips, run, "--max-steps", "1", "--set", "optim.lr=1e-12", *extra) == 0
        sd = exported(run, tmp_path / f"{name}_out", weights="raw")
        kernels = [v for v in sd.values() if v.dim() == 5 and v.shape[2] == 3]
        assert len(kernels) > 20
        past[name] = max(v[:, :, :-1].abs().max().item() for v in kernels)
        assert min(v[:, :, -1].abs().max().item() for v in kernels) > 1e-3
    assert past["zeroed"] < 1e-9 and past["plain"] > 1e-2


def test_single_frames_keep_zeroed_past_taps_then_clips_grow_them(tmp_path):
    """The two-stage recipe of a video tokenizer from scratch (docs/training.md, "Video tokenizers from scratch"):
    on single frames (``data.frames: 1``) the causal padding in front is zeros, so at an ordinary lr the past
    slices stay exactly zero while the last slices train; from that run's export on 5-frame clips they grow, one
    Adam step (about lr) from zero."""
    clips = pan_clips(tmp_path / "clips")

    def kernels(sd):
        return {k: v for k, v in sd.items() if v.dim() == 5 and v.shape[2] == 3}

    frames = tmp_path / "frames"
    assert train(TINY_VIDEO, clips, frames, "--max-steps", "2", "--set", "optim.lr=1e-3", "--set", "data.frames=1",
                 "--set", "init.zero_past_taps=true") == 0
    stage1 = kernels(exported(frames, tmp_path / "frames_out", weights="raw"))
    assert len(stage1) > 20 and all(torch.count_nonzero(v[:, :, :-1]) == 0 for v in stage1.values())
    clips_run = tmp_path / "clips_run"
    assert train(TINY_VIDEO, clips, clips_run, "--max-steps", "1", "--set", "optim.lr=1e-3",
                 "--set", f"init.checkpoint={tmp_path / 'frames_out'}") == 0
    stage2 = kernels(exported(clips_run, tmp_path / "clips_out", weights="raw"))
    # one Adam step from the loaded weights: the last slices move by at most about lr, the past ones leave zero
    assert max((stage2[k][:, :, -1] - stage1[k][:, :, -1]).abs().max().item() for k in stage1) <= 1.1e-3
    grown = [v[:, :, :-1].abs().max().item() for v in stage2.values()]
    assert max(grown) <= 1.1e-3 and sum(g > 1e-6 for g in grown) > len(grown) // 2


def test_frozen_encoder_stays_bitwise_and_resumes_exactly(tmp_path):
    """``freeze: [encoder]``: from a checkpoint, two steps at lr 1e-3 leave every encoder weight (raw and EMA)
    bitwise as loaded while the decoder trains, and 1 + 1 resumed steps equal 2 uninterrupted ones bitwise."""
    clips = pan_clips(tmp_path / "clips")
    start = tmp_path / "start"
    assert train(TINY_VIDEO, clips, start, "--max-steps", "1") == 0
    init = exported(start, tmp_path / "start_out", weights="raw")
    common = ["--set", "optim.lr=1e-3", "--set", f"init.checkpoint={tmp_path / 'start_out'}", "--set",
              "freeze=[encoder]", "--save-every", "1"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train(TINY_VIDEO, clips, whole, "--max-steps", "2", *common) == 0
    assert train(TINY_VIDEO, clips, parts, "--max-steps", "1", *common) == 0
    assert train(TINY_VIDEO, clips, parts, "--max-steps", "2", "--resume", "auto", *common) == 0
    for weights in ("raw", "ema"):
        got = exported(whole, tmp_path / f"whole_{weights}", weights=weights)
        resumed = exported(parts, tmp_path / f"parts_{weights}", weights=weights)
        assert got.keys() == init.keys() == resumed.keys()
        assert all(torch.equal(got[k], resumed[k]) for k in got)
        enc = [k for k in got if k.startswith("encoder.")]
        dec = [k for k in got if k.startswith("decoder.") and got[k].is_floating_point()]
        assert len(enc) > 20 and all(torch.equal(got[k], init[k]) for k in enc)
        assert sum(not torch.equal(got[k], init[k]) for k in dec) > len(dec) // 2


def test_freeze_names_a_part(tmp_path):
    base = load_recipe(TokenizerTrainConfig, TINY_VIDEO).__dict__
    for bad, words in ((("encodr",), "one of ['encoder', 'decoder']"), (("encoder", "decoder"), "nothing would train")):
        with pytest.raises(ValueError, match=words.replace("[", r"\[")):
            TokenizerTrainConfig(**{**base, "freeze": bad})
    assert TokenizerTrainConfig(**{**base, "freeze": "encoder"}).freeze == ("encoder",)  # one name, not letters


def test_lpips_path(tmp_path, photos):
    from open_magvit2.eval.backbones import write_random_backbones

    vgg = write_random_backbones(tmp_path / "hub", only=("vgg",))["vgg"]
    run = tmp_path / "run"
    assert train(TINY, photos, run, "--max-steps", "1", *FAST, "--set", "loss.perceptual_weight=1.0",
                 "--set", f"loss.lpips_path={vgg}") == 0
    assert read_metrics(run)[0]["loss/lpips"] > 0


def test_nonfinite_steps_stop_the_run(tmp_path, photos, monkeypatch, capsys):
    from open_magvit2.losses import TokenizerLoss

    real = TokenizerLoss.generator_loss

    def poisoned(self, x, xrec, quant, step, last_layer=None):  # optimiser steps 3, 4, 5, ... are non-finite
        out = real(self, x, xrec, quant, step, last_layer)
        return out._replace(loss=out.loss * float("nan")) if step >= 2 else out

    monkeypatch.setattr(TokenizerLoss, "generator_loss", poisoned)
    run = tmp_path / "run"
    assert train(TINY, photos, run, "--max-steps", "10", "--save-every", "2", *FAST,
                 "--set", "run.max_nonfinite=3") == 1
    err = capsys.readouterr().err
    assert "step 3: non-finite loss or gradients; step skipped (1 in a row, 1 in all)" in err
    last = run / "checkpoints" / "step_0000002"
    assert (f"3 consecutive steps with non-finite loss or gradients (steps 3–5). The newest checkpoint, {last} "
            "(step 2), predates it: continue from it with --resume auto and a lower learning rate "
            "(--set optim.lr=5e-05)") in err
    # no checkpoint while the streak was open (step 4 would have been one)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000002"]
    # the advice works: the lower learning rate is accepted on resume and recorded
    monkeypatch.setattr(TokenizerLoss, "generator_loss", real)
    assert train(TINY, photos, run, "--max-steps", "4", "--save-every", "2", *FAST, "--set", "run.max_nonfinite=3",
                 "--resume", "auto", "--set", "optim.lr=5e-05") == 0
    events = [r for r in read_metrics(run, events=True) if r.get("event") == "resume"]
    assert events == [{"step": 2, "event": "resume", "changed": {"optim.lr": [0.0005, 5e-05],
                                                                 "run.max_steps": [10, 4]}}]
    assert "optim.lr 0.0005 → 5e-05" in capsys.readouterr().err


def test_nonfinite_before_the_first_checkpoint_leaves_nothing(tmp_path, photos, capsys):
    run = tmp_path / "run"
    assert train(TINY, photos, run, "--max-steps", "10", "--save-every", "5", *FAST, "--set", "run.max_nonfinite=2",
                 "--set", "optim.lr=1e9") == 1
    err = capsys.readouterr().err
    assert "no checkpoint had been written, so the run directory was removed" in err and not run.exists()


def test_every_recipe_loads_and_typos_are_named(tmp_path):
    recipes = sorted((REPO / "configs" / "tokenizer").glob("*.yaml"))
    assert {p.stem for p in recipes} >= {"imagenet_128_L", "imagenet_256_L", "pretrain_256_262144",
                                         "pretrain_256_16384", "ucf101_128_L", "tiny", "tiny_video"}
    for path in recipes:
        cfg = load_recipe(TokenizerTrainConfig, path)
        cfg.tokenizer_config()  # the preset exists and the overrides apply
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("lecam_weight", "lecam_wieght"))
    with pytest.raises(ValueError, match=r"unknown config key loss\.lecam_wieght"):
        load_recipe(TokenizerTrainConfig, bad)


@pytest.mark.slow
def test_tiny_recipe_learns(tmp_path, photos):
    """200 CPU steps of the tiny recipe on six photos: the mean L1 of the last 10 steps is at most half that of the
    first 10, and the codes do not collapse: the last window of 10 steps (10 × 4 crops × 16 tokens) still holds ≥ 25%
    distinct codes, while the bits become confident (per-sample entropy < 0.1 nats; at most 18·log 2 = 12.5)."""
    run = tmp_path / "run"
    assert train(TINY, photos, run, "--set", "run.sample_every=0") == 0
    records = read_metrics(run)  # logged values are means over each window of run.log_every = 10 steps
    assert len(records) == 20
    assert records[-1]["loss/l1"] <= 0.5 * records[0]["loss/l1"], (records[0]["loss/l1"], records[-1]["loss/l1"])
    assert records[-1]["codebook/used"] >= 0.25 * 10 * 4 * 16
    assert records[-1]["entropy/per_sample"] < 0.1
