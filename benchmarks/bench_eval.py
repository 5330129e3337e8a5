"""Throughput of ``evaluate-tokenizer`` against the tokenizer alone (the evaluation overhead), and the peak memory
of every stage, each stage in its own process.

Random-init tokenizer (a ``*_tiny`` preset) and random-init metric networks with the official architectures
(InceptionV3, LPIPS AlexNet + VGG16): the cost per image is the real one, the metric values are meaningless.

    .venv/bin/python benchmarks/bench_eval.py [--preset imagenet_256_L_tiny --size 256 --images 16 --device cpu]

Stages: the tokenizer forward alone (baseline), each metric network alone on the same batches, and the full
pipeline (file reading in 2 loader processes, preprocessing, reconstruction, rFID features, PSNR/SSIM official +
exact, LPIPS alex + vgg, usage, reports). Each stage runs in a fresh subprocess that loads only what the stage
needs and makes one warm-up call; "Δ peak" is the rise of the peak RSS during the measured run over the resident
size after loading and warm-up (the stage's working memory; ``benchmarks/peak_memory.py``), "process peak" that
peak itself (what the stage needs in all, weights and runtime included). The pipeline's loader processes are
separate processes and not counted.

Time: wall clock at torch's default thread count; "× tokenizer time" is the ratio to the tokenizer forward alone in
the same run. Fraction of the limit (network stages): FLOPs per batch (``limits.count_flops``: convolutions and
matmuls) × batches / wall clock / the float32 GEMM rate that the stage's process measures just before its run at
the same thread count (``benchmarks/limits.py``). The full pipeline has none: much of it is not a network (file
decoding, SSIM, reports).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import limits
import peak_memory

STAGES = {
    "tokenizer": "tokenizer forward (baseline)",
    "inception": "InceptionV3 rFID features (real + rec)",
    "lpips": "LPIPS alex + vgg",
    "pipeline": "evaluate-tokenizer (all metrics)",
}


def write_images(folder: Path, n: int) -> None:
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field"]
    for i in range(n):
        a = getattr(data, names[i % len(names)])()[..., :3]
        a = np.roll(a, 17 * i, axis=1)  # distinct images
        (folder / f"n{i % 4:04d}").mkdir(exist_ok=True)
        Image.fromarray(a).save(folder / f"n{i % 4:04d}" / f"img{i:03d}.png")


def _timed(fn, batches: list[torch.Tensor], device: torch.device) -> tuple[float, float, float, float]:
    """(images per second, resident MiB before, Δ peak MiB, fraction of the GEMM limit) of ``fn`` over the batches,
    after a warm-up batch."""
    with torch.inference_mode():
        fn(batches[0])
        flops = limits.count_flops(fn, batches[0]) * len(batches)
        gemm = limits.gemm_flops_per_s(torch.float32, device)
        base = peak_memory.reset()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for b in batches:
            fn(b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    return sum(len(b) for b in batches) / seconds, base, peak_memory.peak_since(base), flops / seconds / gemm


def worker(stage: str, tmp: Path, args: argparse.Namespace) -> dict:
    from dataclasses import replace

    from open_magvit2.eval.reconstruction import ReconstructionNets, TokenizerEvalConfig, evaluate_tokenizer
    from open_magvit2.tokenizer import ImageTokenizer

    device = torch.device(args.device)
    w = json.loads((tmp / "weights.json").read_text())
    cfg = TokenizerEvalConfig(
        checkpoint=str(tmp / "tok"), data=str(tmp / "val"), output=str(tmp / f"out-{stage}"), size=args.size,
        batch_size=args.batch_size, num_workers=2, device=args.device, restart=True, progress=False,
        inception_weights=w["inception"], lpips_alex_weights=w["alex"], lpips_vgg_weights=w["vgg"],
        lpips=stage in ("lpips", "pipeline"),
    )
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(args.batch_size, 3, args.size, args.size, generator=g) * 2 - 1).to(device)
               for _ in range(max(1, args.images // args.batch_size))]
    if stage == "tokenizer":
        tok = ImageTokenizer.from_pretrained(cfg.checkpoint).to(device).eval()
        ips, base, delta, frac = _timed(tok, batches, device)
    elif stage == "inception":
        net = ReconstructionNets.load(replace(cfg, lpips=False), device).inception
        ips, base, delta, frac = _timed(lambda b: (net.fid_features(b), net.fid_features(b)), batches, device)
    elif stage == "lpips":
        nets = ReconstructionNets.load(cfg, device)
        ips, base, delta, frac = _timed(lambda b: (nets.alex(b, b), nets.vgg(b, b)), batches, device)
    else:
        nets = ReconstructionNets.load(cfg, device)
        evaluate_tokenizer(replace(cfg, max_images=args.batch_size), nets=nets)  # warm-up: imports, first calls
        base = peak_memory.reset()
        ips = evaluate_tokenizer(cfg, nets=nets).images_per_second
        delta = peak_memory.peak_since(base)
        frac = None
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"ips": ips, "delta_mib": delta, "peak_mib": base + delta, "cuda_mib": cuda, "fraction": frac,
            "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="imagenet_256_L_tiny")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--worker", nargs=2, metavar=("STAGE", "TMP"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1]), args)))
        return

    from open_magvit2.eval.backbones import write_random_backbones
    from open_magvit2.tokenizer import ImageTokenizer, tokenizer_config

    print(limits.machine_header())
    torch.manual_seed(0)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        w = write_random_backbones(tmp / "weights")
        (tmp / "weights.json").write_text(json.dumps({k: str(v) for k, v in w.items()}))
        (tmp / "val").mkdir()
        write_images(tmp / "val", args.images)
        ImageTokenizer(tokenizer_config(args.preset)).save_pretrained(tmp / "tok")
        passthrough = ["--preset", args.preset, "--size", str(args.size), "--images", str(args.images),
                       "--batch-size", str(args.batch_size), "--device", args.device]
        for stage in STAGES:
            run = subprocess.run([sys.executable, __file__, *passthrough, "--worker", stage, str(tmp)],
                                 capture_output=True, text=True, check=True)
            rows[stage] = json.loads(run.stdout.strip().splitlines()[-1])

    base = rows["tokenizer"]["ips"]
    print(f"\nevaluate-tokenizer throughput: {args.preset} at {args.size}², batch {args.batch_size}, {args.images} "
          f"images, {args.device}, {rows['tokenizer']['threads']} threads in each stage's process; one process per "
          "stage\n")
    cuda = args.device.startswith("cuda")
    print("| stage | images/s | × tokenizer time | fraction of fp32 GEMM | Δ peak RSS (MiB) | process peak RSS (MiB) |"
          + (" peak CUDA (MiB) |" if cuda else ""))
    print("|---|---|---|---|---|---|" + ("---|" if cuda else ""))
    for stage, name in STAGES.items():
        r = rows[stage]
        frac = "—" if r["fraction"] is None else f"{r['fraction']:.0%}"
        print(f"| {name} | {r['ips']:.2f} | {base / r['ips']:.2f} | {frac} | {r['delta_mib']:.0f} | "
              f"{r['peak_mib']:.0f} |"
              + (f" {r['cuda_mib']:.0f} |" if cuda else ""))
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
