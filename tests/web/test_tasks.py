"""The web app's computations without a browser: the four tabs on real photos and clips, the limits, and the
messages a user sees for bad input (each must name the uploaded file, not the server's temporary path)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from open_magvit2.drawing import reconstruct_photo
from open_magvit2.errors import USER_ERRORS, describe_error
from open_magvit2.imaging import psnr_uint8
from open_magvit2.tokenizer import ImageTokenizer, VideoTokenizer
from open_magvit2.web import tasks
from open_magvit2.web.models import NO_DEMO_VIDEO_GENERATOR, class_names, load_models, resolve


def readable(e: BaseException, uploads: dict[str, str] | None = None) -> str:
    """The line the page shows (web/app.py ``guarded``)."""
    return describe_error(e, out_of_memory=tasks.OUT_OF_MEMORY, paths=uploads)


@pytest.fixture(scope="module")
def served(standin_models):
    m = standin_models
    return load_models(str(m.tokenizer), str(m.video), str(m.generator), "cpu",
                       video_generator=str(m.video_generator))


# ---- models ------------------------------------------------------------------------------------------------------


def test_load_models_and_class_names(served, standin_models):
    assert isinstance(served.tokenizer, ImageTokenizer) and isinstance(served.video_tokenizer, VideoTokenizer)
    assert served.class_names == [str(i) for i in range(10)]  # classes.json next to the generator
    assert served.sources["generator"] == str(standin_models.generator)
    assert served.video_class_names == [f"class {i}" for i in range(5)]  # no classes.json: numbered
    assert served.video_generator.num_frames == 5 and served.video_generator.frame_size == 8
    assert served.video_generator_missing == ""


def test_class_names_fallbacks(tmp_path, capsys):
    assert class_names(tmp_path, 3) == ["class 0", "class 1", "class 2"]  # no classes.json
    (tmp_path / "classes.json").write_text(json.dumps(["cat", "dog"]))
    assert class_names(tmp_path, 3) == ["class 0", "class 1", "class 2"]  # wrong count: numbered, with a warning
    assert "does not hold 3 class names" in capsys.readouterr().err
    assert class_names(tmp_path, 2) == ["cat", "dog"]


def test_none_leaves_a_model_out_and_a_wrong_kind_names_the_flag(standin_models, monkeypatch, tmp_path):
    m = standin_models
    served = load_models(str(m.tokenizer), "none", "none", "cpu")
    assert served.video_tokenizer is None and served.generator is None and served.class_names == []
    with pytest.raises(ValueError, match=r"--generator .*holds a ImageTokenizer, not a ImageGenerator; pass it to "
                       r"--tokenizer$"):
        load_models("none", "none", str(m.tokenizer), "cpu")
    with pytest.raises(ValueError, match=r"--video-generator .*holds a ImageGenerator, not a VideoGenerator; pass it "
                       r"to --generator$"):
        load_models("none", "none", "none", "cpu", video_generator=str(m.generator))
    with pytest.raises(ValueError, match=r"--generator .*holds a VideoGenerator, not a ImageGenerator; pass it to "
                       r"--video-generator$"):
        load_models("none", "none", str(m.video_generator), "cpu")
    monkeypatch.setattr("open_magvit2.checkpoints.hub.DEMO_ROOT", tmp_path / "nothing_here")
    assert resolve(None, "image_tokenizer") is None  # the default: no bundled demo model, no tab
    with pytest.raises(FileNotFoundError, match="bundled demo image_tokenizer is missing"):
        resolve("demo", "image_tokenizer")  # asked for by name: an error
    with pytest.raises(ValueError, match=r"^no model to serve: the bundled demo models are missing from this "
                       r"installation; pass a checkpoint to --tokenizer or --video-tokenizer or --generator or "
                       r"--video-generator$"):
        load_models(None, None, None, "cpu")
    with pytest.raises(ValueError, match=r"^no model to serve: the bundled demo models are missing from this "
                       r"installation and --generator is 'none'; pass a checkpoint to --tokenizer or "
                       r"--video-tokenizer or --video-generator$"):
        load_models(None, None, "none", "cpu")
    with pytest.raises(ValueError, match=r"^no model to serve: --tokenizer, --video-tokenizer, --generator and "
                       r"--video-generator are all 'none'; name at least one model \(a checkpoint, or demo\)$"):
        load_models("none", "none", "none", "cpu", video_generator="none")
    with pytest.raises(FileNotFoundError, match="bundled demo video_generator is missing"):
        load_models(str(m.tokenizer), "none", "none", "cpu", video_generator="demo")  # asked for by name: an error
    # the default with no bundled demo video generator: no model, and the tab's text says why; 'none': no tab
    served = load_models(str(m.tokenizer), "none", "none", "cpu")
    assert served.video_generator is None and served.video_generator_missing == NO_DEMO_VIDEO_GENERATOR
    assert "--video-generator CKPT" in NO_DEMO_VIDEO_GENERATOR
    served = load_models(str(m.tokenizer), "none", "none", "cpu", video_generator="none")
    assert served.video_generator is None and served.video_generator_missing == ""


def test_demo_root_is_where_the_defaults_come_from(standin_models, monkeypatch):
    monkeypatch.setattr("open_magvit2.checkpoints.hub.DEMO_ROOT", standin_models.root)
    served = load_models(device="cpu")
    assert set(served.sources) == {"tokenizer", "video_tokenizer", "generator", "video_generator"}
    assert served.sources["tokenizer"] == str(standin_models.root / "image_tokenizer")
    assert served.demo == {"tokenizer", "video_tokenizer", "generator", "video_generator"}
    assert served.video_generator_missing == ""


# ---- tokenizer tab -----------------------------------------------------------------------------------------------


def test_reconstruct_image_resized_to_the_native_size(served, inputs):
    r = tasks.reconstruct_image(served.tokenizer, inputs.photo)
    assert r.original.shape == r.reconstruction.shape == r.tokens.shape == (128, 128, 3)  # 16 × 8
    assert r.grid == (16, 16) and 1 <= r.distinct <= 256 and r.codebook_size == 2**14
    assert r.psnr == pytest.approx(psnr_uint8(r.reconstruction, r.original))
    assert -1 <= r.ssim <= 1
    assert re.fullmatch(r"\*\*PSNR \d+\.\d\d dB\*\* · SSIM -?\d\.\d\d · 128×128 pixels → 16×16 tokens · \d+ distinct "
                        r"codes of 16,384", r.summary())


def test_reconstruct_image_at_original_resolution_is_the_demo_path(served, inputs):
    r = tasks.reconstruct_image(served.tokenizer, inputs.photo, original_resolution=True)
    photo = np.array(Image.open(inputs.photo).convert("RGB"))
    assert r.original.shape == photo.shape == (400, 600, 3) and r.grid == (50, 75)
    rec, _ = reconstruct_photo(served.tokenizer, photo)  # what `open-magvit2 demo` runs
    np.testing.assert_array_equal(r.reconstruction, rec)


@pytest.mark.parametrize(
    ("name", "original", "pattern"),
    [
        ("text_png", False, r"^not_an_image\.png: cannot read the image .*is it a complete image file\?$"),
        ("truncated", False, r"^truncated\.png: cannot read the image"),
        ("photo", True, r"^coffee\.png: the image is 600×400 \(0\.2 MP\); at original resolution the limit is 0\.1 MP"
                        r".*choose the resize mode"),
    ],
)
def test_bad_images_give_one_readable_line(served, inputs, monkeypatch, name, original, pattern):
    monkeypatch.setattr(tasks, "MAX_ORIGINAL_PIXELS", 100_000)
    path = str(getattr(inputs, name))
    with pytest.raises(USER_ERRORS) as e:
        tasks.reconstruct_image(served.tokenizer, path, original_resolution=original)
    msg = readable(e.value, {path: getattr(inputs, name).name})
    assert re.search(pattern, msg), msg
    assert str(inputs.d) not in msg and "\n" not in msg


def test_a_huge_image_is_refused_before_it_is_decoded(served, inputs, monkeypatch):
    monkeypatch.setattr(tasks, "MAX_IMAGE_PIXELS", 200_000)
    opened = []
    monkeypatch.setattr(tasks, "open_rgb", lambda p: opened.append(p))
    with pytest.raises(ValueError, match=r"the image is 600×400 \(0 MP\); the limit is 0 MP"):
        tasks.reconstruct_image(served.tokenizer, inputs.photo)
    assert opened == []


def test_an_image_too_small_for_two_tokens(served, tmp_path):
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(ValueError, match=r"6×5 pixels is too small for this tokenizer"):
        tasks.reconstruct_image(served.tokenizer, tmp_path / "tiny.png", original_resolution=True)
    r = tasks.reconstruct_image(served.tokenizer, tmp_path / "tiny.png")  # resized up: fine
    assert r.grid == (16, 16)


def test_readable_messages():
    e = FileNotFoundError(2, "No such file or directory", "/tmp/gradio/abc/x.png")
    assert readable(e, {"/tmp/gradio/abc/x.png": "x.png"}) == "x.png: No such file or directory"
    assert readable(MemoryError()).startswith("out of memory")
    assert readable(ValueError("two\n  lines")) == "two lines"


# ---- generator tab -----------------------------------------------------------------------------------------------


def test_sample_grid_is_seeded_and_enlarged(served):
    kw = dict(cfg_scale=(1.9, 2.0), temperature=(1.0, 1.0), top_k=0, top_p=1.0, seed=7)
    grid, text = tasks.sample_grid(served.generator, 3, num_samples=6, **kw)
    again, _ = tasks.sample_grid(served.generator, 3, num_samples=6, **kw)
    np.testing.assert_array_equal(grid, again)
    # 32×32 images shown 4× larger, 4 columns, 2 rows, 2-pixel white borders
    assert grid.shape == (2 + 2 * (128 + 2), 2 + 4 * (128 + 2), 3) and grid.std() > 0
    assert text.startswith("6 samples of class 3 at 32×32 pixels (shown 4× larger), CFG 1.9/2, temperature 1/1")
    other, _ = tasks.sample_grid(served.generator, 3, num_samples=6, **{**kw, "seed": 8})
    assert not np.array_equal(grid, other)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"label": 10}, r"classes 0\.\.9, got 10"),
        ({"num_samples": 0}, r"number of samples must be 1\.\.16"),
        ({"num_samples": 17}, r"number of samples must be 1\.\.16"),
        ({"temperature": (0.0, 1.0)}, r"temperature must be > 0"),
        ({"top_p": 0.0}, r"top_p must lie in \(0, 1\]"),
        ({"top_k": -1}, r"top_k must be an int >= 0"),
        ({"cfg_scale": (math.inf, 1.0)}, r"cfg_scale must be a finite number"),
        ({"seed": -1}, r"seed must be a whole number >= 0"),
    ],
)
def test_bad_sampling_settings(served, change, pattern):
    kw = dict(label=0, cfg_scale=(1.0, 1.0), temperature=(1.0, 1.0), top_k=0, top_p=1.0, seed=0, num_samples=1)
    kw.update(change)
    with pytest.raises(ValueError, match=pattern):
        tasks.sample_grid(served.generator, kw.pop("label"), **kw)


# ---- video tab ---------------------------------------------------------------------------------------------------


def test_reconstruct_clip(served, inputs, tmp_path):
    from open_magvit2.data.video_io import probe_video

    r = tasks.reconstruct_clip(served.video_tokenizer, inputs.clip, tmp_path)
    assert r.frames == 9 and r.size == (64, 80) and r.tokens == (3, 8, 10)  # 10 frames cut to 4k+1 = 9
    assert np.isfinite(r.psnr)
    assert probe_video(r.side_by_side).width == 2 * 80 + 4 and probe_video(r.reconstruction).width == 80
    assert r.summary().startswith(f"**PSNR {r.psnr:.2f} dB** · 9 frames of 80×64 → 3×8×10 tokens")


def test_long_and_large_clips_are_cut_to_the_limits(served, tmp_path):
    from open_magvit2.data.video_io import write_video

    frames = np.random.default_rng(0).integers(0, 255, (30, 200, 720, 3), dtype=np.uint8)
    path = write_video(tmp_path / "wide.mp4", frames, fps=30)
    clip, fps = tasks.read_clip(served.video_tokenizer, path)
    # shorter side 200 → 128 (native), longer 460 → cropped to 2 × 128; first 17 frames
    assert tuple(clip.shape) == (3, 17, 128, 256) and fps == pytest.approx(30)
    assert clip.dtype == torch.float32 and float(clip.min()) >= -1 and float(clip.max()) <= 1


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("short", r"^short\.mp4: the clip has 3 frame\(s\); this video tokenizer needs at least 5 \(4k\+1 frames\)$"),
        ("text_mp4", r"^cannot read video 'not_a_video\.mp4': .*is it a complete, valid video file\?"),
    ],
)
def test_bad_clips_give_one_readable_line(served, inputs, tmp_path, name, pattern):
    path = str(getattr(inputs, name))
    with pytest.raises(USER_ERRORS) as e:
        tasks.reconstruct_clip(served.video_tokenizer, path, tmp_path)
    msg = readable(e.value, {path: getattr(inputs, name).name})
    assert re.search(pattern, msg), msg
    assert list(tmp_path.iterdir()) == []


# ---- video generator tab -----------------------------------------------------------------------------------------


def test_sample_clip_is_seeded_enlarged_and_playable(served, tmp_path):
    from open_magvit2.data.video_io import probe_video, read_video

    kw = dict(cfg_scale=(1.5, 2.5), temperature=(1.0, 0.9), seed=7)
    (a := tmp_path / "a").mkdir(), (b := tmp_path / "b").mkdir(), (c := tmp_path / "c").mkdir()
    path, text = tasks.sample_clip(served.video_generator, 3, a, class_name="class 3", **kw)
    assert path == a / "generated.mp4" and sorted(p.name for p in a.iterdir()) == ["generated.mp4"]
    info = probe_video(path)  # 5 frames of 8×8 shown 16× larger, at 8 fps
    assert (info.width, info.height, info.num_frames, info.fps) == (128, 128, 5, tasks.GENERATED_FPS)
    assert re.fullmatch(r"class 3: 5 frames of 8×8 pixels \(shown 16× larger\) at 8 fps, from the class alone, "
                        r"CFG 1\.5/2\.5, temperature 1/0\.9, seed 7; \d+\.\d s", text), text
    again, _ = tasks.sample_clip(served.video_generator, 3, b, **kw)
    np.testing.assert_array_equal(read_video(path).numpy(), read_video(again).numpy())
    other, _ = tasks.sample_clip(served.video_generator, 3, c, **{**kw, "seed": 8})
    assert not np.array_equal(read_video(path).numpy(), read_video(other).numpy())


def test_sample_clip_continues_a_first_frame_of_any_size(served, inputs, tmp_path, monkeypatch):
    """A 600×400 photo is resized and centre-cropped to the 8×8 frames (as the tokenizer tab's default mode) and
    handed to the generator as the first frame."""
    gen = served.video_generator
    frames = []
    original = gen.sample_videos
    monkeypatch.setattr(gen, "sample_videos", lambda *a, **k: frames.append(k["first_frame"]) or original(*a, **k))
    path, text = tasks.sample_clip(gen, 1, tmp_path, first_frame=str(inputs.photo), cfg_scale=(1.5, 2.5),
                                   temperature=(1.0, 0.9), class_name="one")
    crop = tasks.read_photo(inputs.photo, 4, 8)
    assert crop.shape == (8, 8, 3)
    assert torch.equal(frames[0], torch.from_numpy(crop / 127.5 - 1.0).float().permute(2, 0, 1)[None])
    assert text.startswith("class 1 (one): 5 frames of 8×8 pixels") and "continuing the uploaded first frame" in text
    assert path.is_file()


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"label": 5}, r"^choose a class: the model has classes 0\.\.4, got 5$"),
        ({"seed": -1}, r"seed must be a whole number >= 0"),
        ({"temperature": (0.0, 1.0)}, r"temperature must be > 0"),
        ({"first_frame": "text_png"}, r"^not_an_image\.png: cannot read the image .*is it a complete image file\?$"),
    ],
)
def test_bad_video_generator_requests_give_one_readable_line_and_write_nothing(served, inputs, tmp_path, change,
                                                                             pattern):
    kw = dict(label=0, cfg_scale=(1.0, 1.0), temperature=(1.0, 1.0), seed=0, first_frame=None)
    kw.update(change)
    uploads = {}
    if kw["first_frame"] is not None:
        kw["first_frame"] = path = str(getattr(inputs, kw["first_frame"]))
        uploads = {path: Path(path).name}
    with pytest.raises(USER_ERRORS) as e:
        tasks.sample_clip(served.video_generator, kw.pop("label"), tmp_path, **kw)
    msg = readable(e.value, uploads)
    assert re.search(pattern, msg), msg
    assert list(tmp_path.iterdir()) == []
