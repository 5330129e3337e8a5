"""How much bf16 changes the tokenizer: index flips relative to float32, decode error, and speed on this CPU.

Models: the released ``imagenet_256_L`` and ``imagenet_128_L`` architectures with random weights (PyTorch's
default init; no released weights are available offline), loaded twice through ``from_config_and_weights``:
float32 and ``dtype=torch.bfloat16`` (every weight bf16; the AGN statistics, GroupNorm statistics and LFQ sign
decisions as ``precision.py`` says). Inputs: ``--images`` smooth random images (noise at 1/16 resolution,
upsampled, plus fine noise) at the preset's size.

Reported per model:

* token agreement: the fraction of tokens whose full 18-bit index is the same in bf16 and float32, and the bit
  flip rate (the fraction of the 18 sign bits that differ), with the float32 |z| quantiles: bits flip where the
  encoder output is near 0, so the rate depends on how much of z lies near 0 (for trained weights the paper's
  fixtures put every |z| of their inputs above 1e-4; random weights are a stand-in);
* decode error: bf16 decode vs float32 decode of the *same* (float32) indices, max and mean |Δ| over outputs of
  range about ±2, i.e. the decoder's own bf16 error;
* time: encode + decode, bf16 and float32 interleaved, CPU time of one thread (this CPU has AMX-BF16 units).

Usage: ``.venv/bin/python benchmarks/bench_bf16.py [--images 4] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_tokenizer import smooth_images
from open_magvit2.tokenizer import ImageTokenizer, tokenizer_config

SIZES = {"imagenet_256_L": 256, "imagenet_128_L": 128}


def measure(preset: str, images: int, repeats: int) -> dict:
    torch.manual_seed(0)
    config = tokenizer_config(preset)
    state = ImageTokenizer(config).state_dict()
    fp32 = ImageTokenizer.from_config_and_weights(config, state)
    bf16 = ImageTokenizer.from_config_and_weights(config, state, dtype=torch.bfloat16)
    x = smooth_images(images, SIZES[preset], seed=1)
    with torch.inference_mode():
        z = fp32.encode_latent(x)
        i32, i16 = fp32.encode(x), bf16.encode(x)
        d32, d16 = fp32.decode(i32), bf16.decode(i32).float()
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for _ in range(repeats):
            for name, tok in (("fp32", fp32), ("bf16", bf16)):
                t = time.thread_time()
                tok.decode(tok.encode(x))
                times[name].append(time.thread_time() - t)
    bits = torch.arange(config.z_channels)[:, None, None]
    flips = ((i16[:, None] >> bits) ^ (i32[:, None] >> bits)) & 1
    q = torch.quantile(z.abs().flatten()[:1_000_000], torch.tensor([0.001, 0.01, 0.5]))
    return {
        "tokens": i32.numel(),
        "agree": (i16 == i32).float().mean().item(),
        "flip": flips.float().mean().item(),
        "z_q": q.tolist(),
        "dec_max": (d16 - d32).abs().max().item(),
        "dec_mean": (d16 - d32).abs().mean().item(),
        "range": (d32.min().item(), d32.max().item()),
        "t32": statistics.median(times["fp32"]),
        "t16": statistics.median(times["bf16"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("highest")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {args.threads}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print("\n| model (random weights) | tokens | same index | bit flips | float32 |z| 0.1 % / 1 % / median | "
          "bf16 decode max / mean abs Δ (range) | CPU s fp32 / bf16 |")
    print("|---|---|---|---|---|---|---|")
    for preset in args.presets:
        r = measure(preset, args.images, args.repeats)
        zq = " / ".join(f"{v:.2g}" for v in r["z_q"])
        print(f"| {preset} | {r['tokens']} | {r['agree']:.2%} | {r['flip']:.3%} | {zq} | {r['dec_max']:.3f} / "
              f"{r['dec_mean']:.4f} ({r['range'][0]:.1f}..{r['range'][1]:.1f}) | {r['t32']:.2f} / {r['t16']:.2f} |")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
