"""The Gradio side without a browser: errors become readable page messages, the page has a tab per model, and
``serve``'s fixed interface (flags, loopback default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from open_magvit2.cli import build_parser
from open_magvit2.cli.serve import is_loopback

gr = pytest.importorskip("gradio", reason="the web extra is not installed (pip install open-magvit2[web])")


def test_user_errors_become_one_escaped_line_naming_the_upload():
    from open_magvit2.web.app import guarded

    def fails(path):
        raise ValueError(f"{path}: cannot read <the> image")

    with pytest.raises(gr.Error) as e:
        guarded(fails)("/tmp/gradio/0123/photo.png")
    assert e.value.message == "photo.png: cannot read &lt;the&gt; image"

    def bug(path):
        raise KeyError("internal")

    with pytest.raises(KeyError):  # not a user error: Gradio reports it as a failure
        guarded(bug)("x")


def test_the_page_has_a_tab_per_served_model(standin_models, tmp_path, monkeypatch):
    from open_magvit2.web.app import build_app
    from open_magvit2.web.models import NO_DEMO_VIDEO_GENERATOR, load_models

    def tabs(app):
        return [b.label for b in app.blocks.values() if isinstance(b, gr.Tab)]

    def texts(app):
        return [b.value for b in app.blocks.values() if isinstance(b, gr.Markdown)]

    m = standin_models
    app = build_app(load_models(str(m.tokenizer), str(m.video), str(m.generator), "cpu",
                                video_generator=str(m.video_generator)), tmp_path)
    assert tabs(app) == ["Tokenizer", "Generator", "Video", "Video generator"]
    header = texts(app)[0]
    assert f"video generator `{m.video_generator}` (5 classes, 5 frames of 8×8)" in header
    assert "First frame (optional): any image, resized and centre-cropped to 8×8" in [
        b.label for b in app.blocks.values() if isinstance(b, gr.File)]
    app = build_app(load_models(str(m.tokenizer), "none", "none", "cpu", video_generator="none"), tmp_path)
    assert tabs(app) == ["Tokenizer"]
    # no --video-generator and no bundled demo video generator: the tab is there and says so
    monkeypatch.setattr("open_magvit2.checkpoints.hub.DEMO_ROOT", tmp_path / "no_demo_models")
    app = build_app(load_models(str(m.tokenizer), "none", "none", "cpu"), tmp_path)
    assert tabs(app) == ["Tokenizer", "Video generator"]
    assert NO_DEMO_VIDEO_GENERATOR in texts(app)


def test_serve_flags_and_loopback_default():
    args = build_parser().parse_args(["serve"])
    assert (args.tokenizer, args.video_tokenizer, args.generator, args.video_generator) == (None, None, None, None)
    assert (args.host, args.port, args.device) == ("127.0.0.1", 7860, None)
    args = build_parser().parse_args(["serve", "--tokenizer", "a", "--video-tokenizer", "b", "--generator", "c",
                                      "--video-generator", "d", "--host", "0.0.0.0", "--port", "8000", "--device",
                                      "cpu"])
    assert (args.tokenizer, args.video_tokenizer, args.generator, args.video_generator, args.host,
            args.port) == ("a", "b", "c", "d", "0.0.0.0", 8000)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("myhost")


def test_bundled_samples_are_offered_when_installed(standin_models, inputs, monkeypatch, tmp_path):
    import shutil

    from open_magvit2.demo.data import DEMO_CLIP, DEMO_PHOTO
    from open_magvit2.web.app import build_app
    from open_magvit2.web.models import load_models

    root = tmp_path / "demo"
    shutil.copytree(standin_models.root, root)
    (root / "samples").mkdir()
    shutil.copy(inputs.photo, root / "samples" / DEMO_PHOTO)
    shutil.copy(inputs.clip, root / "samples" / DEMO_CLIP)
    monkeypatch.setattr("open_magvit2.checkpoints.hub.DEMO_ROOT", root)
    app = build_app(load_models(device="cpu"), tmp_path / "work")
    datasets = [b for b in app.blocks.values() if isinstance(b, gr.Dataset)]
    samples = sorted(Path(s[0]["path"] if isinstance(s[0], dict) else s[0]).name for d in datasets for s in d.samples)
    assert samples == sorted([DEMO_PHOTO, DEMO_CLIP])
    header = next(b for b in app.blocks.values() if isinstance(b, gr.Markdown) and "Serving" in str(b.value))
    assert "image tokenizer `demo`" in header.value and "demo quality, not the paper's models" in header.value
    assert "video generator `demo` (5 classes" in header.value
