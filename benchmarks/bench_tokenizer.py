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

Models: the released ``imagenet_256_L`` architecture (115 M parameters) at ``--batch`` images of 256², then
``imagenet_128_L`` at 128² (``--presets``), random weights (PyTorch's default init; speed does not depend on
values), float32, smooth random images in [−1, 1]. "Equal outputs": the indices of ours and of the official-style
forward are identical (asserted) and the decoded images agree within the stated max |Δ| (the golden fixtures allow
1e-5 on their tiny models).

Time: wall clock at torch's default thread count (``--threads`` to change it), variants interleaved, medians of
``--repeats``; then the process CPU time (all threads). Ratio = official-style / ours, same run. Fraction of the
limit: FLOPs of one encode + decode (``limits.count_flops``: the convolutions) / wall clock / the float32 GEMM rate
measured in the same run at the same thread count (``benchmarks/limits.py``). Peak memory: rise of the kernel's
high-water RSS over the resident size before the call (``benchmarks/peak_memory.py``).

Usage: ``.venv/bin/python benchmarks/bench_tokenizer.py [--presets imagenet_256_L imagenet_128_L] [--batch 1]
[--repeats 5] [--threads N] [--compile]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import limits
import peak_memory
from official_style import OfficialStyleTokenizer
from open_magvit2 import precision
from open_magvit2.tokenizer import ImageTokenizer, tokenizer_config


def smooth_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """(B, 3, size, size) in [−1, 1]: noise at 1/16 resolution, bilinearly upsampled, plus a little fine noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, size // 16, size // 16, generator=g) * 2 - 1
    x = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(-1, 1)


SIZES = {"imagenet_256_L": 256, "imagenet_128_L": 128}


def measure(preset: str, args: argparse.Namespace) -> list[str]:
    torch.manual_seed(0)
    config = tokenizer_config(preset)
    size = SIZES.get(preset, 16 * config.spatial_factor)
    tok = ImageTokenizer(config).eval()
    official = OfficialStyleTokenizer(config).eval()
    official.load_state_dict(tok.state_dict(), strict=True)
    x = smooth_images(args.batch, size)

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

    flops = limits.count_flops(ours)
    for fn in variants.values():  # warm-up: first-call allocations, oneDNN primitives
        fn()
    wall = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    peak: dict[str, float] = {}
    out = {}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            base = peak_memory.reset()
            w, c = time.perf_counter(), time.process_time()
            out[name] = fn()
            cpu[name].append(time.process_time() - c)
            wall[name].append(time.perf_counter() - w)
            peak[name] = max(peak.get(name, 0.0), peak_memory.peak_since(base))

    ref_dec, ref_idx = out["official-style"]
    gemm = limits.gemm_flops_per_s(torch.float32)
    rows = [f"{preset}: {sum(p.numel() for p in tok.parameters()) / 1e6:.1f} M parameters, {flops / 1e9:.1f} GFLOP per "
            f"encode + decode of {args.batch} × {size}² (FlopCounterMode); float32 GEMM {gemm / 1e9:.1f} GFLOP/s "
            f"measured in this run; decoded range {ref_dec.min().item():.2f} .. {ref_dec.max().item():.2f}", "",
            f"| {preset}, batch {args.batch}, {size}², float32 | wall s | × official (wall) | GFLOP/s | fraction of "
            "fp32 GEMM | CPU s (all threads) | × official (CPU) | peak extra RSS | indices equal | max abs Δ decoded |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in variants}
    for name in variants:
        dec, idx = out[name]
        same = torch.equal(idx.flatten(), ref_idx.flatten().long())
        assert same, f"{name}: indices differ from the official-style forward"
        delta = (dec.float() - ref_dec).abs().max().item()
        w, c = med[name]
        rows.append(f"| {name} | {w:.3f} | {med['official-style'][0] / w:.2f} | {flops / w / 1e9:.1f} | "
                    f"{flops / w / gemm:.0%} | {c:.2f} | {med['official-style'][1] / c:.2f} | {peak[name]:.0f} MiB | "
                    f"{same} | {delta:.1e} |")
    rows.append("all runs (wall s): " + "; ".join(f"{k}: {', '.join(f'{v:.2f}' for v in wall[k])}" for k in variants))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=list(SIZES))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's default)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (freezing) of ours")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("highest")
    print(limits.machine_header())
    for preset in args.presets:
        print("\n" + "\n".join(measure(preset, args)), flush=True)
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
