"""``reconstruct-video`` and ``tokenize-video``: the video tokenizer on video files, window by window.

A video is decoded lazily and cut into windows of ``--window`` frames (17 for the released model, like Cosmos's
``temporal_window``). Each window is an independent clip for the model (docs/design.md O-27: it is not causal, so
windows must not share state), so peak memory depends on the window, not on the length of the video. The last window is
padded by repeating its last frame; the padding is dropped from every output. Frames larger than 256² pixels
are cut into overlapping spatial tiles (``--tile``), so a 1080p video needs the memory of a 256² one.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from open_magvit2.cli.common import (
    add_checkpoint_args,
    add_device_arg,
    checkpoint_first,
    load_checkpoint,
    output_file,
    positive_float,
    positive_int,
)
from open_magvit2.data.video_io import VideoWriter, iter_frames, probe_video, uint8_to_video, video_to_uint8
from open_magvit2.fileio import atomic_write, write_npy
from open_magvit2.imaging import psnr_uint8
from open_magvit2.progress import progress
from open_magvit2.tokenizer.video import DEFAULT_OVERLAP, DEFAULT_TILE, DEFAULT_WINDOW, VideoTokenizer

AUTO_TILE_AREA = DEFAULT_TILE**2  # --tile auto: tiles for frames with more pixels than one default tile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconstruct-video", help="encode and decode a video; write the reconstruction, a side-by-side mp4, PSNR",
        description="Tokenize and reconstruct a video file window by window. Writes OUTPUT (the reconstruction) and "
        "OUTPUT_compare.mp4 (original | reconstruction), and prints the PSNR of every frame.",
    )
    p.add_argument("video", nargs="+", metavar="[CHECKPOINT] VIDEO", help="input video (any container FFmpeg reads)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .mp4 file")
    p.add_argument("--compare", type=Path, default=None,
                   help="side-by-side output (default: OUTPUT with _compare before the suffix)")
    _add_common(p)
    p.set_defaults(func=run_reconstruct_video)

    p = sub.add_parser(
        "tokenize-video", help="write the token indices of a video as .npy",
        description="Encode a video file window by window. OUTPUT.npy holds int64 indices of shape (n_windows, t, "
        "h, w), LSB-first; OUTPUT.json records the frame count, fps, window and frame size.",
    )
    p.add_argument("video", nargs="+", metavar="[CHECKPOINT] VIDEO", help="input video (any container FFmpeg reads)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .npy file")
    _add_common(p)
    p.set_defaults(func=run_tokenize_video)


def _add_common(p: argparse.ArgumentParser) -> None:
    add_checkpoint_args(p)
    add_device_arg(p, dtype=True)
    p.add_argument("--fps", type=positive_float, default=None, help="resample to this frame rate (default: keep)")
    p.add_argument("--size", type=positive_int, default=None, help="resize the shorter side to SIZE pixels (default: "
                   "keep)")
    p.add_argument("--crop", type=positive_int, default=None,
                   help="centre-crop to CROP×CROP (default: the largest multiple of the downsampling factor)")
    p.add_argument("--window", type=positive_int, default=DEFAULT_WINDOW,
                   help=f"frames per window, 4k+1 for the released model (default: {DEFAULT_WINDOW})")
    p.add_argument("--max-frames", type=positive_int, default=None, help="stop after this many frames")
    p.add_argument("--tile", default="auto", metavar="auto|off|PIXELS",
                   help=f"spatial tiles of PIXELS² (multiple of the downsampling factor) blended at the seams; auto "
                   f"(default): {DEFAULT_TILE}² tiles for frames larger than {DEFAULT_TILE}² pixels")
    p.add_argument("--tile-overlap", type=int, default=DEFAULT_OVERLAP,
                   help=f"pixels shared by neighbouring tiles (default {DEFAULT_OVERLAP})")


def _load(args: argparse.Namespace) -> tuple[VideoTokenizer, torch.device]:
    """The checkpoint (``-c`` or the first positional) and the one video, checked; then the model."""
    checkpoint_first(args, "video")
    if len(args.video) != 1:
        raise ValueError(f"one video at a time, got {len(args.video)}: {' '.join(args.video)}")
    args.video = Path(args.video[0])
    if not args.video.is_file():
        raise FileNotFoundError(f"no such video file: {args.video}")
    if args.tile not in ("auto", "off") and not args.tile.isdigit():
        raise ValueError(f"--tile {args.tile!r}: expected auto, off or a number of pixels")
    tok, device = load_checkpoint(args, VideoTokenizer, "use `reconstruct` / `tokenize` for image checkpoints")
    tok.latent_frames(args.window)  # validates the window: 4k+1 frames for the released model
    return tok, device


def _tile(args: argparse.Namespace, h: int, w: int) -> int | None:
    """The tile size for H×W frames, or None for whole frames."""
    if args.tile == "off" or (args.tile == "auto" and h * w <= AUTO_TILE_AREA):
        return None
    tile = DEFAULT_TILE if args.tile == "auto" else int(args.tile)
    return None if tile >= max(h, w) else tile


def _encode(tok: VideoTokenizer, clip: Tensor, tile: int | None, overlap: int) -> Tensor:
    return tok.encode(clip) if tile is None else tok.encode_tiled(clip, tile, overlap)


def _decode(tok: VideoTokenizer, indices: Tensor, tile: int | None, overlap: int) -> Tensor:
    return tok.decode(indices) if tile is None else tok.decode_tiled(indices, tile, overlap)


def _windows(args: argparse.Namespace, tok: VideoTokenizer) -> tuple[Iterator[tuple[torch.Tensor, int]], int, float]:
    """(uint8 (3, window, H, W) frames, number of real frames) per window; the number of windows; the fps."""
    info = probe_video(args.video)
    fps = args.fps or info.fps or 25.0
    frames = iter_frames(args.video, fps=args.fps, size=args.size, crop=args.crop,
                         multiple=tok.config.spatial_factor, max_frames=args.max_frames)
    estimate = round(info.duration * fps) if info.duration else info.num_frames
    if args.max_frames:
        estimate = min(estimate, args.max_frames) if estimate else args.max_frames
    w = args.window

    def gen() -> Iterator[tuple[torch.Tensor, int]]:
        buf: list[torch.Tensor] = []
        for f in frames:
            buf.append(f)
            if len(buf) == w:
                yield torch.stack(buf, dim=1), w
                buf = []
        if buf:  # pad the last window by repeating its last frame
            yield torch.stack(buf + [buf[-1]] * (w - len(buf)), dim=1), len(buf)

    return gen(), math.ceil(estimate / w) if estimate else 0, fps


@torch.inference_mode()
def run_reconstruct_video(args: argparse.Namespace) -> int:
    compare = args.compare or args.output.with_name(f"{args.output.stem}_compare{args.output.suffix or '.mp4'}")
    output_file(args.output)
    output_file(compare)
    tok, device = _load(args)
    windows, total, fps = _windows(args, tok)
    scores: list[float] = []
    with ExitStack() as stack:  # both files appear only if every window succeeded
        out = stack.enter_context(VideoWriter(args.output, fps))
        side = stack.enter_context(VideoWriter(compare, fps))
        for frames, n in progress(windows, total, "windows", unit="window"):
            tile = _tile(args, *frames.shape[-2:])
            clip = uint8_to_video(frames)[None].to(device)  # (1, 3, window, H, W)
            indices = _encode(tok, clip, tile, args.tile_overlap)
            rec = _decode(tok, indices, tile, args.tile_overlap)[0, :, :n].cpu()
            orig, recon = frames[:, :n].permute(1, 2, 3, 0).numpy(), video_to_uint8(rec)  # (n, H, W, 3) uint8
            out.write(recon)
            side.write(np.concatenate([orig, recon], axis=2))
            for o, r in zip(orig, recon):
                scores.append(psnr_uint8(o, r))
                print(f"frame {len(scores) - 1}\tPSNR {scores[-1]:.2f} dB")
    if not scores:
        raise ValueError(f"no frames decoded from {args.video}")
    print(f"mean PSNR {np.mean(scores):.2f} dB over {len(scores)} frames; wrote {args.output} and {compare}")
    return 0


@torch.inference_mode()
def run_tokenize_video(args: argparse.Namespace) -> int:
    out, meta = args.output, args.output.with_suffix(".json")
    output_file(out)
    output_file(meta)
    tok, device = _load(args)
    windows, total, fps = _windows(args, tok)
    chunks, num_frames, size, tile = [], 0, None, None
    for frames, n in progress(windows, total, "windows", unit="window"):
        tile = _tile(args, *frames.shape[-2:])
        clip = uint8_to_video(frames)[None].to(device)  # (1, 3, window, H, W)
        chunks.append(_encode(tok, clip, tile, args.tile_overlap)[0].cpu())  # (t, h, w)
        num_frames, size = num_frames + n, list(frames.shape[2:])
    if not chunks:
        raise ValueError(f"no frames decoded from {args.video}")
    indices = torch.stack(chunks).numpy()  # (n_windows, t, h, w) int64
    info = {"num_frames": num_frames, "fps": fps, "window": args.window, "frame_size": size,
            "indices_shape": list(indices.shape), "codebook_bits": tok.config.z_channels,
            "tile": tile, "tile_overlap": args.tile_overlap if tile else None, "checkpoint": str(args.checkpoint)}
    write_npy(out, indices)
    atomic_write(meta, lambda p: p.write_text(json.dumps(info)))
    print(f"wrote {out} {tuple(indices.shape)} ({num_frames} frames) and {meta}")
    return 0
