"""``generate-video`` (MP4s and a grid, first-frame continuation) and ``sample-fvd`` (the resumable class-by-class
job of ``sample-fid``, writing the video sample file ``evaluate-video-generator`` reads). A small random
VideoGenerator with the bundled demo video tokenizer (8× in space, 4× in time), so that a first frame is
reconstructed recognisably: 3 latent frames of 2×2 tokens ↔ clips of 9 frames of 16×16 pixels."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from open_magvit2 import VideoGenerator, VideoTokenizer
from open_magvit2.cli import main
from open_magvit2.data.video_io import iter_frames, probe_video, write_video
from open_magvit2.eval.video_samples import iter_video_samples, read_labels, video_samples_info
from open_magvit2.generator import VideoGeneratorConfig, fid
from open_magvit2.generator.fid import merge_npz, parts_dir, sample_class
from open_magvit2.imaging import image_grid, to_uint8

pytest.importorskip("av")  # MP4s: the video extra

FRAMES, SIZE, CLASSES = 9, 16, 5


@pytest.fixture(scope="module")
def vgen() -> VideoGenerator:
    """A random transformer over the demo video tokenizer's 18-bit tokens, with that tokenizer's weights."""
    tok = VideoTokenizer.from_pretrained("demo")
    torch.manual_seed(0)
    config = VideoGeneratorConfig(dim=64, n_layers=2, n_intra_layers=1, n_heads=2, grid_size=2, frames=3,
                                  num_classes=CLASSES, factorized_bits=(9, 9), sample_cfg_scale=(1.5, 2.5),
                                  sample_temperature=(1.0, 0.9))
    gen = VideoGenerator(config=config, tokenizer_config=tok.config)
    gen.tokenizer.load_state_dict(tok.state_dict())
    for h in gen.transformer.head:
        torch.nn.init.normal_(h.weight, std=0.5)
    gen.eval()
    assert (gen.num_frames, gen.frame_size) == (FRAMES, SIZE)
    return gen


@pytest.fixture(scope="module")
def vgen_dir(vgen, tmp_path_factory):
    return vgen.save_pretrained(tmp_path_factory.mktemp("vgen") / "small")


def _frames(path) -> np.ndarray:
    """An MP4 read back whole (no crop to a multiple of 8) as uint8 (T, H, W, 3)."""
    return np.stack([f.permute(1, 2, 0).numpy() for f in iter_frames(path, multiple=1)])


def _through_h264(frames: np.ndarray, tmp_path, fps: float) -> np.ndarray:
    """uint8 (T, H, W, 3) frames as they read back from an MP4 that write_video made of them (H.264 is lossy)."""
    return _frames(write_video(tmp_path / "reference.mp4", frames, fps=fps))


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_generate_video_writes_one_mp4_per_sample_and_a_grid(vgen_dir, vgen, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["generate-video", "-c", str(vgen_dir), "--num-per-class", "2", "--device", "cpu", "--fps", "10"]
    assert main([*argv, "--classes", "1", "3", "--seed", "5", "-o", str(out)]) == 0
    assert "class 3: 2 clips of 9 frames" in capsys.readouterr().out
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "1", "1/0.mp4", "1/1.mp4", "3", "3/0.mp4", "3/1.mp4", "grid.mp4"]
    info = probe_video(out / "3" / "1.mp4")
    assert (info.width, info.height, info.fps) == (SIZE, SIZE, 10)
    clip = _frames(out / "3" / "1.mp4")
    assert clip.shape == (FRAMES, SIZE, SIZE, 3)
    want = {c: sample_class(vgen, c, 2, seed=5, batch_size=16) for c in (1, 3)}  # what the command sampled
    assert want[3].shape == (2, FRAMES, SIZE, SIZE, 3) and want[3].dtype == np.uint8
    assert np.array_equal(clip, _through_h264(want[3][1], tmp_path, fps=10))
    tiles = np.concatenate([want[1], want[3]])  # one row per class
    grid = np.stack([image_grid(list(tiles[:, t]), columns=2) for t in range(FRAMES)])
    assert grid.shape == (FRAMES, 2 + 2 * (SIZE + 2), 2 + 2 * (SIZE + 2), 3)  # 2 classes × 2 clips, 2-px borders
    assert np.array_equal(_frames(out / "grid.mp4"), _through_h264(grid, tmp_path, fps=10))

    # seeds: a class's clips depend on (--seed, class) only, not on the other classes requested
    assert main([*argv, "--classes", "3", "--seed", "5", "-o", str(tmp_path / "same")]) == 0
    assert main([*argv, "--classes", "3", "--seed", "6", "-o", str(tmp_path / "other")]) == 0
    assert np.array_equal(_frames(tmp_path / "same" / "3" / "1.mp4"), clip)
    assert not np.array_equal(_frames(tmp_path / "other" / "3" / "1.mp4"), clip)


def test_first_frames_of_a_folder_are_continued_for_every_class(vgen_dir, vgen, tmp_path):
    from skimage import data

    pixels = {"a": data.astronaut()[::16, ::16][8:24, 8:24], "b": data.coffee()[::12, ::12][10:26, 10:26]}
    images = tmp_path / "first"
    images.mkdir()
    for name, px in pixels.items():
        Image.fromarray(np.ascontiguousarray(px)).save(images / f"{name}.png")
    out = tmp_path / "out"
    assert main(["generate-video", "-c", str(vgen_dir), "--classes", "0", "4", "--num-per-class", "2", "--first-frame",
                 str(images), "--device", "cpu", "-o", str(out)]) == 0
    for cls in ("0", "4"):
        assert sorted(p.name for p in (out / cls).iterdir()) == ["a_0.mp4", "a_1.mp4", "b_0.mp4", "b_1.mp4"]
    assert _frames(out / "grid.mp4").shape == (FRAMES, 2 + 2 * (SIZE + 2), 2 + 4 * (SIZE + 2), 3)

    x = torch.stack([torch.from_numpy(px).permute(2, 0, 1).float() / 127.5 - 1 for px in pixels.values()])
    want = sample_class(vgen, 4, 4, seed=0, batch_size=16, first_frame=x.repeat_interleave(2, dim=0))  # a a b b
    assert np.array_equal(_frames(out / "4" / "b_0.mp4"), _through_h264(want[2], tmp_path, fps=8))
    with torch.no_grad():  # the tokenizer's reconstruction of each image, coded as a still clip: its frame 0
        still = x[:, :, None].expand(-1, -1, FRAMES, -1, -1)
        recon = dict(zip(pixels, to_uint8(vgen.tokenizer.decode(vgen.tokenizer.encode(still))[:, :, 0]), strict=True))
    for cls in ("0", "4"):
        for name, other in (("a", "b"), ("b", "a")):
            for i in range(2):
                clip = _frames(out / cls / f"{name}_{i}.mp4")
                near = _mad(clip[0], recon[name])  # not equal: GroupNorm sees the generated frames too (O-27)
                assert near < 0.5 * _mad(clip[0], recon[other]) and near < 0.8 * _mad(clip[-1], recon[name])


def _fvd_args(vgen_dir, out) -> list[str]:
    return ["sample-fvd", "-c", str(vgen_dir), "--num-per-class", "2", "--classes", "0", "2", "4", "--batch-size",
            "1", "--seed", "3", "--device", "cpu", "--no-progress", "-o", str(out)]


def test_sample_fvd_writes_the_video_sample_file_and_resumes_to_the_same_bytes(vgen_dir, vgen, tmp_path,
                                                                               monkeypatch):
    whole, resumed = tmp_path / "whole.npz", tmp_path / "resumed.npz"
    assert main(_fvd_args(vgen_dir, whole)) == 0
    info = video_samples_info(whole)  # what evaluate-video-generator --samples checks before anything runs
    assert info.shape == (6, FRAMES, SIZE, SIZE, 3) and info.keys == ("arr_0", "labels")
    assert read_labels(whole).tolist() == [0, 0, 2, 2, 4, 4]
    clips = np.concatenate(list(iter_video_samples(whole, 4)))
    assert np.array_equal(clips[2:4], sample_class(vgen, 2, 2, seed=3, batch_size=1))
    assert not np.array_equal(clips[0], clips[1])
    with zipfile.ZipFile(whole) as z:
        assert z.namelist() == ["arr_0.npy", "labels.npy"]

    # a run stopped after its first class, then started again: no class sampled twice, the same bytes
    real, calls = fid.sample_class, []

    def stop_at_class_2(gen, cls, *args, **kwargs):
        calls.append(cls)
        if cls == 2 and calls.count(2) == 1:
            raise KeyboardInterrupt
        return real(gen, cls, *args, **kwargs)

    monkeypatch.setattr(fid, "sample_class", stop_at_class_2)
    assert main(_fvd_args(vgen_dir, resumed)) == 130
    parts = parts_dir(resumed)
    assert sorted(p.name for p in parts.iterdir()) == ["class_000000.npy", "run.json"] and not resumed.exists()
    assert main(_fvd_args(vgen_dir, resumed)) == 0
    assert calls == [0, 2, 2, 4]
    assert resumed.read_bytes() == whole.read_bytes() and not parts.exists()


def test_merge_streams_clips_of_one_shape(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (n, 9, 4, 6, 3), dtype=np.uint8) for n in (2, 1)]
    files = []
    for i, a in enumerate(arrays):
        files.append(tmp_path / f"c{i}.npy")
        np.save(files[-1], a)
    out = merge_npz(tmp_path / "m.npz", files, [3, 1])
    assert video_samples_info(out).shape == (3, 9, 4, 6, 3)
    with np.load(out) as z:
        assert np.array_equal(z["arr_0"], np.concatenate(arrays)) and z["labels"].tolist() == [3, 3, 1]
    np.save(tmp_path / "short.npy", np.zeros((1, 5, 4, 6, 3), np.uint8))
    with pytest.raises(ValueError, match="different clip shapes"):
        merge_npz(tmp_path / "x.npz", [*files, tmp_path / "short.npy"], [3, 1, 0])


def test_help_texts(capsys):
    for cmd, says in (("generate-video", "--first-frame"), ("sample-fvd", "evaluate-video-generator")):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = capsys.readouterr().out
        assert "--num-per-class" in text and says in text and "--cfg" in text
