"""``reconstruct``, ``tokenize``, ``detokenize`` and ``convert``: the image tokenizer from the command line.

Inputs are files, folders (recursive) and globs, read in batches by a DataLoader; outputs keep the inputs' names
(and a folder's sub-folders). Every output file is written atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from open_magvit2.cli.common import (
    Unreadable,
    add_checkpoint_args,
    add_device_arg,
    add_strict_arg,
    checkpoint_first,
    default_to_demo,
    load_checkpoint,
    output_dir,
    positive_int,
)
from open_magvit2.cli.images import (
    INPUTS_HELP,
    add_batch_args,
    check_fits,
    image_batches,
    image_size,
    load_token_file,
    read_sidecar,
    write_sidecar,
)
from open_magvit2.fileio import InputFile, find_files, write_npy
from open_magvit2.imaging import IMAGE_SUFFIXES, crop_box, image_grid, psnr_uint8, save_image, to_uint8
from open_magvit2.progress import progress
from open_magvit2.tokenizer import ImageTokenizer

VIDEO_HINT = "use reconstruct-video / tokenize-video for video checkpoints"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="encode and decode images; write reconstructions, side-by-side PNGs, print PSNR",
        description="Tokenize and reconstruct images. Writes <name>_recon.png and <name>_compare.png "
        "(original | reconstruction) to the output folder, keeping the sub-folders of a folder input, and prints "
        "the PSNR of each image.",
    )
    p.add_argument("inputs", nargs="+", metavar="[CHECKPOINT] INPUT", help=INPUTS_HELP)
    _add_common(p)
    p.set_defaults(func=run_reconstruct)

    p = sub.add_parser(
        "tokenize",
        help="write the token indices of images: one .npy per image, or one sharded token set (--shards)",
        description="Encode images to LFQ indices, int64 (h, w), LSB-first. Default: <name>.npy per image (with "
        "--original-resolution a <name>.json sidecar records the padding for detokenize). --shards: one token set "
        "(shard-*.tokens.npy + index.json, the format generator training reads); resumes finished shards.",
    )
    p.add_argument("inputs", nargs="+", metavar="[CHECKPOINT] INPUT", help=INPUTS_HELP)
    _add_common(p)
    p.add_argument("--shards", action="store_true", help="write one sharded token set instead of .npy files")
    p.add_argument("--shard-size", type=positive_int, default=10000, help="images per shard (default 10000)")
    p.add_argument("--labels", choices=("none", "folders"), default="none",
                   help="with --shards: class labels from the top-level sub-folder (sorted, e.g. ImageNet synsets; "
                   "written to classes.json) or none (-1)")
    p.set_defaults(func=run_tokenize)

    p = sub.add_parser(
        "detokenize",
        help="decode .npy token files back to PNG images",
        description="Decode int64 index arrays of shape (h, w) or (B, h, w) written by `tokenize` to PNG images.",
    )
    p.add_argument("tokens", nargs="+", metavar="[CHECKPOINT] TOKENS", help=".npy files, folders and quoted globs")
    add_checkpoint_args(p)
    add_device_arg(p, dtype=True)
    p.add_argument("--batch-size", type=positive_int, default=8, help="token grids per forward pass (default 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_strict_arg(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.set_defaults(func=run_detokenize)

    p = sub.add_parser(
        "convert",
        help="convert an official .ckpt into a save_pretrained folder (config.json + safetensors)",
        description="Convert an official Open-MAGVIT2 checkpoint (tokenizer, video tokenizer or AR model, a path or "
        "a released name) into this package's format. Tokenizers keep one set of weights: EMA by default.",
    )
    p.add_argument("checkpoint", help="official .ckpt file or released name")
    p.add_argument("output", type=Path, help="output folder")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="tokenizer weights to keep (default: ema)")
    p.set_defaults(func=run_convert)


def _add_common(p: argparse.ArgumentParser) -> None:
    add_checkpoint_args(p)
    add_device_arg(p, dtype=True)
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--size", type=positive_int, default=None,
        help="resize the shorter side and centre-crop to SIZE (default: the checkpoint's native size, 16 × its "
        "downsampling factor: 128 for imagenet_128_L, 256 for imagenet_256_L and the pretrain models)",
    )
    size.add_argument("--original-resolution", action="store_true",
                      help="keep each image's size: pad to a multiple of the downsampling factor, crop back after")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    add_batch_args(p)


def _prepare(args: argparse.Namespace) -> tuple[ImageTokenizer, torch.device, list[InputFile], int | None, Path]:
    """Inputs and output checked first (cheap), then the model loaded."""
    checkpoint_first(args)
    files = find_files(args.inputs, IMAGE_SUFFIXES, "image")
    output_dir(args.output)
    tok, device = load_checkpoint(args, ImageTokenizer, VIDEO_HINT)
    size = image_size(args, tok.config.spatial_factor)
    if size is not None:  # at the original resolution each image has its own size
        batch = min(args.batch_size, len(files))
        lower = "--size or --batch-size" if batch > 1 else "--size"
        check_fits(tok, device, size, size, batch, f"--size {size}", lower)
    return tok, device, files, size, args.output


@torch.inference_mode()
def run_reconstruct(args: argparse.Namespace) -> int:
    tok, device, files, size, out = _prepare(args)
    unreadable = Unreadable(len(files), "images", args.strict)
    scores = []
    for idx, x, boxes in image_batches(args, files, size, tok.config.spatial_factor, "reconstruct", unreadable):
        rec = tok.decode(tok.encode(x.to(device))).cpu()  # (B, 3, H, W), unclamped
        for j, i in enumerate(idx):
            orig, recon = x[j], rec[j]
            if boxes[j] is not None:
                orig, recon = crop_box(orig, boxes[j]), crop_box(recon, boxes[j])
            o8, r8 = to_uint8(orig), to_uint8(recon)
            save_image(r8, out / f"{files[i].stem}_recon.png")
            save_image(image_grid([o8, r8], columns=2), out / f"{files[i].stem}_compare.png")
            scores.append(psnr_uint8(o8, r8))
            print(f"{files[i].path}\tPSNR {scores[-1]:.2f} dB")
    if len(scores) > 1:
        print(f"mean PSNR {np.mean(scores):.2f} dB over {len(scores)} images → {out}")
    unreadable.check()
    return 0


@torch.inference_mode()
def run_tokenize(args: argparse.Namespace) -> int:
    if args.shards and args.original_resolution:
        raise ValueError("--shards needs one token grid size for all images: pass --size, not --original-resolution")
    if args.labels != "none" and not args.shards:
        raise ValueError("--labels goes with --shards (per-image .npy files carry no label)")
    if args.shards:
        return _tokenize_set(args)
    tok, device, files, size, out = _prepare(args)
    unreadable = Unreadable(len(files), "images", args.strict)
    for idx, x, boxes in image_batches(args, files, size, tok.config.spatial_factor, "tokenize", unreadable):
        indices = tok.encode(x.to(device)).cpu().numpy().astype(np.int64)  # (B, h, w)
        for j, i in enumerate(idx):
            target = out / f"{files[i].stem}.npy"
            write_npy(target, indices[j])
            write_sidecar(target.with_suffix(".json"), indices[j], boxes[j])
            print(f"{files[i].path}\t{target}\t{indices.shape[1]}×{indices.shape[2]} tokens")
    unreadable.check()
    return 0


def _tokenize_set(args: argparse.Namespace) -> int:
    """``--shards``: one token set, written by the one writer of the format, ``tokenize-dataset``'s
    (``data/pretokenize.py``): the same shards, index, tokenizer copy and resume rule."""
    from open_magvit2.data.pretokenize import tokenize_dataset  # imports the data pipelines: only for --shards

    checkpoint_first(args)
    if len(args.inputs) != 1:
        raise ValueError(f"--shards reads one image folder or WebDataset shards (a .tar, a folder of them or a "
                         f"brace pattern), got {len(args.inputs)} inputs; put the images in one folder")
    if args.dtype != "fp32":
        raise ValueError("--shards encodes in float32, so the token set holds exactly the indices tokenize gives; "
                         "drop --dtype")
    output_dir(args.output)
    default_to_demo(args, "image tokenizer")
    index = tokenize_dataset(args.checkpoint, args.inputs[0], args.size, args.output, batch_size=args.batch_size,
                             shard_size=args.shard_size, weights=args.weights, device=args.device,
                             num_workers=max(0, args.workers), labels=args.labels, strict=args.strict,
                             verbose=not args.no_progress)
    what = "clips" if "frames" in index else "images"  # a video tokenizer makes a video token set
    print(f"{index['num_samples']} {what} → {args.output} ({len(index['shards'])} shard(s), grid "
          f"{'×'.join(str(g) for g in index['grid'])})")
    unreadable = Unreadable(index.get("num_videos", index["num_samples"] + len(index["skipped"])),
                            "videos" if "frames" in index else "images")
    for key, reason in index["skipped"]:  # the batch rule: the set is finished without them, exit 2
        unreadable.skip(key, reason)
    unreadable.check()
    return 0


@torch.inference_mode()
def run_detokenize(args: argparse.Namespace) -> int:
    checkpoint_first(args, "tokens")
    files = find_files(args.tokens, (".npy",), "token")
    out = output_dir(args.output)
    tok, device = load_checkpoint(args, ImageTokenizer, VIDEO_HINT)
    unreadable = Unreadable(len(files), "token files", args.strict)
    for f in progress(files, len(files), "detokenize", enabled=not args.no_progress, unit="file"):
        written: list[Path] = []
        try:  # a file that cannot be read or decoded: the batch rule, and none of its images is left
            arr = load_token_file(f.path)
            box = read_sidecar(f.path.with_suffix(".json"), arr)
            grids = torch.from_numpy(arr).reshape(-1, *arr.shape[-2:])  # (B, h, w)
            for start in range(0, len(grids), args.batch_size):
                rec = tok.decode(grids[start : start + args.batch_size].to(device)).cpu()
                if box is not None:
                    rec = crop_box(rec, box)
                for j, image in enumerate(rec, start):
                    written.append(save_image(image, out / (f"{f.stem}.png" if arr.ndim == 2 else f"{f.stem}_{j}.png")))
        except (ValueError, TypeError) as e:
            for path in written:
                path.unlink(missing_ok=True)
            unreadable.skip(f.name, str(e), f.path)
            continue
        print(f"{f.path}\t{len(grids)} image(s) → {out}")
    unreadable.check()
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from open_magvit2.registry import load_pretrained

    output_dir(args.output)
    model = load_pretrained(args.checkpoint, weights=args.weights)
    model.save_pretrained(args.output)
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.checkpoint} → {args.output} ({type(model).__name__}, {n:,} params)")
    return 0
