"""``make demo-models``: retrain the bundled demo models from scratch with the project's own trainers.

Steps (each one skips itself when its output exists, so an interrupted build resumes):

1. data: crops of the photos that scikit-image and scikit-learn ship (``chelsea`` and ``coffee`` held out),
   camera-motion clips over the same training photos, the held-out demo samples, and the digits as PNG folders;
2. ``image``: the demo image tokenizer (``configs/demo/image_tokenizer.yaml``);
3. ``video``: the demo video tokenizer, inflated from it and its decoder fine-tuned on 64 × 64 camera-motion clips
   (``configs/demo/video_tokenizer.yaml``);
4. ``digits``: a small tokenizer for the digits (``configs/demo/digits_tokenizer.yaml``), the token set, and the
   class-conditional generator (``configs/demo/generator.yaml``);
5. ``video_digits``: the moving-digits video tokenizer, trained from scratch in two stages (single frames:
   ``configs/demo/video_digits_tokenizer_frames.yaml``; then clips: ``configs/demo/video_digits_tokenizer.yaml``),
   the token set of the training clips and the class-conditional video generator
   (``configs/demo/video_generator.yaml``);
6. ``install``: float16 copies into the package data (``src/open_magvit2/assets/demo``), measured on exactly
   those weights (``metrics.json``), and the loss curves of every run.

Recipes that ask for bf16 train in float32 on a CPU without bf16 units (:func:`fast_bf16`), and say so.

The recipes are package data (``open_magvit2/configs/demo``; ``configs/`` in a checkout links there). Run it from
a checkout (``make demo-models``): the model card's pictures go to ``docs/model_zoo`` under the current folder.

Usage: ``python -m open_magvit2.demo.build [--work build/demo-models] [--docs docs/model_zoo]
[--steps data image video digits video_digits install]``; ``--steps bits32`` trains the 2^32-code digits models
(not installed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from open_magvit2.checkpoints.hub import DEMO_ROOT, load_pretrained_dir, save_pretrained_dir
from open_magvit2.cpu_memory import keep_freed_memory_if_requested
from open_magvit2.demo import data
from open_magvit2.demo.data import DEMO_CLIP, DEMO_PHOTO
from open_magvit2.demo.evaluate import SHIPPED
from open_magvit2.fileio import atomic_write_dir

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "demo"  # the demo recipes, package data
STEPS = ("data", "image", "video", "digits", "video_digits", "install")
DOCS = Path("docs") / "model_zoo"  # the model card's pictures, relative to the checkout the build runs in
TILE = 64  # training crops of the image tokenizer (photo pixels, not resized)
CLIP_SIZE, CLIP_FRAMES = 64, 17
MOTION_SIZE, MOTION_SPEED = 64, 8.0  # the video tokenizer's training clips: 64 × 64, pans of 0..8 px/frame
MOTION_CLIPS = f"motion_clips{MOTION_SIZE}"  # named by size: an older build's clips of another size are not reused
# the video generator's token set: clips per training digit (one is the tokenizer's clip; with one the generator
# over-fits, docs/model_zoo.md "Video generator")
GENERATOR_CLIPS_PER_DIGIT = 2
DIGIT_SIZE = 32


def _log(msg: str) -> None:
    print(f"[demo-models {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def prepare_data(work: Path) -> None:
    if not (work / "data" / "photos").is_dir():
        atomic_write_dir(work / "data" / "photos", lambda tmp: data.write_photo_tiles(tmp, tile=TILE))
    if not (work / "data" / MOTION_CLIPS).is_dir():
        atomic_write_dir(work / "data" / MOTION_CLIPS,
                      lambda tmp: data.write_clips(tmp, data.TRAIN_PHOTOS, per_photo=24, frames=CLIP_FRAMES,
                                                   size=MOTION_SIZE, max_speed_px=MOTION_SPEED))
    if not (work / "data" / "digits").is_dir():
        atomic_write_dir(work / "data" / "digits", lambda tmp: data.write_digits_folder(tmp, size=DIGIT_SIZE))
    samples = work / "data" / "samples"
    if not samples.is_dir():
        from PIL import Image

        from open_magvit2.data.video_io import write_video

        samples.mkdir(parents=True)
        Image.fromarray(data.load_photo("chelsea")).save(samples / DEMO_PHOTO)
        write_video(samples / DEMO_CLIP, data.demo_clip("coffee", frames=CLIP_FRAMES, size=CLIP_SIZE * 2), fps=8,
                    crf=10)


def fast_bf16() -> bool:
    """Whether bf16 autocast is fast here: a CUDA GPU, or a CPU with bf16 matrix units (AMX or AVX-512-BF16). On
    other CPUs bf16 runs emulated, many times slower than float32 (docs/precision.md)."""
    if torch.cuda.is_available():
        return True
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch.cpu's own probes (private API)
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def _recipe(cls: type, recipe: Path, overrides: tuple[str, ...] = ()) -> Any:
    """A demo recipe; one that asks for bf16 trains in float32 where bf16 is not fast (:func:`fast_bf16`), and
    says so."""
    from open_magvit2.train.config import load_recipe

    cfg = load_recipe(cls, recipe, list(overrides))
    if cfg.run.precision == "bf16" and not fast_bf16():
        _log(f"{recipe.name}: this CPU has no bf16 matrix units (AMX, AVX-512-BF16), so it trains in float32 "
             "instead of bf16: slower than the times in docs/model_zoo.md")
        cfg = load_recipe(cls, recipe, [*overrides, "run.precision=fp32"])
    return cfg


def _train_tokenizer(recipe: Path, source: Path, run: Path, out: Path, overrides: tuple[str, ...] = ()) -> Path:
    from open_magvit2.train.export import export_run
    from open_magvit2.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    if not (out / "model.safetensors").is_file():
        cfg = _recipe(TokenizerTrainConfig, recipe, overrides)
        t0 = time.perf_counter()
        train_tokenizer(cfg, source, run, resume="auto")
        _log(f"{recipe.name}: trained in {(time.perf_counter() - t0) / 60:.1f} min")
        export_run(run, out)
    return out


def train_image(work: Path) -> Path:
    return _train_tokenizer(CONFIGS / "image_tokenizer.yaml", work / "data" / "photos", work / "runs" / "image",
                            work / "export" / "image_tokenizer")


def train_video(work: Path) -> Path:
    return _train_tokenizer(CONFIGS / "video_tokenizer.yaml", work / "data" / MOTION_CLIPS, work / "runs" / "video",
                            work / "export" / "video_tokenizer",
                            (f"init.inflate_from={work / 'export' / 'image_tokenizer'}",))


def train_video_digits_tokenizer(work: Path) -> Path:
    """The moving-digits video tokenizer, trained from scratch on one clip per training digit
    (``data.write_moving_digits``, scikit-learn's 0..1499; 1500..1796 held out) in two stages: single frames
    (``configs/demo/video_digits_tokenizer_frames.yaml``: each frame's path as an image network, and frame 0),
    then clips (``configs/demo/video_digits_tokenizer.yaml``: motion, from the first stage's weights)."""
    clips = work / "data" / "moving_digits"
    if not clips.is_dir():
        atomic_write_dir(clips, lambda tmp: data.write_moving_digits(tmp, "train"))
    frames = _train_tokenizer(CONFIGS / "video_digits_tokenizer_frames.yaml", clips,
                              work / "runs" / "video_digits_frames", work / "export" / "video_digits_frames")
    return _train_tokenizer(CONFIGS / "video_digits_tokenizer.yaml", clips, work / "runs" / "video_digits_tokenizer",
                            work / "export" / "video_digits_tokenizer", (f"init.checkpoint={frames}",))


def train_video_digits(work: Path) -> Path:
    """The moving-digits video generator: its own tokenizer (:func:`train_video_digits_tokenizer`), the token set
    of ``GENERATOR_CLIPS_PER_DIGIT`` clips per training digit (the tokenizer's clip first, then clips of the same
    digits at other heights, positions and motions), and the class-conditional video generator
    (``configs/demo/video_generator.yaml``)."""
    from open_magvit2.data.pretokenize import tokenize_dataset
    from open_magvit2.train.export import export_run
    from open_magvit2.train.generator import GeneratorTrainConfig, train_generator

    tok = train_video_digits_tokenizer(work)
    clips = work / "data" / f"moving_digits_x{GENERATOR_CLIPS_PER_DIGIT}"
    if not clips.is_dir():
        n = GENERATOR_CLIPS_PER_DIGIT * len(data.split_digits("train"))
        atomic_write_dir(clips, lambda tmp: data.write_moving_digits(tmp, "train", num_clips=n))
    tokens = work / "data" / f"video_digit_tokens_x{GENERATOR_CLIPS_PER_DIGIT}"
    if not (tokens / "index.json").is_file():
        tokenize_dataset(tok, clips, data.MOVING_CANVAS, tokens, batch_size=16, num_workers=0,
                         frames=data.MOVING_FRAMES)
    out = work / "export" / "video_generator"
    if not (out / "model.safetensors").is_file():
        cfg = _recipe(GeneratorTrainConfig, CONFIGS / "video_generator.yaml")
        t0 = time.perf_counter()
        train_generator(cfg, tokens, work / "runs" / "video_generator", resume="auto")
        _log(f"video_generator.yaml: trained in {(time.perf_counter() - t0) / 60:.1f} min")
        export_run(work / "runs" / "video_generator", out)
    return out


def train_digits(work: Path) -> Path:
    from open_magvit2.data.pretokenize import tokenize_dataset
    from open_magvit2.train.config import load_recipe
    from open_magvit2.train.export import export_run
    from open_magvit2.train.generator import GeneratorTrainConfig, train_generator

    tok = _train_tokenizer(CONFIGS / "digits_tokenizer.yaml", work / "data" / "digits", work / "runs" / "digits",
                           work / "export" / "digits_tokenizer")
    tokens = work / "data" / "digit_tokens"
    if not (tokens / "index.json").is_file():
        tokenize_dataset(tok, work / "data" / "digits", DIGIT_SIZE, tokens, batch_size=64, num_workers=0)
    out = work / "export" / "image_generator"
    if not (out / "model.safetensors").is_file():
        cfg = load_recipe(GeneratorTrainConfig, CONFIGS / "generator.yaml")
        t0 = time.perf_counter()
        train_generator(cfg, tokens, work / "runs" / "generator", resume="auto")
        _log(f"generator.yaml: trained in {(time.perf_counter() - t0) / 60:.1f} min")
        export_run(work / "runs" / "generator", out)
    return out


def train_bits32(work: Path) -> dict:
    """Codebooks past 2^18 shown on the digits (docs/model_zoo.md "A 2^32-code digits tokenizer and generator"):
    the 10-bit digits recipe and the 32-bit one (``configs/tokenizer/tiny_32bit.yaml``) trained on the same
    digits (scikit-learn's 0..1499; 1500..1796 held out), then the demo generator recipe with four 8-bit sub-tokens
    on the 32-bit tokens. Not installed as package data; writes ``bits32/metrics.json`` and curves."""
    from open_magvit2.data.pretokenize import tokenize_dataset
    from open_magvit2.demo.evaluate import digits_accuracy, digits_reconstruction
    from open_magvit2.generator import ImageGenerator
    from open_magvit2.tokenizer import ImageTokenizer
    from open_magvit2.train.config import load_recipe
    from open_magvit2.train.export import export_run
    from open_magvit2.train.generator import GeneratorTrainConfig, train_generator
    from open_magvit2.train.plots import plot_run

    base = work / "bits32"
    folder = base / "digits_train"
    if not folder.is_dir():
        data.write_digits_folder(folder, size=DIGIT_SIZE, indices=data.split_digits("train"))
    tok10 = _train_tokenizer(CONFIGS / "digits_tokenizer.yaml", folder, base / "runs" / "tok10", base / "tok10")
    tok32 = _train_tokenizer(CONFIGS.parent / "tokenizer" / "tiny_32bit.yaml", folder, base / "runs" / "tok32",
                             base / "tok32")
    tokens = base / "tokens32"
    if not (tokens / "index.json").is_file():
        tokenize_dataset(tok32, folder, DIGIT_SIZE, tokens, batch_size=64, num_workers=0)
    gen_out = base / "gen32"
    if not (gen_out / "model.safetensors").is_file():
        cfg = load_recipe(GeneratorTrainConfig, CONFIGS / "generator.yaml", [
            "model_args.factorized_bits=[8,8,8,8]", "model_args.sample_cfg_scale=[3.0,3.0,3.0,3.0]",
            "model_args.sample_temperature=[1.0,1.0,1.0,1.0]"])
        t0 = time.perf_counter()
        train_generator(cfg, tokens, base / "runs" / "gen32", resume="auto")
        _log(f"generator, 4 × 8 bits: trained in {(time.perf_counter() - t0) / 60:.1f} min")
        export_run(base / "runs" / "gen32", gen_out)
    metrics = {
        "tokenizer_10bit": digits_reconstruction(ImageTokenizer.from_pretrained(tok10)),
        "tokenizer_32bit": digits_reconstruction(ImageTokenizer.from_pretrained(tok32)),
        "tokenizer_32bit_train_split": digits_reconstruction(ImageTokenizer.from_pretrained(tok32), "train"),
        "generator_32bit": {"svc_accuracy_default_cfg": digits_accuracy(ImageGenerator.from_pretrained(gen_out))},
    }
    (base / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    for run in ("tok32", "gen32"):
        plot_run(base / "runs" / run, DOCS / f"bits32_{run}_curves.png")
    _log(f"bits32: {json.dumps(metrics)}")
    return metrics


def _install_model(src: Path, dst: Path) -> None:
    """Copy a save_pretrained folder with its floating tensors stored as float16 (they load as float32)."""
    model_type, config, sd = load_pretrained_dir(src)
    half = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    meta = json.loads((src / "config.json").read_text()).get("metadata", {})
    if dst.exists():
        shutil.rmtree(dst)
    save_pretrained_dir(dst, model_type, config, half, metadata={**meta, "stored_dtype": "float16"})
    for extra in ("classes.json",):
        if (src / extra).is_file():
            shutil.copy(src / extra, dst / extra)


# the runs whose curves each installed model's card shows (the models: demo.evaluate.MODELS)
MODEL_RUNS = {"image_tokenizer": ("image",), "video_tokenizer": ("video",), "image_generator": ("digits", "generator"),
          "video_generator": ("video_digits_frames", "video_digits_tokenizer", "video_generator")}


def install(work: Path, assets: Path = DEMO_ROOT, docs: Path = DOCS, models: tuple[str, ...] = SHIPPED) -> dict:
    """Install the exported ``models`` (default: the shipped ones) and the samples as package data, measure them into
    ``metrics.json`` (the figures of the others stay); draw their loss curves and the README's picture into
    ``docs``."""
    missing = [m for m in models if not (work / "export" / m / "model.safetensors").is_file()]
    if missing:  # check before anything is replaced
        raise FileNotFoundError(f"no export of {', '.join(missing)} under {work / 'export'}; train it first")
    for name in models:
        _install_model(work / "export" / name, assets / name)
    (assets / "samples").mkdir(parents=True, exist_ok=True)
    for f in (work / "data" / "samples").iterdir():
        shutil.copy(f, assets / "samples" / f.name)
    from open_magvit2.demo.evaluate import measure_all

    recorded = assets / "metrics.json"  # the other models' figures stay as they were measured
    metrics = json.loads(recorded.read_text()) if recorded.is_file() else {}
    metrics.update(measure_all(models))
    recorded.write_text(json.dumps(metrics, indent=2) + "\n")
    from open_magvit2.train.plots import plot_run

    for run in (r for m in models for r in MODEL_RUNS[m]):
        plot_run(work / "runs" / run, docs / f"{run}_curves.png")
    demo_picture(work / "demo-output", docs / "demo.jpg")
    if "video_generator" in models:
        from open_magvit2.generator import VideoGenerator

        video_generator_picture(VideoGenerator.from_pretrained("demo"), docs / "video_generator_frames.png")
    return metrics


def video_generator_picture(gen: torch.nn.Module, out: Path, seed: int = 0) -> Path:
    """A moving-digits video generator's model-card picture: one generated clip per digit 0–9 (a row each, every
    second frame), then three held-out clips (real) each above its continuation from the real first frame."""
    from open_magvit2.data.video_io import video_to_uint8
    from open_magvit2.demo.data import moving_digits
    from open_magvit2.imaging import image_grid, save_image, uint8_to_tensor

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        clips = [video_to_uint8(c) for c in gen.sample_videos(torch.arange(10), generator=g)]
        real, labels = moving_digits("held_out", 3, seed=seed)
        first = torch.cat([uint8_to_tensor(f) for f in real[:, 0]])
        cont = [video_to_uint8(c) for c in gen.sample_videos(torch.from_numpy(labels), first_frame=first, generator=g)]
    rows = [*clips, *(c for pair in zip(real, cont) for c in pair)]
    frames = [f for clip in rows for f in clip[::2]]
    return save_image(image_grid(frames, columns=len(rows[0][::2])), out)


def demo_picture(work: Path, out: Path, width: int = 760) -> Path:
    """The README's picture: the demo's photo side by side with its reconstruction above the digits grid."""
    from PIL import Image

    from open_magvit2.demo.run import run_demo

    paths = run_demo(work)
    photo, digits = Image.open(paths["photo"]).convert("RGB"), Image.open(paths["digits"]).convert("RGB")
    photo = photo.resize((width, round(photo.height * width / photo.width)), Image.LANCZOS)
    digits = digits.resize((round(digits.width * 0.75), round(digits.height * 0.75)), Image.LANCZOS)
    canvas = Image.new("RGB", (width, photo.height + 8 + digits.height), "white")
    canvas.paste(photo, (0, 0))
    canvas.paste(digits, ((width - digits.width) // 2, photo.height + 8))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, quality=88, optimize=True)  # JPEG: a photo, a fifth of the PNG
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m open_magvit2.demo.build", description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("build") / "demo-models", help="data, runs and exports")
    ap.add_argument("--docs", type=Path, default=DOCS, help=f"where the curves and the demo picture go ({DOCS})")
    ap.add_argument("--steps", nargs="+", choices=(*STEPS, "bits32"), default=list(STEPS),
                    help="bits32 (not in the default): the 2^32-code digits tokenizer and generator, not installed")
    args = ap.parse_args(argv)
    try:
        keep_freed_memory_if_requested()  # as the commands do (cpu_memory.py): the video token set 1.34×
    except ValueError as e:
        print(f"demo-models: error: {e}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    steps = {"data": prepare_data, "image": train_image, "video": train_video, "digits": train_digits,
             "video_digits": train_video_digits, "install": lambda work: install(work, docs=args.docs),
             "bits32": train_bits32}
    for name in (*STEPS, "bits32"):
        if name in args.steps:
            _log(f"step {name}")
            steps[name](args.work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
