"""Spatial tiling of the video tokenizer: the seam error on a real clip, and peak memory tiled vs whole frames.

The clip: a real photograph (scikit-image's ``rocket``, 427×640) filmed by a panning, slowly zooming virtual
camera, 17 frames of 128×192 (no real video ships offline; this has real image statistics and real motion).

The model: no released weights are available here, so a ``ucf101_128_L_tiny`` video tokenizer (the released
levels: 8× spatial, 2 temporal downsamplings, 17 → 5 frames; ch=32) is first trained for ``--train-steps`` Adam
steps to reconstruct random 5×32×32 crops of the clip (MSE through the LFQ straight-through codes). Its
reconstructions are then related to the input, so seams would show; the absolute PSNRs are those of a tiny,
briefly trained model, not of ``video_128_262144``.

Measured, for each overlap (0 = plain tiles, no blending; 16; 32) with 64² tiles (3×2 tiles; the frames are
kept small so that a 2-core CPU finishes in minutes: the tile/frame ratio is what matters), against untiled:
* tokens: the fraction of latent positions whose token equals the untiled one (all / within 2 positions of a seam);
* decode of the *untiled* tokens in tiles: PSNR of the tiled decode against the untiled decode, in the seam band
  (pixels within 4 of a tile boundary or overlap centre) and elsewhere — the blending error alone;
* end to end (tiled encode + tiled decode): PSNR against the original frames, next to the untiled PSNR.

Peak memory: encode + decode of one 17×256×384 window, untiled and in 64² tiles (overlap 16), each in a fresh
subprocess (the rise of the peak RSS over the resident size after building the model and input and a small warm-up call;
``benchmarks/peak_memory.py``), with the wall clock of the call at torch's default thread count, the ratio tiled /
whole frames (the baseline: the official code has no tiles) and the fraction of the limit: FLOPs (``limits
.count_flops`` of encoder + decoder on 'meta' tensors of the frame or tile shapes: the convolutions; tiled = tiles
× one tile) / wall clock / the float32 GEMM rate measured in the same run (``benchmarks/limits.py``).

Usage: ``.venv/bin/python benchmarks/bench_video_tiling.py [--train-steps 150] [--threads N] [--no-memory]``.
Measured on CPU only (no GPU here).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch

import limits
import peak_memory

TILE, OVERLAPS, CROP = 64, (0, 16, 32), 32
FRAMES, H, W = 17, 128, 192


def real_clip() -> torch.Tensor:
    """(1, 3, 17, 128, 192) in [−1, 1]: a pan with a slow zoom over scikit-image's ``rocket`` photograph."""
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(data.rocket())  # 427×640 RGB
    frames = []
    for t in range(FRAMES):
        scale = 1.0 - 0.01 * t  # zoom in by 16% over the clip
        cw, ch = 600 * scale, 400 * scale
        x0, y0 = 4 + 1.5 * t + (600 - cw) / 2, 10 + 0.5 * t + (400 - ch) / 2
        crop = photo.resize((W, H), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
        frames.append(np.asarray(crop))
    u8 = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2)  # (3, T, H, W)
    return (u8.float() / 127.5 - 1)[None]


def train(tok, clip: torch.Tensor, steps: int) -> list[float]:
    """Adam on MSE(reconstruction) + 0.25·commitment for random 5×32×32 crops; returns the loss curve."""
    opt = torch.optim.Adam(tok.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    tok.train()
    losses = []
    for _ in range(steps):
        t0 = int(torch.randint(0, FRAMES - 4, (1,), generator=g))
        y0 = int(torch.randint(0, H - CROP, (1,), generator=g))
        x0 = int(torch.randint(0, W - CROP, (1,), generator=g))
        x = clip[:, :, t0 : t0 + 5, y0 : y0 + CROP, x0 : x0 + CROP]
        out = tok(x)
        loss = (out.reconstruction - x).square().mean() + 0.25 * out.quantizer.commitment
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """PSNR in dB of images in [−1, 1] (range 2), optionally over the pixels where ``mask`` (H, W) is set."""
    d = (a.clamp(-1, 1) - b.clamp(-1, 1)).square()
    mse = float(d.mean() if mask is None else d[..., mask].mean())
    return float("inf") if mse == 0 else 10 * math.log10(4 / mse)


def seam_mask(length: int, tile: int, overlap: int, band: int) -> torch.Tensor:
    """Pixels within ``band`` of a tile boundary (overlap 0) or of the overlap centre, along one axis."""
    from open_magvit2.tokenizer.video import seams, tile_starts

    m = torch.zeros(length, dtype=torch.bool)
    for c in seams(tile_starts(length, tile, overlap), tile):
        m[max(0, c - band) : c + band] = True
    return m


def quality(tok, clip: torch.Tensor) -> list[dict]:
    from open_magvit2.tokenizer.video import decode_tiled, encode_tiled

    f = tok.config.spatial_factor
    with torch.no_grad():
        idx = tok.encode(clip)
        rec = tok.decode(idx)
        rows = [{"overlap": "untiled", "psnr_orig": psnr(rec, clip)}]
        for ov in OVERLAPS:
            my, mx = seam_mask(H, TILE, ov, 4), seam_mask(W, TILE, ov, 4)
            band = my[:, None] | mx[None, :]  # (H, W)
            ly, lx = seam_mask(H // f, TILE // f, ov // f, 2), seam_mask(W // f, TILE // f, ov // f, 2)
            lband = ly[:, None] | lx[None, :]
            tidx = encode_tiled(tok, clip, TILE, ov)
            same = (tidx == idx)
            dec = decode_tiled(tok, idx, TILE, ov)  # the untiled tokens, decoded in tiles
            rows.append({
                "overlap": ov, "tokens_same": float(same.float().mean()),
                "tokens_same_seams": float(same[..., lband].float().mean()),
                "decode_psnr_seams": psnr(dec, rec, band), "decode_psnr_rest": psnr(dec, rec, ~band),
                "decode_maxdiff_seams": float((dec - rec).abs()[..., band].max()),
                "psnr_orig": psnr(decode_tiled(tok, tidx, TILE, ov), clip),
            })
    return rows


def memory_worker(case: str) -> None:
    from open_magvit2.tokenizer.presets import tokenizer_config
    from open_magvit2.tokenizer.video import VideoTokenizer, decode_tiled, encode_tiled

    torch.manual_seed(0)
    tok = VideoTokenizer(tokenizer_config("ucf101_128_L_tiny")).eval()
    x = torch.empty(1, 3, FRAMES, 2 * H, 2 * W).uniform_(-1, 1)  # no temporaries above the baseline
    with torch.inference_mode():
        tok.decode(tok.encode(x[:, :, :5, :32, :32]))  # warm-up: oneDNN / thread pools
        base = peak_memory.reset()
        t0 = time.perf_counter()
        if case == "untiled":
            tok.decode(tok.encode(x))
        else:
            decode_tiled(tok, encode_tiled(tok, x, TILE, 16), TILE, 16)
        seconds = time.perf_counter() - t0
    print(json.dumps({"case": case, "peak_mib": peak_memory.peak_since(base), "seconds": seconds}))


def window_flops(height: int, width: int) -> int:
    """FLOPs of encode + decode of one 17 × height × width window, counted on 'meta' tensors (no compute)."""
    from open_magvit2.tokenizer.presets import tokenizer_config
    from open_magvit2.tokenizer.video import VideoTokenizer

    with torch.device("meta"):
        tok = VideoTokenizer(tokenizer_config("ucf101_128_L_tiny"))
        x = torch.empty(1, 3, FRAMES, height, width)
    with torch.inference_mode():
        return limits.count_flops(lambda: tok.decode_codes(tok.encode_latent(x)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        memory_worker(args.memory_worker)
        return

    from open_magvit2.tokenizer.presets import tokenizer_config
    from open_magvit2.tokenizer.video import VideoTokenizer

    print(limits.machine_header())
    torch.manual_seed(0)
    tok = VideoTokenizer(tokenizer_config("ucf101_128_L_tiny"))
    clip = real_clip()
    t0 = time.perf_counter()
    losses = train(tok, clip, args.train_steps)
    tok.eval()
    print(f"trained {args.train_steps} steps in {time.perf_counter() - t0:.0f} s: loss {np.mean(losses[:20]):.4f} → "
          f"{np.mean(losses[-20:]):.4f}")
    rows = quality(tok, clip)
    print(f"\nseams: {TILE}² tiles on a 17×{H}×{W} clip (rocket photo, pan + zoom), ucf101_128_L_tiny trained "
          f"{args.train_steps} steps; {torch.get_num_threads()} threads\n")
    print("| overlap (px) | tokens = untiled | at seams | decode PSNR vs untiled, seam band | elsewhere | "
          "max |Δ| at seams | PSNR vs original |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["overlap"] == "untiled":
            print(f"| untiled (reference) | | | | | | {r['psnr_orig']:.2f} |")
            continue
        print(f"| {r['overlap']} | {100 * r['tokens_same']:.1f}% | {100 * r['tokens_same_seams']:.1f}% | "
              f"{r['decode_psnr_seams']:.2f} | {r['decode_psnr_rest']:.2f} | {r['decode_maxdiff_seams']:.3f} | "
              f"{r['psnr_orig']:.2f} |")
    if args.no_memory:
        return
    mem = {}
    for case in ("untiled", "tiled"):
        run = subprocess.run([sys.executable, __file__, "--memory-worker", case, "--threads",
                              str(torch.get_num_threads())], capture_output=True, text=True, check=True)
        mem[case] = json.loads(run.stdout.strip().splitlines()[-1])
    from open_magvit2.tokenizer.video import tile_starts

    gemm = limits.gemm_flops_per_s(torch.float32)
    tiles = len(tile_starts(2 * H, TILE, 16)) * len(tile_starts(2 * W, TILE, 16))
    flops = {"untiled": window_flops(2 * H, 2 * W), "tiled": tiles * window_flops(TILE, TILE)}
    print(f"\nmemory: encode + decode of one 17×{2 * H}×{2 * W} window (ucf101_128_L_tiny, random init); float32 GEMM "
          f"{gemm / 1e9:.1f} GFLOP/s measured now\n")
    print("| case | wall s | × whole frames (wall) | GFLOP | fraction of fp32 GEMM | Δ peak MiB |")
    print("|---|---|---|---|---|---|")
    for case, label in (("untiled", "whole frames"), ("tiled", f"{TILE}² tiles ({tiles}), overlap 16")):
        sec = mem[case]["seconds"]
        print(f"| {label} | {sec:.1f} | {sec / mem['untiled']['seconds']:.2f} | {flops[case] / 1e9:.0f} | "
              f"{flops[case] / sec / gemm:.0%} | {mem[case]['peak_mib']:.0f} |")
    print(f"\npeak memory whole / tiled: {mem['untiled']['peak_mib'] / max(mem['tiled']['peak_mib'], 1):.1f}×; "
          f"time tiled / whole: {mem['tiled']['seconds'] / mem['untiled']['seconds']:.2f}×")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
