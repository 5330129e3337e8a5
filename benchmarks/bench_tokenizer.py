"""Tokenizer speed: our encode + decode vs the official forward, same weights, same outputs, same run.

* official-style: ``benchmarks/official_style.py::OfficialStyleTokenizer`` — the official ``VQModel`` inference
  path op for op (swish as ``x·sigmoid(x)``, the eval LFQ with its channels-last strided ``quant`` decoded
  directly, so its decoder runs channels-last until the first upsampler as the official one does), under
  ``torch.no_grad`` like the official scripts;
* ours: ``tok.decode(tok.encode(x))`` under ``torch.inference_mode`` — what ``open-magvit2 reconstruct`` runs:
  channels-last convolutions on CPU, SiLU and residual adds in place (``tokenizer/layers.py``);
* ours, channels-last off (``precision.CHANNELS_LAST["cpu"] = False``): the in-place ops alone, to show what each
  part contributes;
* ``--compile``: ours through ``torch.compile`` (inductor, weights frozen), not used by the package (see
  BENCHMARKS.md).

Model: the released ``imagenet_256_L`` architecture (115 M parameters) with random weights (PyTorch's default
init; speed does not depend on values), float32, ``--batch`` images of 256² (smooth random images in [−1, 1]).
"Equal outputs": the indices of ours and of the official-style forward are identical and the decoded images agree
within the stated max |Δ| (the golden fixtures allow 1e-5 on their tiny models).

Time: wall clock and the main thread's CPU time, variants interleaved, medians of ``--repeats``. Other jobs share
the 2 cores, so the default is ``--threads 1``, where CPU time does not count waiting for a core. Peak memory:
RSS polled every 2 ms above the RSS before the call. Minor page faults of the process per call (median): fresh
activations larger than malloc's mmap threshold are faulted in page by page, which is kernel time in the CPU time.

Usage: ``.venv/bin/python benchmarks/bench_tokenizer.py [--batch 1] [--repeats 5] [--threads 1] [--compile]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from bench_sampling import PeakRSS
from official_style import OfficialStyleTokenizer
from open_magvit2 import precision
from open_magvit2.tokenizer import ImageTokenizer, tokenizer_config


def smooth_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """(B, 3, size, size) in [−1, 1]: noise at 1/16 resolution, bilinearly upsampled, plus a little fine noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, size // 16, size // 16, generator=g) * 2 - 1
    x = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="imagenet_256_L")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (freezing) of ours")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("highest")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {args.threads}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (other processes share these cores)")

    torch.manual_seed(0)
    config = tokenizer_config(args.preset)
    tok = ImageTokenizer(config).eval()
    official = OfficialStyleTokenizer(config).eval()
    official.load_state_dict(tok.state_dict(), strict=True)
    x = smooth_images(args.batch, args.size)

    def ours() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            idx = tok.encode(x)
            return tok.decode(idx), idx

    def ours_nchw() -> tuple[torch.Tensor, torch.Tensor]:
        precision.CHANNELS_LAST["cpu"] = False
        try:
            return ours()
        finally:
            precision.CHANNELS_LAST["cpu"] = True

    def official_style() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return official(x)  # decoded, flat (B·h·w,) indices

    variants = {"official-style": official_style, "ours": ours, "ours, channels-last off": ours_nchw}
    if args.compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        enc = torch.compile(tok.encoder)
        dec = torch.compile(tok.decoder)

        def ours_compiled() -> tuple[torch.Tensor, torch.Tensor]:
            with torch.no_grad():
                idx = tok.quantize(enc(x)).indices
                return dec(tok.quantize.indices_to_codes(idx)), idx

        t = time.perf_counter()
        ours_compiled()
        print(f"compile (first call): {time.perf_counter() - t:.1f} s")
        variants["ours, torch.compile"] = ours_compiled

    wall = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    faults = {k: [] for k in variants}
    peak: dict[str, float] = {}
    out = {}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            with PeakRSS() as mem:
                f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                w, c = time.perf_counter(), time.thread_time()
                out[name] = fn()
                cpu[name].append(time.thread_time() - c)
                wall[name].append(time.perf_counter() - w)
                faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)
            peak[name] = max(peak.get(name, 0.0), mem.mib)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")

    ref_dec, ref_idx = out["official-style"]
    print(f"\n| {args.preset}, batch {args.batch}, {args.size}², float32 | wall s | CPU s | × official (wall) | "
          "× official (CPU) | peak extra RSS | minor page faults | indices equal | max abs Δ decoded |")
    print("|---|---|---|---|---|---|---|---|---|")
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in variants}
    for name in variants:
        dec, idx = out[name]
        same = torch.equal(idx.flatten(), ref_idx.flatten().long())
        delta = (dec.float() - ref_dec).abs().max().item()
        w, c = med[name]
        print(f"| {name} | {w:.2f} | {c:.2f} | {med['official-style'][0] / w:.2f} | {med['official-style'][1] / c:.2f} "
              f"| {peak[name]:.0f} MiB | {statistics.median(faults[name]) / 1e3:.0f} k | {same} | {delta:.1e} |")
    print(f"decoded range {ref_dec.min().item():.2f} .. {ref_dec.max().item():.2f}")
    print("all runs (CPU s): " + "; ".join(f"{k}: {', '.join(f'{v:.2f}' for v in cpu[k])}" for k in variants))


if __name__ == "__main__":
    main()
