"""evaluate-video-generator: the video sample format, and FVD against real videos recomputed from its parts.

The I3D is a stand-in here (``RecordingI3D``: full I3D passes at 224² cost seconds per clip on a CPU) except in one
slow test that runs the random-weight I3D file end to end.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from open_magvit2.distributed import DistContext
from open_magvit2.eval.datasets import load_clip
from open_magvit2.eval.i3d import i3d_input_uint8
from open_magvit2.eval.metrics import frechet_distance_svd
from open_magvit2.eval.video import i3d_input
from open_magvit2.eval.video_generation import (
    REFERENCE_CACHE,
    VideoGeneratorEvalConfig,
    _clip_file_features,
    _merge,
    _Reference,
    _video_features,
    evaluate_video_generator,
    i3d_logits,
)
from open_magvit2.eval.video_samples import (
    MIN_FRAMES,
    iter_video_samples,
    read_labels,
    video_samples_info,
    write_video_samples,
)
from open_magvit2.imaging import to_uint8_tensor

pytest.importorskip("av")
sys.path.insert(0, str(Path(__file__).parent))
from video_dist_worker import RecordingI3D

LONG = ("A/v0.mp4", "A/v1.mp4", "B/v2.mp4")  # the reference videos of at least 9 frames, in list order


@pytest.fixture(scope="module")
def videos(tmp_path_factory, photo) -> Path:
    """Real videos in class folders: three of 10–12 frames and one of 5 (too short for 9-frame clips)."""
    from open_magvit2.data.video_io import write_video

    root = tmp_path_factory.mktemp("ucf")
    base = photo("astronaut")[::6, ::6][:40, :48]
    for i, (name, n) in enumerate((("A/v0.mp4", 12), ("A/v1.mp4", 11), ("B/v2.mp4", 10), ("B/short.mp4", 5))):
        (root / name).parent.mkdir(exist_ok=True)
        frames = np.stack([np.roll(base, 3 * t + 7 * i, axis=1) for t in range(n)]).astype(np.uint8)
        write_video(root / name, frames, fps=25)
    return root


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory) -> str:
    """A randomly initialised I3D saved under its official file name."""
    from open_magvit2.eval.i3d import InceptionI3d

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hub") / "i3d_pretrained_400.pt"
    torch.save(InceptionI3d().state_dict(), path)
    return str(path)


def _clips(n: int, frames: int = 9, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 180, size, dtype=np.float64)[None, None, :, None]
    noise = rng.integers(0, 56, (n, frames, size, size, 3))
    return (ramp + noise + 10 * np.arange(frames)[None, :, None, None, None] / frames).astype(np.uint8)


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> tuple[Path, np.ndarray]:
    clips = _clips(5)
    return write_video_samples(tmp_path_factory.mktemp("smp") / "samples.npz", clips, [0, 0, 1, 1, 1]), clips


def _cfg(samples: Path, reference: Path, **kw) -> VideoGeneratorEvalConfig:
    return VideoGeneratorEvalConfig(samples=str(samples), reference=str(reference), batch_size=2, num_workers=0,
                                    progress=False, device="cpu", **kw)


def _channels_first(clips: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(clips).permute(0, 4, 1, 2, 3)  # (N, T, H, W, 3) -> (N, 3, T, H, W)


# ---- the sample format -------------------------------------------------------------------------------------------


def test_sample_file_round_trip_streams_in_order_and_is_reproducible(samples, tmp_path):
    path, clips = samples
    info = video_samples_info(path)
    assert info.shape == (5, 9, 32, 32, 3) and (info.num, info.frames, info.height, info.width) == (5, 9, 32, 32)
    batches = list(iter_video_samples(path, 2))
    assert [len(b) for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate(batches), clips)
    labels = read_labels(path)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 1, 1, 1]
    with np.load(path) as z:  # a plain .npz: what sample-fid writes for images, plus the time axis
        assert sorted(z.files) == ["arr_0", "labels"] and z["arr_0"].dtype == np.uint8
    again = write_video_samples(tmp_path / "again.npz", clips, np.array([0, 0, 1, 1, 1], dtype=np.int32))
    assert again.read_bytes() == path.read_bytes()
    np.savez_compressed(tmp_path / "c.npz", arr_0=clips)  # numpy's own writers are read too
    np.testing.assert_array_equal(np.concatenate(list(iter_video_samples(tmp_path / "c.npz", 3))), clips)
    assert read_labels(tmp_path / "c.npz") is None


@pytest.mark.parametrize(("arrays", "error", "pattern"), [
    (None, FileNotFoundError, r"^video samples file not found: .*/bad\.npz$"),
    ({"images": np.zeros((2, 9, 8, 8, 3), np.uint8)}, ValueError,
     r"has no 'arr_0' array \(it holds \['images'\]\); video sample files store clips as arr_0 uint8 \(N, T, H, W, "
     r"3\) clips, labels int64 \(N,\)$"),
    ({"arr_0": np.zeros((2, 8, 8, 3), np.uint8)}, ValueError,
     r"'arr_0' must be uint8 \(N, T, H, W, 3\) clips, got uint8 \(2, 8, 8, 3\); it holds images: evaluate them with "
     r"evaluate-generator$"),
    ({"arr_0": np.zeros((2, 9, 8, 8, 3), np.float32)}, ValueError, r"got float32 \(2, 9, 8, 8, 3\)$"),
    ({"arr_0": np.zeros((2, 8, 8, 8, 3), np.uint8)}, ValueError,
     r"holds clips of 8 frames; the I3D of FVD needs at least 9 \(it halves time three times, then pools over 2 "
     r"steps\)$"),
    ({"arr_0": np.zeros((2, 9, 8, 8, 3), np.uint8), "labels": np.zeros(3, np.int64)}, ValueError,
     r"'labels' must be integer \(2,\) class ids, one per clip; got int64 \(3,\)$"),
])
def test_sample_file_is_checked_on_read(tmp_path, arrays, error, pattern):
    path = tmp_path / "bad.npz"
    if arrays is not None:
        np.savez(path, **arrays)
    with pytest.raises(error, match=pattern):
        video_samples_info(path)


def test_sample_file_writer_refuses_what_the_reader_would(tmp_path):
    with pytest.raises(ValueError, match="clips of 8 frames"):
        write_video_samples(tmp_path / "x.npz", _clips(2, frames=8), [0, 1])
    with pytest.raises(ValueError, match=r"labels must be integer \(2,\)"):
        write_video_samples(tmp_path / "x.npz", _clips(2), [0.5, 1])
    assert not list(tmp_path.iterdir())


def test_min_frames_is_the_shortest_clip_the_i3d_takes():
    """The I3D's time axis (stem stride 2, MaxPool3d_4a and _5a) must leave 2 steps for its (2, 7, 7) average pool;
    spatially pooled 1×1 here so that 8² frames stand in for 224² (the time arithmetic is the same)."""
    from open_magvit2.eval.i3d import InceptionI3d

    torch.manual_seed(0)
    net = InceptionI3d().eval()
    net.avg_pool = nn.AvgPool3d((2, 1, 1), stride=1)
    with torch.no_grad():
        assert net(torch.zeros(1, 3, MIN_FRAMES, 8, 8)).shape == (1, 400)
        with pytest.raises(RuntimeError, match="smaller than kernel size"):
            net(torch.zeros(1, 3, MIN_FRAMES - 1, 8, 8))


# ---- FVD ---------------------------------------------------------------------------------------------------------


def test_i3d_input_of_uint8_clips_is_the_evaluate_video_arithmetic():
    v = torch.rand(1, 3, 9, 20, 28) * 2 - 1
    torch.testing.assert_close(i3d_input_uint8(to_uint8_tensor(v)), i3d_input(v), rtol=0, atol=0)


def test_fvd_equals_direct_computation(samples, videos, tmp_path):
    path, clips = samples
    i3d = RecordingI3D()
    r = evaluate_video_generator(_cfg(path, videos, output=str(tmp_path)), i3d=i3d)
    assert (r.num_samples, r.num_reference, r.frames, r.height, r.width) == (5, 3, 9, 32, 32)
    assert r.skipped == ["B/short.mp4"] and r.unreadable == []

    direct = RecordingI3D()
    real = torch.stack([load_clip(videos / name, 9, 32) for name in LONG])  # evaluate-video's clips
    fake = _channels_first(clips)
    want = frechet_distance_svd(i3d_logits(direct, real), i3d_logits(direct, fake))
    assert abs(r.fvd - want) <= 1e-6 and r.fvd > 0
    # what the network saw: every reference clip, then every sample, as uint8 → bilinear 224 → 2x/255 − 1
    seen = torch.cat(i3d.inputs)
    frames = torch.cat([real, fake]).permute(0, 2, 1, 3, 4).flatten(0, 1).float()
    official = torch.nn.functional.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False)
    torch.testing.assert_close(seen, (2 * official / 255 - 1).view(8, 9, 3, 224, 224).transpose(1, 2))

    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["fvd"] == r.fvd and saved["skipped"] == ["B/short.mp4"]
    assert "centre 9 frames" in saved["protocol"]["reference"] and "3 clips from 4 listed" in saved["protocol"][
        "reference"]
    assert (tmp_path / "metrics.md").is_file() and (tmp_path / REFERENCE_CACHE).is_file()


def test_fvd_of_a_set_against_itself_is_zero(samples):
    path, _ = samples
    r = evaluate_video_generator(_cfg(path, path), i3d=RecordingI3D())
    assert r.num_reference == r.num_samples == 5 and abs(r.fvd) < 1e-4


def test_reference_features_are_cached_and_checked(samples, videos, tmp_path):
    path, _ = samples
    first = evaluate_video_generator(_cfg(path, videos, output=str(tmp_path / "a")), i3d=RecordingI3D())
    cache = tmp_path / "a" / REFERENCE_CACHE
    with np.load(cache) as z:
        assert z["features"].shape == (3, 9) and z["names"].tolist() == list(LONG)
    i3d = RecordingI3D()
    again = evaluate_video_generator(_cfg(path, cache, output=str(tmp_path / "b")), i3d=i3d)
    assert again.fvd == first.fvd and again.num_reference == 3
    assert sum(len(x) for x in i3d.inputs) == 5  # the samples only: no video was read again
    assert again.protocol["reference"] == first.protocol["reference"]
    assert not (tmp_path / "b" / REFERENCE_CACHE).exists()

    longer = write_video_samples(tmp_path / "t10.npz", _clips(3, frames=10), [0, 1, 2])
    with pytest.raises(ValueError, match=r"features of clips of 9 frames of 32×32, the samples are 10 frames of "
                                         r"32×32: compute the reference again from the videos$"):
        evaluate_video_generator(_cfg(longer, cache), i3d=RecordingI3D())
    other = RecordingI3D()
    other.weights_path = cache  # any file: another I3D
    with pytest.raises(ValueError, match=r"was computed with another I3D \(weights injected, this run: "
                                         r"sha256 [0-9a-f]{12}\)"):
        evaluate_video_generator(_cfg(path, cache), i3d=other)


def test_reference_must_fit_the_samples(samples, videos, tmp_path):
    path, _ = samples
    wide = write_video_samples(tmp_path / "wide.npz", _clips(2)[:, :, :16], [0, 1])
    with pytest.raises(ValueError, match=r"the samples are 16×32 clips, but clips cut from a video folder are square"):
        evaluate_video_generator(_cfg(wide, videos), i3d=RecordingI3D())
    with pytest.raises(ValueError, match=r"the reference clips are 9 frames of 16×32, the samples 9 frames of 32×32"):
        evaluate_video_generator(_cfg(path, wide), i3d=RecordingI3D())
    one = write_video_samples(tmp_path / "one.npz", _clips(1), [0])
    with pytest.raises(ValueError, match=r"^FVD needs at least 2 sample clips; .*one.npz holds 1$"):
        evaluate_video_generator(_cfg(one, videos), i3d=RecordingI3D())
    with pytest.raises(ValueError, match=r"v0.mp4 is one video; --reference takes a folder of videos"):
        evaluate_video_generator(_cfg(path, videos / "A" / "v0.mp4"), i3d=RecordingI3D())
    longer = write_video_samples(tmp_path / "t13.npz", _clips(2, frames=13), [0, 1])
    with pytest.raises(ValueError, match=r"^FVD needs at least 2 reference clips of 13 frames; got 0 \(4 of 4 videos "
                                         r"are shorter\)$"):
        evaluate_video_generator(_cfg(longer, videos), i3d=RecordingI3D())


def test_an_unreadable_reference_video_is_left_out_or_stops_a_strict_run(samples, videos, tmp_path):
    import shutil

    path, _ = samples
    root = tmp_path / "ucf"
    shutil.copytree(videos, root)
    (root / "A" / "v0x.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    whole = evaluate_video_generator(_cfg(path, videos), i3d=RecordingI3D())
    r = evaluate_video_generator(_cfg(path, root), i3d=RecordingI3D())
    assert [name for name, _ in r.unreadable] == ["A/v0x.mp4"] and r.fvd == whole.fvd
    with pytest.raises(ValueError, match=r"^cannot read video '.*/A/v0x.mp4'"):
        evaluate_video_generator(_cfg(path, root, strict=True), i3d=RecordingI3D())


def test_rank_shares_merge_to_the_one_process_features(samples, videos):
    path, _ = samples
    cfg = _cfg(path, videos)
    info = video_samples_info(path)
    ref = _Reference("videos", videos, [videos / n for n in (*LONG, "B/short.mp4")], [*LONG, "B/short.mp4"])
    ctx = [DistContext(rank=r, world_size=2) for r in (0, 1)]
    one = DistContext()
    for features in (lambda c: _clip_file_features(RecordingI3D(), info, cfg, c, ""),
                     lambda c: _video_features(RecordingI3D(), ref, info, cfg, c)):
        shares = [features(c) for c in ctx]
        assert not set(shares[0].pos) & set(shares[1].pos) and shares[0].pos and shares[1].pos
        merged, whole = _merge(shares), _merge([features(one)])
        torch.testing.assert_close(merged[0], whole[0], rtol=0, atol=0)
        assert merged[1:] == whole[1:]


# ---- the command -------------------------------------------------------------------------------------------------


def test_cli_writes_the_fvd_to_metrics_json(samples, videos, i3d_file, tmp_path, monkeypatch, capsys):
    from open_magvit2.cli import main
    from open_magvit2.eval import video_generation

    path, _ = samples
    loaded = []

    def load_stand_in(file, device):  # the I3D file is named and exists; its network is the stand-in
        loaded.append(Path(file))
        net = RecordingI3D()
        net.weights_path = Path(file)
        return net

    monkeypatch.setattr(video_generation, "load_i3d", load_stand_in)
    out = tmp_path / "out"
    argv = ["evaluate-video-generator", "--samples", str(path), "--reference", str(videos), "--i3d-weights",
            i3d_file, "-o", str(out), "--batch-size", "2", "--workers", "0", "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    assert loaded == [Path(i3d_file)]
    printed = capsys.readouterr().out
    saved = json.loads((out / "metrics.json").read_text())
    direct = evaluate_video_generator(_cfg(path, videos), i3d=RecordingI3D())
    assert saved["fvd"] == direct.fvd and json.loads(printed[: printed.index("}") + 1])["fvd"] == direct.fvd
    assert re.search(r"i3d_pretrained_400.pt sha256 [0-9a-f]{12}", saved["protocol"]["i3d"])
    assert "skipped 1 reference videos shorter than 9 frames" in printed


@pytest.mark.slow
def test_cli_with_the_random_weight_i3d_file_equals_direct_computation(i3d_file, tmp_path, capsys):
    """End to end with the real network (random weights): 2 + 2 clips of 9 frames, about a minute on a CPU."""
    from open_magvit2.cli import main
    from open_magvit2.eval.backbones import load_i3d

    smp = write_video_samples(tmp_path / "s.npz", _clips(2, size=16, seed=1), [0, 1])
    ref = write_video_samples(tmp_path / "r.npz", _clips(2, size=16, seed=2), [0, 1])
    assert main(["evaluate-video-generator", "--samples", str(smp), "--reference", str(ref), "--i3d-weights",
                 i3d_file, "-o", str(tmp_path / "out"), "--no-progress", "--device", "cpu"]) == 0
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    net = load_i3d(i3d_file)
    f_ref, f_smp = (i3d_logits(net, _channels_first(_clips(2, size=16, seed=s))) for s in (2, 1))
    assert f_ref.shape == (2, 400)
    assert abs(saved["fvd"] - frechet_distance_svd(f_ref, f_smp)) <= 1e-6 * max(1.0, abs(saved["fvd"]))
