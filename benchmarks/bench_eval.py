"""Throughput of ``evaluate-tokenizer`` against the tokenizer alone (the evaluation overhead), and peak memory.

Random-init tokenizer (a ``*_tiny`` preset) and random-init metric networks with the official architectures
(InceptionV3, LPIPS AlexNet + VGG16): the cost per image is the real one, the numbers are meaningless.

    .venv/bin/python benchmarks/bench_eval.py [--preset imagenet_256_L_tiny --size 256 --images 16 --device cpu]

Rows: tokenizer forward only (baseline), each metric network on its own, and the full pipeline (file reading,
preprocessing, reconstruction, rFID features, PSNR/SSIM official + exact, LPIPS alex + vgg, usage, reports).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, batches: list[torch.Tensor], device: torch.device) -> float:
    """Images per second of ``fn`` over the batches (one warm-up batch first)."""
    with torch.inference_mode():
        fn(batches[0])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for b in batches:
            fn(b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return sum(len(b) for b in batches) / (time.perf_counter() - t0)


def write_images(folder: Path, n: int) -> None:
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field"]
    for i in range(n):
        a = getattr(data, names[i % len(names)])()[..., :3]
        a = np.roll(a, 17 * i, axis=1)  # distinct images
        (folder / f"n{i % 4:04d}").mkdir(exist_ok=True)
        Image.fromarray(a).save(folder / f"n{i % 4:04d}" / f"img{i:03d}.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="imagenet_256_L_tiny")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    from open_magvit2.eval.backbones import write_random_backbones
    from open_magvit2.eval.reconstruction import ReconstructionNets, TokenizerEvalConfig, evaluate_tokenizer
    from open_magvit2.tokenizer import ImageTokenizer, tokenizer_config

    device = torch.device(args.device)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        w = write_random_backbones(tmp / "weights")
        (tmp / "val").mkdir()
        write_images(tmp / "val", args.images)
        tok = ImageTokenizer(tokenizer_config(args.preset)).eval()
        tok.save_pretrained(tmp / "tok")
        cfg = TokenizerEvalConfig(
            checkpoint=str(tmp / "tok"), data=str(tmp / "val"), output=str(tmp / "out"), size=args.size,
            batch_size=args.batch_size, num_workers=2, device=args.device, restart=True, progress=False,
            inception_weights=str(w["inception"]), lpips_alex_weights=str(w["alex"]), lpips_vgg_weights=str(w["vgg"]),
        )
        nets = ReconstructionNets.load(cfg, device)
        tok = tok.to(device)
        g = torch.Generator().manual_seed(0)
        batches = [(torch.rand(args.batch_size, 3, args.size, args.size, generator=g) * 2 - 1).to(device)
                   for _ in range(max(1, args.images // args.batch_size))]
        rows = [("tokenizer forward (baseline)", timed(tok, batches, device), peak_rss_mib())]
        rows.append(("InceptionV3 rFID features (real + rec)",
                     timed(lambda b: (nets.inception.fid_features(b), nets.inception.fid_features(b)), batches, device),
                     peak_rss_mib()))
        rows.append(("LPIPS alex + vgg", timed(lambda b: (nets.alex(b, b), nets.vgg(b, b)), batches, device),
                     peak_rss_mib()))
        evaluate_tokenizer(replace(cfg, max_images=args.batch_size), nets=nets)  # warm-up: imports, first calls
        result = evaluate_tokenizer(cfg, nets=nets)
        rows.append(("evaluate-tokenizer (all metrics)", result.images_per_second, peak_rss_mib()))

    base = rows[0][1]
    print(f"\nevaluate-tokenizer throughput: {args.preset} at {args.size}², batch {args.batch_size}, {args.images} "
          f"images, {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| stage | images/s | × tokenizer time | peak RSS (MiB) |")
    print("|---|---|---|---|")
    for name, ips, rss in rows:
        print(f"| {name} | {ips:.2f} | {base / ips:.2f} | {rss:.0f} |")
    if device.type == "cuda":
        print(f"\npeak CUDA memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
