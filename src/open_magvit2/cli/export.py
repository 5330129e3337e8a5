"""``export-onnx``: a tokenizer's encoder (images → LFQ indices) or decoder (indices → images) as an ONNX graph with
a dynamic batch, checked against PyTorch with onnxruntime right after the export (``export_onnx.py``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from open_magvit2.cli.common import add_checkpoint_args, load_checkpoint, output_file, positive_int
from open_magvit2.cli.images import check_fits, image_size
from open_magvit2.export_onnx import OPSET, PARTS, check_against_torch, check_opset, export_onnx
from open_magvit2.fileio import atomic_write
from open_magvit2.tokenizer import Tokenizer
from open_magvit2.tokenizer.video import DEFAULT_WINDOW


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-onnx",
        help="export a tokenizer's encoder or decoder to ONNX (dynamic batch), checked against PyTorch",
        description="Write an ONNX graph of an image (or video) tokenizer, float32, opset 18 by default, batch "
        "dimension dynamic, pixel size fixed. encoder: 'images' float32 (B, 3, S, S) in [-1, 1] -> 'indices' int64 "
        "(B, S/f, S/f); decoder: 'indices' -> 'images' float32, not clamped. Video tokenizers take (B, 3, T, S, S) "
        "with T = --frames. After writing, the graph is run with onnxruntime (if installed) on two test inputs "
        "and compared with PyTorch.",
    )
    add_checkpoint_args(p)
    p.add_argument("--part", choices=PARTS, required=True, help="which half of the tokenizer to export")
    p.add_argument("--size", type=positive_int, default=None,
                   help="image side in pixels, a multiple of the downsampling factor (default: the checkpoint's "
                   "native size, 16 × its factor)")
    p.add_argument("--frames", type=positive_int, default=None,
                   help="video tokenizers only: frames per clip, 4k+1 for the released model (default 17)")
    p.add_argument("--opset", type=int, default=OPSET,
                   help=f"ONNX opset, from {OPSET} to the newest the installed onnx package defines (default {OPSET})")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison after export")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .onnx file (a new one)")
    p.set_defaults(func=run_export_onnx, device="cpu", original_resolution=False)


def run_export_onnx(args: argparse.Namespace) -> int:
    output_file(args.output, overwrite=False)
    check_opset(args.opset)  # needs the onnx extra; both checked before anything is loaded
    tok, _ = load_checkpoint(args, Tokenizer, "pass a tokenizer checkpoint (generators are not exported)")
    size = image_size(args, tok.config.spatial_factor)
    if args.frames is not None and tok.config.dims == 2:
        raise ValueError("--frames is for video tokenizers; this checkpoint is an image tokenizer")
    check_fits(tok, torch.device("cpu"), size, size, 2, f"--size {size}", "--size")  # the export's 2 example inputs
    t0 = time.perf_counter()
    checked: list[str] = []

    def export_and_check(p: Path) -> None:  # inside the atomic write: a graph that fails its check is not kept
        export_onnx(tok, args.part, p, size=size, frames=args.frames, opset=args.opset)
        if args.no_check:
            return
        try:
            result = check_against_torch(tok, args.part, p, size=size, frames=args.frames)
        except ImportError:
            checked.append("not checked: install onnxruntime (pip install open-magvit2[onnx]) to compare it with "
                           "PyTorch")
            return
        checked.append(f"onnxruntime vs PyTorch on 2 test inputs: {result['text']}")

    path = atomic_write(args.output, export_and_check)
    mib = path.stat().st_size / 2**20
    frames = f", {args.frames or DEFAULT_WINDOW} frames" if tok.config.dims == 3 else ""
    print(f"wrote {path} ({args.part}, {size}×{size}{frames}, opset {args.opset}, {mib:.1f} MiB) in "
          f"{time.perf_counter() - t0:.1f} s")
    for line in checked:
        print(line)
    return 0
