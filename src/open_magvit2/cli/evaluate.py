"""``evaluate-tokenizer``, ``evaluate-generator``, ``evaluate-video``, ``evaluate-video-generator``: the paper's
tables, one command per row, and FVD of generated videos.

Thin recipes over :mod:`open_magvit2.eval`; every metric network is read from a file (``--*-weights``) or the
torch hub cache, never downloaded. See docs/evaluation.md for the command of each table row.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from open_magvit2.cli.common import (
    CHECKPOINT_HELP,
    Unreadable,
    add_device_arg,
    add_strict_arg,
    default_to_demo,
    output_dir,
    positive_int,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate-tokenizer",
        help="rFID, PSNR, SSIM, LPIPS and codebook usage of an image tokenizer on an image folder",
        description="Reconstruct every image of an ImageNet-val style folder (synset sub-folders or flat; sorted "
        "order) with the official preprocessing and metrics (rFID against the same preprocessed real images, "
        "PSNR/SSIM with the official uint8 arithmetic plus an exact variant, LPIPS alex/vgg, codebook usage). "
        "Runs under torchrun, resumes from OUTPUT/state, writes OUTPUT/metrics.json, metrics.md, per_image.csv, "
        "code_usage.png and worst_psnr.png. An image that cannot be read is left out of the metrics, listed in "
        "metrics.json and named at the end (exit 2); a resumed run tries it again.",
    )
    p.add_argument("--checkpoint", "-c", default=None, help=f"{CHECKPOINT_HELP} (default: the bundled demo model)")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="official .ckpt weights (default: ema)")
    p.add_argument("--data", required=True, nargs="+",
                   help="image folders (recursive, e.g. ImageNet val with synset sub-folders), files or quoted globs")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=positive_int, default=None,
                      help="Resize shorter side + CenterCrop (default: the checkpoint's native size, 16 × its "
                      "downsampling factor: 128 for imagenet_128_L, 256 for imagenet_256_L and the pretrain models)")
    size.add_argument("--original-resolution", action="store_true",
                      help="no resize/crop: pad to the tokenizer's factor, crop back (the official protocol), batch 1")
    p.add_argument("--max-images", type=positive_int, default=None, help="evaluate an evenly spaced subset of N images")
    p.add_argument("--batch-size", type=positive_int, default=4, help="images per forward pass (default 4)")
    p.add_argument("--protocol-batch-size", type=positive_int, default=4,
                   help="PSNR/SSIM are means of per-batch means over this many images, as officially (default 4)")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS (the official original-resolution script)")
    p.add_argument("--metric-workers", type=int, default=None,
                   help="processes computing scikit-image SSIM (default: 4 on CUDA, 0 on CPU)")
    p.add_argument("--save-every", type=positive_int, default=2000, help="images per rank between resume states")
    p.add_argument("--restart", action="store_true", help="ignore an existing resume state in OUTPUT/state")
    _add_backbone_args(p, inception=True, i3d=False)
    _add_run_args(p)
    add_strict_arg(p)
    p.set_defaults(func=run_evaluate_tokenizer)

    p = sub.add_parser(
        "evaluate-generator",
        help="FID, sFID, IS, precision and recall of an ADM-format sample .npz against a reference .npz",
        description="The ADM evaluator's protocol with torch-fidelity's TF-compatible InceptionV3: arr_0 uint8 "
        "images, pool_3 FID (reference mu/sigma used when stored), mixed_6/conv sFID, Inception score over splits "
        "of 5000, k=3 precision/recall.",
    )
    p.add_argument("--samples", required=True, help="samples .npz (arr_0: uint8 N×H×W×3)")
    p.add_argument("--reference", required=True, help="reference batch .npz, e.g. VIRTUAL_imagenet256_labeled.npz")
    p.add_argument("--batch-size", type=positive_int, default=100, help="images per Inception pass (default 100)")
    p.add_argument("--pr-float32", action="store_true", help="precision/recall distances in float32 (ADM: float16)")
    _add_backbone_args(p, inception=True, i3d=False, lpips=False)
    _add_run_args(p, output_required=False)
    p.set_defaults(func=run_evaluate_generator)

    p = sub.add_parser(
        "evaluate-video",
        help="rFVD (I3D), per-frame LPIPS and codebook usage of a video tokenizer on a video folder",
        description="Evaluate the centre window of every video of a fixed, sorted clip list: a sub-folder of "
        "--data (--split, default train as the official code), video files, folders and globs, or a split file "
        "(--split-list, e.g. UCF-101 testlist01.txt). Deterministic: centre crop, no random duplicate padding (see "
        "docs/evaluation.md). Runs under torchrun and resumes from OUTPUT/state. A video that cannot be read is left "
        "out of the metrics, listed in metrics.json and named at the end (exit 2).",
    )
    p.add_argument("--checkpoint", "-c", default=None, help=f"{CHECKPOINT_HELP} (default: the bundled demo model)")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="official .ckpt weights (default: ema)")
    p.add_argument("--data", required=True, nargs="+",
                   help="the UCF-101 root (with --split), or video files, folders and quoted globs")
    p.add_argument("--split", default="train",
                   help="sub-folder of a single --data folder to evaluate (default: train); '' = the folder itself")
    p.add_argument("--split-list", default=None, help="file listing videos relative to --data (overrides --split)")
    p.add_argument("--num-frames", type=positive_int, default=17, help="frames per clip (default 17)")
    p.add_argument("--size", type=positive_int, default=128, help="frame size after resize + centre crop (default "
                   "128, the released model's)")
    p.add_argument("--max-clips", type=positive_int, default=None, help="evaluate an evenly spaced subset of N clips")
    p.add_argument("--batch-size", type=positive_int, default=4, help="clips per forward pass (default 4)")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--save-every", type=positive_int, default=500, help="clips per rank between resume states")
    p.add_argument("--restart", action="store_true", help="ignore an existing resume state in OUTPUT/state")
    _add_backbone_args(p, inception=False, i3d=True)
    _add_run_args(p)
    add_strict_arg(p)
    p.set_defaults(func=run_evaluate_video)

    p = sub.add_parser(
        "evaluate-video-generator",
        help="FVD (I3D) of generated clips (.npz) against real videos",
        description="FVD with the I3D of evaluate-video: the samples' uint8 clips and one clip per reference video "
        "(the centre window of the samples' T frames, shorter side resized to their size, centre crop) → per-frame "
        "bilinear 224 → I3D 400 logits → Fréchet distance (the official FVD arithmetic). Writes OUTPUT/metrics.json, "
        "metrics.md and reference_i3d.npz, the reference features, which a later run takes as --reference. Runs "
        "under torchrun. A reference video that cannot be read is left out, listed in metrics.json and named at "
        "the end (exit 2).",
    )
    p.add_argument("--samples", required=True, help="video samples .npz (arr_0: uint8 N×T×H×W×3, labels: N)")
    p.add_argument("--reference", required=True, help="real videos: a folder (class sub-folders allowed), an .npz "
                   "of clips like the samples, or the reference_i3d.npz of an earlier run")
    p.add_argument("--max-reference", type=positive_int, default=None,
                   help="use an evenly spaced subset of N reference videos")
    p.add_argument("--batch-size", type=positive_int, default=16, help="clips per I3D pass (default 16)")
    _add_backbone_args(p, inception=False, i3d=True, lpips=False)
    _add_run_args(p, output_required=False)
    add_strict_arg(p)
    p.set_defaults(func=run_evaluate_video_generator)


def _add_backbone_args(p: argparse.ArgumentParser, *, inception: bool, i3d: bool, lpips: bool = True) -> None:
    g = p.add_argument_group("metric network weights (default: the official file name in the torch hub cache)")
    if inception:
        g.add_argument("--inception-weights", default=None,
                       help="pt_inception-2015-12-05-6726825d.pth or weights-inception-2015-12-05-6726825d.pth")
    if i3d:
        g.add_argument("--i3d-weights", default=None, help="i3d_pretrained_400.pt")
    if lpips:
        g.add_argument("--lpips-alex-weights", default=None, help="alexnet-owt-7be5be79.pth (torchvision)")
        g.add_argument("--lpips-vgg-weights", default=None, help="vgg16-397923af.pth (torchvision)")


def _add_run_args(p: argparse.ArgumentParser, output_required: bool = True) -> None:
    p.add_argument("-o", "--output", required=output_required, help="folder for metrics.json, metrics.md, figures")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data loading processes (default: min(4, CPUs); 0 = main process)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_arg(p)


def _print(result: object, output: str | None) -> None:
    d = {k: v for k, v in result.to_dict().items() if k not in ("protocol", "skipped", "unreadable")}
    print(json.dumps(d, indent=2))
    if output:
        print(f"report: {Path(output) / 'metrics.md'}")


def _check_unreadable(unreadable: list[tuple[str, str]], evaluated: int, total: int, what: str) -> None:
    """The batch rule's last step, once the metrics are written: they cover ``evaluated`` of the ``total`` files;
    a ``ValueError`` names the files that could not be read (exit 2)."""
    check = Unreadable(total, what)
    for name, reason in unreadable:
        check.skip(name, reason)
    if unreadable:
        print(f"the metrics cover {evaluated} of {total} {what}")
    check.check()


def run_evaluate_tokenizer(args: argparse.Namespace) -> int:
    import torch

    from open_magvit2.eval.reconstruction import TokenizerEvalConfig, evaluate_tokenizer

    default_to_demo(args, "image tokenizer")
    output_dir(args.output)
    cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    workers = args.metric_workers if args.metric_workers is not None else (min(4, os.cpu_count() or 1) if cuda else 0)
    cfg = TokenizerEvalConfig(
        checkpoint=args.checkpoint, data=tuple(args.data), output=args.output, size=args.size,
        original_resolution=args.original_resolution, weights=args.weights, batch_size=args.batch_size,
        protocol_batch_size=args.protocol_batch_size, max_images=args.max_images,
        inception_weights=args.inception_weights, lpips_alex_weights=args.lpips_alex_weights,
        lpips_vgg_weights=args.lpips_vgg_weights, lpips=not args.no_lpips, device=args.device,
        num_workers=args.workers, metric_workers=workers, save_every=args.save_every, restart=args.restart,
        progress=not args.no_progress, strict=args.strict,
    )
    result = evaluate_tokenizer(cfg)
    if result is not None:  # rank 0
        _print(result, args.output)
        _check_unreadable(result.unreadable, result.num_images, result.num_images + len(result.unreadable), "images")
    return 0


def run_evaluate_generator(args: argparse.Namespace) -> int:
    from open_magvit2.eval.generation import GeneratorEvalConfig, evaluate_generator

    if args.output:
        output_dir(args.output)
    cfg = GeneratorEvalConfig(
        samples=args.samples, reference=args.reference, output=args.output, inception_weights=args.inception_weights,
        device=args.device, batch_size=args.batch_size, pr_float16=not args.pr_float32, progress=not args.no_progress,
    )
    _print(evaluate_generator(cfg), args.output)
    return 0


def run_evaluate_video(args: argparse.Namespace) -> int:
    from open_magvit2.eval.video import VideoEvalConfig, evaluate_video

    default_to_demo(args, "video tokenizer")
    output_dir(args.output)
    cfg = VideoEvalConfig(
        checkpoint=args.checkpoint, data=tuple(args.data), output=args.output, split=args.split or None,
        split_list=args.split_list, num_frames=args.num_frames, size=args.size, max_clips=args.max_clips,
        weights=args.weights, i3d_weights=args.i3d_weights, lpips_alex_weights=args.lpips_alex_weights,
        lpips_vgg_weights=args.lpips_vgg_weights, lpips=not args.no_lpips, batch_size=args.batch_size,
        device=args.device, num_workers=args.workers, save_every=args.save_every, restart=args.restart,
        progress=not args.no_progress, strict=args.strict,
    )
    result = evaluate_video(cfg)
    if result is None:  # not rank 0
        return 0
    _print(result, args.output)
    if result.skipped:
        print(f"skipped {len(result.skipped)} videos shorter than {args.num_frames} frames (listed in metrics.json)")
    listed = result.num_clips + len(result.skipped) + len(result.unreadable)
    _check_unreadable(result.unreadable, result.num_clips, listed, "videos")
    return 0


def run_evaluate_video_generator(args: argparse.Namespace) -> int:
    from open_magvit2.eval.video_generation import VideoGeneratorEvalConfig, evaluate_video_generator

    if args.output:
        output_dir(args.output)
    cfg = VideoGeneratorEvalConfig(
        samples=args.samples, reference=args.reference, output=args.output, i3d_weights=args.i3d_weights,
        max_reference=args.max_reference, batch_size=args.batch_size, device=args.device, num_workers=args.workers,
        progress=not args.no_progress, strict=args.strict,
    )
    result = evaluate_video_generator(cfg)
    if result is None:  # not rank 0
        return 0
    _print(result, args.output)
    if result.skipped:
        print(f"skipped {len(result.skipped)} reference videos shorter than {result.frames} frames (listed in "
              "metrics.json)")
    listed = result.num_reference + len(result.skipped) + len(result.unreadable)
    _check_unreadable(result.unreadable, result.num_reference, listed, "reference videos")
    return 0
