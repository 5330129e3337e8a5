"""evaluate-video on a tiny video tokenizer and short synthetic videos (PyAV), with the random-weight I3D."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from open_magvit2.eval.datasets import centre_window, load_clip
from open_magvit2.eval.metrics import frechet_distance_svd
from open_magvit2.eval.video import VideoEvalConfig, VideoNets, evaluate_video, i3d_input
from open_magvit2.lpips_net import load_lpips

pytest.importorskip("av")
sys.path.insert(0, str(Path(__file__).parent))  # spawned ranks import video_dist_worker from sys.path
import video_dist_worker
from video_dist_worker import RecordingI3D, tiny_video_tokenizer

from preemption import FailingAt


def _official_i3d_preprocess(video: torch.Tensor) -> torch.Tensor:
    """docs/design.md O-50 written out as the official script does it: numpy uint8 (B, T, H, W, C) → FloatTensor →
    resize."""
    u8 = (((video + 1) / 2) * 255.0).permute(0, 2, 3, 4, 1).byte().numpy()
    b, t, _, _, c = u8.shape
    frames = torch.FloatTensor(u8).flatten(end_dim=1).permute(0, 3, 1, 2).contiguous()
    frames = F.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False)
    return 2.0 * frames.view(b, t, c, 224, 224).transpose(1, 2).contiguous() / 255.0 - 1


@pytest.fixture(scope="module")
def ucf(tmp_path_factory, photo):
    from open_magvit2.data.video_io import write_video

    root = tmp_path_factory.mktemp("ucf")
    (root / "train" / "ClassA").mkdir(parents=True)
    base = photo("astronaut")[::6, ::6][:40, :48]
    for name, n in (("v1.mp4", 12), ("v2.mp4", 11), ("short.mp4", 5)):
        frames = np.stack([np.roll(base, 3 * i + len(name), axis=1) for i in range(n)]).astype(np.uint8)
        write_video(root / "train" / "ClassA" / name, frames, fps=25)
    return root


def test_centre_window_is_the_official_one():
    assert centre_window(20, 9) == (6, 15) and centre_window(9, 9) == (0, 9) and centre_window(8, 9) is None
    assert centre_window(100, 17) == (42, 59)  # frames center-8 .. center+8 with center = n // 2


def test_evaluate_video_equals_direct_computation(ucf, weights, tmp_path):
    from open_magvit2.data.video_io import uint8_to_video

    tok = tiny_video_tokenizer()
    nets = VideoNets(RecordingI3D(), load_lpips("alex", weights["alex"]), load_lpips("vgg", weights["vgg"]))
    cfg = VideoEvalConfig(checkpoint="in-memory", data=str(ucf), output=str(tmp_path), num_frames=9, size=32,
                          batch_size=4, num_workers=0, progress=False)
    r = evaluate_video(cfg, model=tok, nets=nets)
    assert r.skipped == ["ClassA/short.mp4"] and r.num_clips == 2

    clips = [load_clip(ucf / "train" / "ClassA" / f, 9, 32) for f in ("v1.mp4", "v2.mp4")]
    x = uint8_to_video(torch.stack(clips))  # (2, 3, 9, 32, 32)
    with torch.no_grad():
        out = tok(x)
        rec = out.reconstruction.clamp(-1, 1)
        frames = lambda v: v.transpose(1, 2).flatten(0, 1)  # noqa: E731
        lp = nets.alex(frames(x), frames(rec)).flatten()
    real_in, rec_in = nets.i3d.inputs
    torch.testing.assert_close(real_in, _official_i3d_preprocess(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(rec_in, _official_i3d_preprocess(rec), rtol=0, atol=1e-6)
    torch.testing.assert_close(i3d_input(x), real_in)
    assert r.rfvd == pytest.approx(frechet_distance_svd(*nets.i3d.outputs), rel=1e-9)
    assert r.lpips_alex == pytest.approx(float(lp.mean()), rel=1e-6)  # mean over videos × frames
    assert r.used_codes == int((torch.bincount(out.quantizer.indices.flatten()) > 0).sum())
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["skipped"] == ["ClassA/short.mp4"]
    assert (tmp_path / "clips.txt").read_text().split() == ["ClassA/v1.mp4", "ClassA/v2.mp4"]


def test_clip_loader_centre_crops_deterministically(ucf):
    a = load_clip(ucf / "train" / "ClassA" / "v1.mp4", 9, 32)
    b = load_clip(ucf / "train" / "ClassA" / "v1.mp4", 9, 32)
    assert a.shape == (3, 9, 32, 32) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert load_clip(ucf / "train" / "ClassA" / "short.mp4", 9, 32) is None



@pytest.fixture(scope="module")
def video_cfg(ucf, tmp_path_factory):
    return VideoEvalConfig(checkpoint="in-memory", data=str(ucf), output=str(tmp_path_factory.mktemp("v")),
                           num_frames=9, size=32, batch_size=1, num_workers=0, progress=False, lpips=False)


@pytest.fixture(scope="module")
def whole(video_cfg):
    return evaluate_video(video_cfg, model=tiny_video_tokenizer(), nets=VideoNets(RecordingI3D(), None, None))


def test_evaluate_video_resumes_after_an_interruption(video_cfg, whole, tmp_path):
    cfg = replace(video_cfg, output=str(tmp_path), save_every=1)
    with pytest.raises(KeyboardInterrupt):
        evaluate_video(cfg, model=FailingAt(tiny_video_tokenizer(), 2), nets=VideoNets(RecordingI3D(), None, None))
    assert (tmp_path / "state" / "rank0-of-1.pt").is_file()
    resumed = FailingAt(tiny_video_tokenizer(), None)
    again = evaluate_video(cfg, model=resumed, nets=VideoNets(RecordingI3D(), None, None))
    assert resumed.calls == 1  # v1 came from the state; v2 was left (short.mp4 is skipped without a forward)
    assert again.rfvd == pytest.approx(whole.rfvd, rel=1e-12) and again.used_codes == whole.used_codes
    assert again.skipped == whole.skipped == ["ClassA/short.mp4"]
    with pytest.raises(ValueError, match=r"different evaluation.*num_frames"):
        evaluate_video(replace(cfg, num_frames=5), model=resumed, nets=VideoNets(RecordingI3D(), None, None))


def test_evaluate_video_on_two_ranks_equals_one(video_cfg, whole, tmp_path):
    import torch.multiprocessing as mp

    cfg = replace(video_cfg, output=str(tmp_path))
    mp.spawn(video_dist_worker.run, args=(2, str(tmp_path / "rdzv"), cfg, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))  # written by the test
    assert r1 is None and r0["protocol"]["world_size"] == 2
    assert r0["rfvd"] == pytest.approx(whole.rfvd, rel=1e-5) and r0["num_clips"] == 2  # float32 convs, 1 vs 2 threads
    assert r0["skipped"] == ["ClassA/short.mp4"] and r0["used_codes"] == whole.used_codes
    assert (tmp_path / "state" / "rank1-of-2.pt").is_file()


def test_clip_list_takes_files_folders_and_globs(ucf):
    from open_magvit2.eval.video import clip_list

    base = VideoEvalConfig(checkpoint="", data=str(ucf))
    assert clip_list(base)[1] == ["ClassA/short.mp4", "ClassA/v1.mp4", "ClassA/v2.mp4"]  # train/ by default
    glob = replace(base, data=(str(ucf / "train" / "**" / "v*.mp4"),))
    assert clip_list(glob)[1] == ["ClassA/v1.mp4", "ClassA/v2.mp4"]
    files = replace(base, data=(str(ucf / "train" / "ClassA" / "v2.mp4"), str(ucf / "train" / "ClassA")))
    assert clip_list(files)[1] == ["v2.mp4", "short.mp4", "v1.mp4"]
    with pytest.raises(FileNotFoundError, match="--split"):
        clip_list(replace(base, split="test"))


# ---- the batch rule: a video that cannot be read is skipped, recorded and named at the end ----------------------
@pytest.fixture
def ucf_with_corrupt(ucf, tmp_path) -> Path:
    """``ucf`` with a corrupt video between v1 and v2 (a.mp4 < short.mp4 < v1 < v1x < v2)."""
    import shutil

    root = tmp_path / "ucf"
    shutil.copytree(ucf, root)
    (root / "train" / "ClassA" / "v1x.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    return root


def test_an_unreadable_video_is_left_out_and_a_resumed_run_agrees(video_cfg, whole, ucf_with_corrupt, tmp_path):
    cfg = replace(video_cfg, data=str(ucf_with_corrupt), output=str(tmp_path), save_every=1)
    with pytest.raises(KeyboardInterrupt):  # short skipped, v1 evaluated, the corrupt one skipped, dies at v2
        evaluate_video(cfg, model=FailingAt(tiny_video_tokenizer(), 2), nets=VideoNets(RecordingI3D(), None, None))
    resumed = FailingAt(tiny_video_tokenizer(), None)
    r = evaluate_video(cfg, model=resumed, nets=VideoNets(RecordingI3D(), None, None))
    assert resumed.calls == 1  # v2; the corrupt video was tried again and is still unreadable
    assert r.rfvd == pytest.approx(whole.rfvd, rel=1e-12) and r.used_codes == whole.used_codes and r.num_clips == 2
    assert r.skipped == ["ClassA/short.mp4"]
    [(name, reason)] = r.unreadable
    assert name == "ClassA/v1x.mp4" and "cannot read video" in reason and "v1x.mp4" in reason
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["unreadable"] == [[name, reason]] and "1 could not be read" in (tmp_path / "metrics.md").read_text()
    assert (tmp_path / "clips.txt").read_text().split() == ["ClassA/v1.mp4", "ClassA/v2.mp4"]

    with pytest.raises(ValueError, match=r"^cannot read video '.*/ClassA/v1x.mp4': .*valid video file\?\)$"):
        evaluate_video(replace(cfg, output=None, strict=True), model=tiny_video_tokenizer(),
                       nets=VideoNets(RecordingI3D(), None, None))


def test_cli_evaluate_video_names_the_unreadable_video(ucf_with_corrupt, tmp_path, monkeypatch, capsys):
    from open_magvit2.cli import main

    tiny_video_tokenizer().save_pretrained(tmp_path / "vtok")
    monkeypatch.setattr(VideoNets, "load", classmethod(lambda cls, cfg, device: cls(RecordingI3D(), None, None)))
    argv = ["evaluate-video", "-c", str(tmp_path / "vtok"), "--data", str(ucf_with_corrupt), "--num-frames", "9",
            "--size", "32", "--workers", "2", "--no-progress", "--no-lpips", "--device", "cpu"]
    assert main([*argv, "-o", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert re.fullmatch(r"open-magvit2 evaluate-video: error: 1 of 4 videos could not be read: ClassA/v1x.mp4 "
                        r"\(cannot read video '.*v1x.mp4': .*\)", err.strip())
    assert "the metrics cover 2 of 4 videos" in out and (tmp_path / "out" / "metrics.json").is_file()
    assert main([*argv, "-o", str(tmp_path / "strict"), "--strict"]) == 2
    assert re.fullmatch(r"open-magvit2 evaluate-video: error: cannot read video '.*v1x.mp4': .*",
                        capsys.readouterr().err.strip())
    assert not (tmp_path / "strict").exists()
