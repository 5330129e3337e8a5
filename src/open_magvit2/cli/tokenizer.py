"""``reconstruct``, ``tokenize``, ``detokenize`` and ``convert``: the image tokenizer from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from open_magvit2.checkpoints.auto import load_pretrained
from open_magvit2.cli.common import add_checkpoint_args, add_device_arg, pick_device, progress, require_checkpoint
from open_magvit2.imaging import crop_box, image_grid, load_image, pad_to_multiple, psnr_uint8, save_image, to_uint8
from open_magvit2.tokenizer import ImageTokenizer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="encode and decode images; write reconstructions, side-by-side PNGs, print PSNR",
        description="Tokenize and reconstruct images. Writes <name>_recon.png and <name>_compare.png "
        "(original | reconstruction) to the output folder and prints the PSNR of each image.",
    )
    p.add_argument("images", nargs="+", type=Path, help="image files (any format PIL reads)")
    _add_common(p)
    p.set_defaults(func=run_reconstruct)

    p = sub.add_parser(
        "tokenize",
        help="write the token indices of images as .npy files",
        description="Encode images to LFQ indices: <name>.npy holds an int64 (h, w) array, LSB-first. With "
        "--original-resolution a <name>.json sidecar records the padding for detokenize.",
    )
    p.add_argument("images", nargs="+", type=Path, help="image files")
    _add_common(p)
    p.set_defaults(func=run_tokenize)

    p = sub.add_parser(
        "detokenize",
        help="decode .npy token files back to PNG images",
        description="Decode int64 index arrays of shape (h, w) or (B, h, w) written by `tokenize` to PNG images.",
    )
    p.add_argument("tokens", nargs="+", type=Path, help=".npy files of indices")
    add_checkpoint_args(p)
    add_device_arg(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.set_defaults(func=run_detokenize)

    p = sub.add_parser(
        "convert",
        help="convert an official .ckpt into a save_pretrained folder (config.json + safetensors)",
        description="Convert an official Open-MAGVIT2 checkpoint (tokenizer, video tokenizer or AR model) into "
        "this package's format. Tokenizers keep one set of weights: EMA by default.",
    )
    p.add_argument("checkpoint", type=Path, help="official .ckpt file")
    p.add_argument("output", type=Path, help="output folder")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="tokenizer weights to keep (default: ema)")
    p.set_defaults(func=run_convert)


def _add_common(p: argparse.ArgumentParser) -> None:
    add_checkpoint_args(p)
    add_device_arg(p)
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--size",
        type=int,
        default=None,
        help="resize the shorter side and centre-crop to SIZE (default: the tokenizer's preset size, 256)",
    )
    size.add_argument(
        "--original-resolution",
        action="store_true",
        help="keep each image's size: pad to a multiple of the downsampling factor, crop back after",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")


def _load_tokenizer(args: argparse.Namespace) -> tuple[ImageTokenizer, torch.device]:
    device = pick_device(args.device)
    tok = load_pretrained(require_checkpoint(args), weights=args.weights)
    if not isinstance(tok, ImageTokenizer):
        raise ValueError(
            f"{args.checkpoint} is not an image tokenizer ({type(tok).__name__}); "
            "use reconstruct-video for video checkpoints"
        )
    return tok.to(device).eval(), device


def _prepare(
    path: Path, args: argparse.Namespace, factor: int
) -> tuple[torch.Tensor, tuple[int, int, int, int] | None]:
    if args.original_resolution:
        x, box = pad_to_multiple(load_image(path, size=None), factor)
        return x, box
    return load_image(path, size=args.size or 256), None


def _unique_stems(paths: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        n = seen.get(p.stem, 0)
        seen[p.stem] = n + 1
        out.append(p.stem if n == 0 else f"{p.stem}_{n}")
    return out


@torch.inference_mode()
def run_reconstruct(args: argparse.Namespace) -> int:
    tok, device = _load_tokenizer(args)
    args.output.mkdir(parents=True, exist_ok=True)
    scores = []
    for path, stem in progress(zip(args.images, _unique_stems(args.images)), len(args.images), "reconstruct"):
        x, box = _prepare(path, args, tok.config.spatial_factor)
        rec = tok.decode(tok.encode(x.to(device))).cpu()
        if box is not None:
            x, rec = crop_box(x, box), crop_box(rec, box)
        orig, recon = to_uint8(x[0]), to_uint8(rec[0])
        save_image(recon, args.output / f"{stem}_recon.png")
        save_image(image_grid([orig, recon], columns=2), args.output / f"{stem}_compare.png")
        score = psnr_uint8(orig, recon)
        scores.append(score)
        print(f"{path}\tPSNR {score:.2f} dB")
    if len(scores) > 1:
        print(f"mean PSNR {np.mean(scores):.2f} dB over {len(scores)} images")
    return 0


@torch.inference_mode()
def run_tokenize(args: argparse.Namespace) -> int:
    tok, device = _load_tokenizer(args)
    args.output.mkdir(parents=True, exist_ok=True)
    for path, stem in progress(zip(args.images, _unique_stems(args.images)), len(args.images), "tokenize"):
        x, box = _prepare(path, args, tok.config.spatial_factor)
        idx = tok.encode(x.to(device))[0].cpu().numpy().astype(np.int64)
        np.save(args.output / f"{stem}.npy", idx)
        if box is not None:
            (args.output / f"{stem}.json").write_text(json.dumps({"crop_box": list(box)}) + "\n")
        print(f"{path}\t{args.output / (stem + '.npy')}\t{idx.shape[0]}×{idx.shape[1]} tokens")
    return 0


@torch.inference_mode()
def run_detokenize(args: argparse.Namespace) -> int:
    tok, device = _load_tokenizer(args)
    args.output.mkdir(parents=True, exist_ok=True)
    for path in progress(args.tokens, len(args.tokens), "detokenize"):
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a .npy index file ({e})") from None
        if arr.ndim not in (2, 3) or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{path}: expected an integer array (h, w) or (B, h, w), got {arr.dtype} {arr.shape}")
        idx = torch.from_numpy(arr.astype(np.int64)).reshape(-1, *arr.shape[-2:]).to(device)
        rec = tok.decode(idx).cpu()
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            rec = crop_box(rec, tuple(json.loads(sidecar.read_text())["crop_box"]))
        for i in range(rec.shape[0]):
            name = f"{path.stem}.png" if rec.shape[0] == 1 else f"{path.stem}_{i}.png"
            save_image(rec[i], args.output / name)
        print(f"{path}\t{rec.shape[0]} image(s) → {args.output}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    model = load_pretrained(args.checkpoint, weights=args.weights)
    model.save_pretrained(args.output)
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.checkpoint} → {args.output} ({type(model).__name__}, {n:,} params)")
    return 0
