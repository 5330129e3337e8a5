"""``generate`` and ``sample-fid``: class-conditional sampling from an AR checkpoint (docs/design.md O-39, O-43);
``generate-video`` and ``sample-fvd``: the same for a video generator (docs/design.md "Video generation")."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import cast

import numpy as np
import torch

from open_magvit2.checkpoints.hub import resolve_checkpoint
from open_magvit2.cli.common import (
    add_checkpoint_args,
    add_device_arg,
    load_checkpoint,
    output_dir,
    output_file,
    positive_float,
    positive_int,
)
from open_magvit2.distributed import process_group
from open_magvit2.eval.video_samples import MIN_FRAMES
from open_magvit2.fileio import find_files
from open_magvit2.generator import ImageGenerator, VideoGenerator
from open_magvit2.generator.api import TokenGenerator, read_class_names
from open_magvit2.generator.fid import sample_class, sample_npz
from open_magvit2.generator.sampling import check_sampling
from open_magvit2.imaging import IMAGE_SUFFIXES, image_grid, load_image, save_image

SAMPLING_HELP = "one value for every sub-token, or one per sub-token: PRE,POST for the released models (S1,S2,…,SM " \
    "for M sub-tokens)"
NOT_AR = "pass an AR_256_* checkpoint (a video generator samples clips with generate-video; tokenizers reconstruct, " \
    "they do not generate)"
NOT_VIDEO = "pass a video generator checkpoint (an image generator samples images with generate and sample-fid; " \
    "tokenizers reconstruct, they do not generate)"
FID_TIMEOUT_S = 6 * 3600.0  # ranks wait for each other once, after sampling; a rank may finish hours earlier


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="sample class-conditional images from an AR checkpoint; write PNGs and a grid",
        description="Sample images of the given classes: the labels the generator was trained with (ImageNet's "
        "1000 classes for the released AR_256_* models, the digits 0–9 for the demo generator). Writes "
        "OUT/<class>/<i>.png and OUT/grid.png (one row per class); <class> is the class's name when the checkpoint "
        "records names (classes.json in a save_pretrained folder, as `export` writes for a run on named class "
        "folders), else its id. Each class has its own seed derived from (--seed, class), so a class's images do "
        "not depend on which other classes are requested.",
    )
    p.add_argument("--classes", type=int, nargs="+", required=True,
                   help="class ids in [0, number of classes), e.g. 207 360 (ImageNet) or 3 7 (demo digits)")
    p.add_argument("--num-per-class", type=positive_int, default=4, help="images per class (default 4)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    _add_sampling(p, seed=0)
    p.set_defaults(func=run_generate)

    p = sub.add_parser(
        "sample-fid",
        help="FID-50k sample protocol: N images per class into one .npz (arr_0 uint8 NHWC)",
        description="Sample --num-per-class images for every class (or --classes) and write an .npz whose "
        "arr_0 is uint8 (N, H, W, 3), in class order, for the ADM FID/IS evaluator. Under torchrun the classes are "
        "dealt to ranks round-robin; per-class seeds make the result independent of the number of ranks. Each "
        "finished class is kept in OUTPUT.parts/, so a killed run continues where it stopped when started again "
        "with the same arguments (any number of ranks); the .npz is merged class by class.",
    )
    p.add_argument("--num-per-class", type=positive_int, default=50, help="images per class (default 50 = FID-50k)")
    p.add_argument("--classes", type=int, nargs="+", default=None, help="subset of classes (default: all)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .npz file")
    p.add_argument("--restart", action="store_true", help="discard the samples of an earlier run in OUTPUT.parts/")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_sampling(p, seed=42)
    p.set_defaults(func=run_sample_fid)

    p = sub.add_parser(
        "generate-video",
        help="sample class-conditional clips from a video generator; write MP4s and a grid",
        description="Sample clips of the given classes from a video generator (VideoGenerator.save_pretrained "
        "folder, or demo). Writes OUT/<class>/<i>.mp4 and OUT/grid.mp4 (every clip tiled, one row per class); "
        "<class> is the class's name when the checkpoint records names (classes.json), else its id. Each class has "
        "its own seed derived from (--seed, class), as in generate. With --first-frame every clip continues a "
        "given image: the image is the clip's first frame (as the tokenizer reconstructs it) and the generator "
        "samples the rest. A folder or glob of images is continued for every requested class, --num-per-class "
        "times each: OUT/<class>/<image>_<i>.mp4. Images must already be the model's frame size (they are not "
        "resized); one that cannot be read or has another size stops the command before any sampling.",
    )
    p.add_argument("--classes", type=int, nargs="+", required=True,
                   help="class ids in [0, number of classes), e.g. 3 7 (demo digits)")
    p.add_argument("--num-per-class", type=positive_int, default=4,
                   help="clips per class, or per class and first frame (default 4)")
    p.add_argument("--first-frame", default=None, metavar="IMAGE",
                   help="continue this image, or every image of this folder or quoted glob, into clips; each must "
                   "be the model's frame size (not resized: another size is refused with the size needed)")
    p.add_argument("--fps", type=positive_float, default=8.0,
                   help="frame rate of the written MP4s (default 8; the models record none)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    _add_sampling(p, seed=0, batch_size=16, what="clips")
    p.set_defaults(func=run_generate_video)

    p = sub.add_parser(
        "sample-fvd",
        help="FVD sample protocol: N clips per class into one .npz (arr_0 uint8 (N, T, H, W, 3), labels)",
        description="Sample --num-per-class clips for every class (or --classes) of a video generator and write the "
        "video sample file that evaluate-video-generator --samples reads: arr_0 uint8 (N, T, H, W, 3) in class "
        "order, labels int64 (N,). As sample-fid: the classes are dealt to torchrun ranks round-robin with "
        f"per-class seeds (the result does not depend on the number of ranks), each finished class is kept in "
        f"OUTPUT.parts/, and a killed run continues where it stopped when started again with the same arguments. "
        f"The model's clips must have at least {MIN_FRAMES} frames (the shortest the I3D of FVD takes).",
    )
    p.add_argument("--num-per-class", type=positive_int, required=True,
                   help="clips per class; FVD depends on the number of clips, so compare runs of the same N (e.g. "
                   "2,048 or 10,000 clips in all)")
    p.add_argument("--classes", type=int, nargs="+", default=None, help="subset of classes (default: all)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .npz file")
    p.add_argument("--restart", action="store_true", help="discard the samples of an earlier run in OUTPUT.parts/")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_sampling(p, seed=42, batch_size=16, what="clips")
    p.set_defaults(func=run_sample_fvd)


def _add_sampling(p: argparse.ArgumentParser, seed: int, batch_size: int = 50, what: str = "images") -> None:
    add_checkpoint_args(p, weights=False)
    add_device_arg(p, dtype=True)
    p.add_argument("--cfg", default=None,
                   help=f"CFG scale, {SAMPLING_HELP}; in [0, 1] = no guidance (default: the model's)")
    p.add_argument("--temperature", default=None, help=f"sampling temperature, {SAMPLING_HELP} (default: the model's)")
    p.add_argument("--top-k", default=None, help=f"top-k filter, {SAMPLING_HELP}; 0 = off, 1 = greedy (default: the "
                   "model's, off unless its config says otherwise)")
    p.add_argument("--top-p", default=None, help=f"nucleus filter, {SAMPLING_HELP}; 1.0 = off (default: the model's, "
                   "off unless its config says otherwise)")
    p.add_argument("--seed", type=int, default=seed, help=f"global seed (default {seed})")
    p.add_argument("--batch-size", type=positive_int, default=batch_size,
                   help=f"{what} per forward batch (default {batch_size})")


def _per_sub_token(text: str | None, kind: type, name: str) -> float | int | tuple | None:
    """``--name 1.5`` → 1.5 (every sub-token); ``--name 1.5,2`` → (1.5, 2.0), one per sub-token."""
    if text is None:
        return None
    try:
        values = tuple(kind(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"--{name} {text!r}: expected a number or one per sub-token, PRE,POST for the released "
                         "models") from None
    return values[0] if len(values) == 1 else values


def _sampling(args: argparse.Namespace) -> dict:
    """The sampling settings, checked before any model is loaded (None = the model's default); their count per
    sub-token is checked against the model by :func:`_per_sub_token_of`."""
    settings = dict(
        cfg_scale=_per_sub_token(args.cfg, float, "cfg"),
        temperature=_per_sub_token(args.temperature, float, "temperature"),
        top_k=_per_sub_token(args.top_k, int, "top-k"),
        top_p=_per_sub_token(args.top_p, float, "top-p"),
    )
    check_sampling(**{k: v for k, v in settings.items() if v is not None})
    return settings


def _per_sub_token_of(sampling: dict, gen: TokenGenerator) -> dict:
    """The settings as one value per sub-token of this model (a number applies to all; None stays the model's
    default for CFG and temperature and becomes the config's value for top-k and top-p, which sample-fid states
    recorded as numbers before the config held them), before any sampling: what ``sample-fid`` records for its
    resume check."""
    m, out = gen.config.sub_tokens, {}
    for name, flag in (("cfg_scale", "cfg"), ("temperature", "temperature"), ("top_k", "top-k"), ("top_p", "top-p")):
        value = sampling[name]
        if value is None and name in ("top_k", "top_p"):
            value = getattr(gen.config, f"sample_{name}")
        if isinstance(value, tuple) and len(value) != m:
            values = ",".join(f"{v:g}" for v in value)
            raise ValueError(f"--{flag} {values}: the model has {m} sub-tokens; give one number for all or {m} "
                             f"comma-separated ones" + (" (PRE,POST)" if m == 2 else ""))
        out[name] = value if value is None or isinstance(value, tuple) else (value,) * m
    return out


def _load(args: argparse.Namespace, device: str | None = None, cls: type[TokenGenerator] = ImageGenerator,
          hint: str = NOT_AR) -> TokenGenerator:
    if device is not None:
        args.device = device
    gen, _ = load_checkpoint(args, cls, hint)
    if gen.tokenizer is None:
        raise ValueError(f"{args.checkpoint} holds no tokenizer (first stage) to decode samples with")
    return gen


def _check_classes(classes: list[int], gen: TokenGenerator) -> None:
    bad = [c for c in classes if not 0 <= c < gen.config.num_classes]
    if bad:
        raise ValueError(f"class ids must lie in [0, {gen.config.num_classes}); got {bad}")


def run_generate(args: argparse.Namespace) -> int:
    sampling = _sampling(args)
    output_dir(args.output)
    gen = _load(args)
    sampling = _per_sub_token_of(sampling, gen)
    _check_classes(args.classes, gen)
    names = read_class_names(resolve_checkpoint(args.checkpoint, gen.model_type), gen.config.num_classes)
    folders = class_folders(args.classes, names)
    tiles = []
    for cls in args.classes:
        images = sample_class(
            gen, cls, args.num_per_class, seed=args.seed, batch_size=args.batch_size, progress=True, **sampling
        )
        for i, im in enumerate(images):
            save_image(im, args.output / folders[cls] / f"{i}.png")
        tiles.extend(images)
        label = f"class {cls}" + (f" ({names[cls]})" if names else "")
        print(f"{label}: {len(images)} images → {args.output / folders[cls]}")
    save_image(image_grid(tiles, columns=args.num_per_class), args.output / "grid.png")
    print(f"grid → {args.output / 'grid.png'}")
    return 0


def run_generate_video(args: argparse.Namespace) -> int:
    from open_magvit2.data.video_io import write_video  # PyAV: the video extra

    sampling = _sampling(args)
    images = None if args.first_frame is None else find_files([args.first_frame], IMAGE_SUFFIXES, "image")
    output_dir(args.output)
    gen = cast(VideoGenerator, _load(args, cls=VideoGenerator, hint=NOT_VIDEO))
    sampling = _per_sub_token_of(sampling, gen)
    _check_classes(args.classes, gen)
    n = args.num_per_class
    if images is None:
        first, files = None, [f"{i}.mp4" for i in range(n)]
    else:  # every image, --num-per-class times in a row, for every class
        first = first_frames([f.path for f in images], gen.frame_size).repeat_interleave(n, dim=0)
        files = [f"{f.stem}_{i}.mp4" for f in images for i in range(n)]
    names = read_class_names(resolve_checkpoint(args.checkpoint, gen.model_type), gen.config.num_classes)
    folders = class_folders(args.classes, names)
    rows = []
    for cls in args.classes:
        clips = sample_class(gen, cls, len(files), seed=args.seed, batch_size=args.batch_size, progress=True,
                             first_frame=first, **sampling)  # uint8 (N, T, H, W, 3)
        for name, clip in zip(files, clips, strict=True):
            path = args.output / folders[cls] / name
            path.parent.mkdir(parents=True, exist_ok=True)  # inside OUT (a first-frame folder's sub-folders)
            write_video(path, clip, fps=args.fps)
        rows.append(clips)
        label = f"class {cls}" + (f" ({names[cls]})" if names else "")
        print(f"{label}: {len(clips)} clips of {gen.num_frames} frames → {args.output / folders[cls]}")
    tiles = np.concatenate(rows)  # (classes · N, T, H, W, 3), a row per class
    grid = np.stack([image_grid(list(tiles[:, t]), columns=len(files)) for t in range(tiles.shape[1])])
    write_video(args.output / "grid.mp4", grid, fps=args.fps)
    print(f"grid → {args.output / 'grid.mp4'}")
    return 0


def first_frames(paths: list[Path], size: int) -> torch.Tensor:
    """The images ``generate-video --first-frame`` continues, as (N, 3, size, size) in [−1, 1]; ``ValueError`` (one
    line) for an image that cannot be read or is not size × size (images are not resized: the first frame of every
    clip is the given image, as the tokenizer reconstructs it)."""
    out = []
    for path in paths:
        image = load_image(path, size=None)
        h, w = image.shape[-2:]
        if (h, w) != (size, size):
            raise ValueError(f"{path}: the first frame is {w}×{h} pixels; this model makes {size}×{size} frames: pass "
                             f"{size}×{size} images (resize or crop them first)")
        out.append(image)
    return torch.cat(out)


def class_folders(classes: list[int], names: list[str] | None) -> dict[int, str]:
    """The output folder of each class: its name made safe for a file name (letters, digits, ``.``, ``-``, ``_``),
    or its id when the checkpoint names no classes or two names would share a folder."""
    if names is None:
        return {c: str(c) for c in classes}
    safe = {c: re.sub(r"[^\w.-]+", "_", names[c]).strip("._") for c in classes}
    clash = {f for f in safe.values() if list(safe.values()).count(f) > 1}
    return {c: f if f and f not in clash else f"{c}_{f}".rstrip("_") for c, f in safe.items()}


def run_sample_fid(args: argparse.Namespace) -> int:
    return _sample_npz(args, ImageGenerator, NOT_AR)


def run_sample_fvd(args: argparse.Namespace) -> int:
    return _sample_npz(args, VideoGenerator, NOT_VIDEO)


def _sample_npz(args: argparse.Namespace, cls: type[TokenGenerator], hint: str) -> int:
    """``sample-fid`` (images) and ``sample-fvd`` (clips): the resumable class-by-class job of ``generator/fid.py``."""
    sampling = _sampling(args)
    output_file(args.output)  # an existing folder is refused, not turned into FOLDER.npz
    out = args.output if args.output.suffix == ".npz" else args.output.with_name(args.output.name + ".npz")
    output_file(out)
    with process_group(args.device, timeout_s=FID_TIMEOUT_S) as ctx:
        gen = _load(args, str(ctx.device), cls, hint)
        if isinstance(gen, VideoGenerator) and gen.num_frames < MIN_FRAMES:
            raise ValueError(f"{args.checkpoint} makes clips of {gen.num_frames} frames; the I3D of FVD needs at "
                             f"least {MIN_FRAMES}, so evaluate-video-generator could not read them")
        sampling = _per_sub_token_of(sampling, gen)
        classes = list(range(gen.config.num_classes)) if args.classes is None else args.classes
        _check_classes(classes, gen)
        if len(set(classes)) != len(classes):
            raise ValueError("--classes lists a class twice; each class is sampled --num-per-class times once")
        path = sample_npz(gen, out, classes, args.num_per_class, seed=args.seed, ctx=ctx,
                          batch_size=args.batch_size, restart=args.restart, show_progress=not args.no_progress,
                          checkpoint=str(args.checkpoint), **sampling)
    if path is not None:
        n = len(classes) * args.num_per_class
        print(f"{n} samples → {path}")
    return 0
