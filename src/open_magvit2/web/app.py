"""The Gradio app of ``open-magvit2 serve`` (the ``web`` extra): one tab per served model, wired to the plain
functions of ``web/tasks.py``.

* Tokenizer: an image (uploaded or bundled) → original | reconstruction | token map, PSNR, SSIM, grid, codes.
* Generator: class, CFG and temperature pairs, top-k, top-p, seed, number of samples → a grid, with progress.
* Video: a clip (uploaded or bundled) → original | reconstruction side by side, PSNR.
* Video generator: class, an optional first frame (resized and centre-cropped to the frame size), CFG and
  temperature pairs, seed → a clip (mp4) that plays in the page. Without ``--video-generator`` and with no bundled
  demo video generator, the tab says so.

A user error (a file that is not an image, a huge image, a clip with too few frames, a corrupt file) becomes a
readable message in the page (``gr.Error``); the server goes on serving. One request computes at a time (the
models share the machine). Every element the browser test drives has an ``elem_id``.
"""

from __future__ import annotations

import contextlib
import functools
import html
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from open_magvit2.checkpoints.hub import demo_sample, native_size
from open_magvit2.demo.data import DEMO_CLIP, DEMO_PHOTO
from open_magvit2.errors import USER_ERRORS, describe_error
from open_magvit2.generator import ImageGenerator, VideoGenerator
from open_magvit2.generator.model import GeneratorConfig, spread_over_sub_tokens
from open_magvit2.tokenizer import ImageTokenizer, VideoTokenizer
from open_magvit2.web.models import ServedModels
from open_magvit2.web.tasks import (
    MAX_CLIP_FRAMES,
    MAX_IMAGE_PIXELS,
    MAX_ORIGINAL_PIXELS,
    MAX_SAMPLES,
    MAX_UPLOAD_MB,
    OUT_OF_MEMORY,
    reconstruct_clip,
    reconstruct_image,
    sample_clip,
    sample_grid,
)

KEEP_RESULTS = 8  # the video tabs' result folders kept on disk (older ones are removed)
IMAGE_HEIGHT = 300  # CSS pixels of each picture box
# Pictures fill their boxes: a 128² reconstruction is enlarged (smoothly, original and reconstruction alike), a
# large one scaled down; token maps and samples keep sharp pixels. Downloads are the images themselves.
CSS = """
#tok-original img, #tok-recon img, #tok-tokens img, #gen-output img {
  width: 100%; height: 100%; object-fit: contain;
}
#tok-tokens img, #gen-output img { image-rendering: pixelated; }
#vgen-output video { image-rendering: pixelated; }
"""


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with user errors turned into a readable message in the page; upload paths shown as file names."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            uploads = {a: Path(a).name for a in args if isinstance(a, str) and Path(a).is_absolute()}
            message = describe_error(e, out_of_memory=OUT_OF_MEMORY, paths=uploads)
            raise gr.Error(html.escape(message), duration=None, print_exception=False) from None

    return run


def _number(value: float | None, name: str) -> float:
    if value is None:
        raise ValueError(f"{name}: enter a number")
    return float(value)


def _bundled(name: str) -> list[list[str]]:
    """The bundled demo sample ``name`` as Gradio examples, when this installation has it."""
    with contextlib.suppress(FileNotFoundError):
        return [[str(demo_sample(name))]]
    return []


def _describe(models: ServedModels) -> str:
    def name(attr: str) -> str:  # the bundled demo models by their name, not their folder in site-packages
        return "demo" if attr in models.demo else models.sources[attr]

    parts = []
    if models.tokenizer is not None:
        c = models.tokenizer.config
        parts.append(f"image tokenizer `{name('tokenizer')}` ({c.spatial_factor}×, 2^{c.z_channels} codes)")
    if models.video_tokenizer is not None:
        c = models.video_tokenizer.config
        parts.append(f"video tokenizer `{name('video_tokenizer')}` ({c.spatial_factor}×, "
                     f"{models.video_tokenizer.frame_step}k+1 frames)")
    if models.generator is not None:
        parts.append(f"generator `{name('generator')}` ({models.generator.config.num_classes} classes)")
    if models.video_generator is not None:
        g = models.video_generator
        parts.append(f"video generator `{name('video_generator')}` ({g.config.num_classes} classes, {g.num_frames} "
                     f"frames of {g.frame_size}×{g.frame_size})")
    note = " The demo models are demo quality, not the paper's models." if models.demo else ""
    return (f"# open-magvit2\nServing {'; '.join(parts)} on {models.device.type}.{note}\n\nLimits: uploads up to "
            f"{MAX_UPLOAD_MB} MB, images up to {MAX_IMAGE_PIXELS / 1e6:.0f} MP ({MAX_ORIGINAL_PIXELS / 1e6:.1f} MP at "
            f"original resolution), clips' first {MAX_CLIP_FRAMES} frames, up to {MAX_SAMPLES} samples.")


def _tokenizer_tab(tok: ImageTokenizer) -> None:
    s = native_size(tok.config.spatial_factor)
    modes = [f"resize and centre-crop to {s}×{s} (native size)", "original resolution"]
    with gr.Tab("Tokenizer", id="tokenizer"), gr.Row():
        with gr.Column(scale=1):
            file = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="tok-input")
            mode = gr.Radio(modes, value=modes[0], label="Size", elem_id="tok-mode")
            run = gr.Button("Reconstruct", variant="primary", elem_id="tok-run")
            if examples := _bundled(DEMO_PHOTO):
                gr.Examples(examples, inputs=[file], label="Bundled photo (held out of training)")
        with gr.Column(scale=3):
            stats = gr.Markdown(elem_id="tok-stats")
            with gr.Row():
                shown = dict(format="png", interactive=False, height=IMAGE_HEIGHT)
                original = gr.Image(label="original", elem_id="tok-original", **shown)
                recon = gr.Image(label="reconstruction", elem_id="tok-recon", **shown)
                tokens = gr.Image(label="tokens (one colour per code)", elem_id="tok-tokens", **shown)

    def go(path: str | None, mode_label: str) -> tuple:
        if not path:
            return None, None, None, ""
        r = reconstruct_image(tok, path, original_resolution=mode_label == modes[1])
        return r.original, r.reconstruction, r.tokens, r.summary()

    gr.on([file.change, mode.change, run.click], guarded(go), [file, mode], [original, recon, tokens, stats])


def _sampling_fields(c: GeneratorConfig) -> tuple[gr.Number, gr.Number, gr.Number, gr.Number]:
    """CFG and temperature, each as a (first sub-token, the others) pair, at the model's defaults."""
    with gr.Row():
        cfg_pre = gr.Number(c.sample_cfg_scale[0], label="CFG, first sub-token", minimum=0, step=0.05)
        cfg_post = gr.Number(c.sample_cfg_scale[1], label="CFG, second sub-token", minimum=0, step=0.05)
    with gr.Row():
        t_pre = gr.Number(c.sample_temperature[0], label="temperature, first", minimum=0.01, step=0.05)
        t_post = gr.Number(c.sample_temperature[1], label="temperature, second", minimum=0.01, step=0.05)
    return cfg_pre, cfg_post, t_pre, t_post


def _sampling(c: GeneratorConfig, a: float, b: float, ta: float, tb: float) -> tuple[tuple[float, ...], ...]:
    """The fields of :func:`_sampling_fields` as per-sub-token (cfg_scale, temperature): the second field sets every
    sub-token after the first (spread_over_sub_tokens)."""
    cfg = spread_over_sub_tokens((_number(a, "CFG"), _number(b, "CFG")), c.sub_tokens)
    temp = spread_over_sub_tokens((_number(ta, "temperature"), _number(tb, "temperature")), c.sub_tokens)
    return cfg, temp


def _generator_tab(gen: ImageGenerator, names: list[str]) -> None:
    c = gen.config
    with gr.Tab("Generator", id="generator"), gr.Row():
        with gr.Column(scale=1):
            label = gr.Dropdown(names, value=names[0], type="index", label="Class", elem_id="gen-class")
            cfg_pre, cfg_post, t_pre, t_post = _sampling_fields(c)
            with gr.Row():
                top_k = gr.Number(0, precision=0, minimum=0, label="top-k (0 = off)")
                top_p = gr.Slider(0.01, 1.0, value=1.0, step=0.01, label="top-p (1 = off)")
            with gr.Row():
                seed = gr.Number(0, precision=0, minimum=0, label="seed", elem_id="gen-seed")
                count = gr.Slider(1, MAX_SAMPLES, value=8, step=1, label="samples", elem_id="gen-count")
            run = gr.Button("Sample", variant="primary", elem_id="gen-run")
        with gr.Column(scale=2):
            out = gr.Image(label="samples", format="png", interactive=False, height=int(1.6 * IMAGE_HEIGHT),
                           elem_id="gen-output")
            info = gr.Markdown(elem_id="gen-info")

    def go(index: int | None, a: float, b: float, ta: float, tb: float, k: float, p: float, sd: float, n: float,
           progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:  # noqa: B008 — Gradio's idiom
        if index is None:
            raise ValueError("choose a class")
        cfg, temp = _sampling(c, a, b, ta, tb)
        return sample_grid(gen, int(index), cfg_scale=cfg, temperature=temp, top_k=int(_number(k, "top-k")),
                           top_p=_number(p, "top-p"), seed=int(_number(sd, "seed")),
                           num_samples=int(_number(n, "samples")), progress=True)

    run.click(guarded(go), [label, cfg_pre, cfg_post, t_pre, t_post, top_k, top_p, seed, count], [out, info])


def _video_tab(vtok: VideoTokenizer, workdir: Path) -> None:
    with gr.Tab("Video", id="video"), gr.Row():
        with gr.Column(scale=1):
            file = gr.File(label="Clip", file_types=["video"], type="filepath", elem_id="vid-input")
            run = gr.Button("Reconstruct", variant="primary", elem_id="vid-run")
            if examples := _bundled(DEMO_CLIP):
                gr.Examples(examples, inputs=[file], label="Bundled clip (camera motion over a held-out photo)")
        with gr.Column(scale=2):
            stats = gr.Markdown(elem_id="vid-stats")
            both = gr.Video(label="original | reconstruction", interactive=False, autoplay=True, loop=True,
                            elem_id="vid-output")

    def go(path: str | None) -> tuple:
        if not path:
            return None, ""
        r = reconstruct_clip(vtok, path, _fresh_folder(workdir))
        return str(r.side_by_side), r.summary()

    gr.on([file.change, run.click], guarded(go), [file], [both, stats])


def _video_generator_tab(gen: VideoGenerator | None, names: list[str], missing: str, workdir: Path) -> None:
    with gr.Tab("Video generator", id="video-generator"):
        if gen is None:  # started without --video-generator, and no demo model bundled: say so
            gr.Markdown(missing, elem_id="vgen-missing")
            return
        s = gen.frame_size
        with gr.Row():
            with gr.Column(scale=1):
                label = gr.Dropdown(names, value=names[0], type="index", label="Class", elem_id="vgen-class")
                first = gr.File(label=f"First frame (optional): any image, resized and centre-cropped to {s}×{s}",
                                file_types=["image"], type="filepath", elem_id="vgen-first")
                cfg_pre, cfg_post, t_pre, t_post = _sampling_fields(gen.config)
                seed = gr.Number(0, precision=0, minimum=0, label="seed", elem_id="vgen-seed")
                run = gr.Button("Generate", variant="primary", elem_id="vgen-run")
            with gr.Column(scale=2):
                out = gr.Video(label=f"generated clip ({gen.num_frames} frames)", interactive=False, autoplay=True,
                               loop=True, height=int(1.6 * IMAGE_HEIGHT), elem_id="vgen-output")
                info = gr.Markdown(elem_id="vgen-info")

    def go(index: int | None, path: str | None, a: float, b: float, ta: float, tb: float, sd: float,
           progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:  # noqa: B008 — Gradio's idiom
        if index is None:
            raise ValueError("choose a class")
        cfg, temp = _sampling(gen.config, a, b, ta, tb)
        clip, text = sample_clip(gen, int(index), _fresh_folder(workdir), first_frame=path or None, cfg_scale=cfg,
                                 temperature=temp, seed=int(_number(sd, "seed")), class_name=names[int(index)],
                                 progress=True)
        return str(clip), text

    run.click(guarded(go), [label, first, cfg_pre, cfg_post, t_pre, t_post, seed], [out, info])


def _fresh_folder(workdir: Path) -> Path:
    """A new folder for one result; only the newest :data:`KEEP_RESULTS` are kept."""
    workdir.mkdir(parents=True, exist_ok=True)
    old = sorted(workdir.iterdir(), key=lambda p: p.stat().st_mtime)
    for p in old[: max(0, len(old) - KEEP_RESULTS + 1)]:
        shutil.rmtree(p, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=workdir))


def build_app(models: ServedModels, workdir: str | Path) -> gr.Blocks:
    """The app's page: a header naming the models and the limits, then one tab per served model. The video tabs
    write their mp4 files under ``workdir``."""
    with gr.Blocks(title="open-magvit2", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(_describe(models), elem_id="header")
        with gr.Tabs():
            if models.tokenizer is not None:
                _tokenizer_tab(models.tokenizer)
            if models.generator is not None:
                _generator_tab(models.generator, models.class_names)
            if models.video_tokenizer is not None:
                _video_tab(models.video_tokenizer, Path(workdir))
            if models.video_generator is not None or models.video_generator_missing:
                _video_generator_tab(models.video_generator, models.video_class_names,
                                     models.video_generator_missing, Path(workdir))
    return app.queue(default_concurrency_limit=1)


def serve(models: ServedModels, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the app on ``host:port`` until interrupted (Ctrl-C, or SIGTERM turned into KeyboardInterrupt by the
    caller); the server and its result files are gone afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="open-magvit2-web-"))
    try:
        app = build_app(models, workdir)
        try:
            app.launch(server_name=host, server_port=port, max_file_size=f"{MAX_UPLOAD_MB}mb", show_error=True,
                       ssr_mode=False, prevent_thread_lock=True, share=False, inbrowser=False, quiet=True,
                       footer_links=[], css=CSS)
        except OSError as e:  # Gradio's message names its own environment variable and launch()
            raise OSError(f"cannot listen on {host}:{port}: {str(e).splitlines()[0].split('. ')[0]}; is another "
                          "server using the port? Pass another --port") from None
        print(f"open-magvit2 serve: running on http://{host}:{port} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(0.5)
        finally:
            app.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
