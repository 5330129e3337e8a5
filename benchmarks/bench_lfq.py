"""LFQ entropy terms: our memory-free form vs the official dense formula, re-implemented here (docs/design.md O-13).

Measures forward + backward of ``H_s − H_c`` (the entropy part of the LFQ loss, both weights 1) w.r.t. z for
z (B, K, 16, 16) = 0.005·randn (B = 8, so N = 2048 tokens; with τ = 0.01 the bit logits 400·z are about ±2, far
from saturation, like the fixture's "soft" cases), at K = 18 (2^18 codes) and K = 14.

* ours: ``open_magvit2.quantize.entropy_terms`` (closed-form H_s, split-matmul p̄; what LFQ uses);
* dense: ``open_magvit2.quantize.dense_entropy_terms``, the official *formula* with (N × 2^K) logits, softmax
  and log-softmax, re-implemented in this package (the official code is not a dependency; the tests pin this
  re-implementation to the official module's golden outputs). It is the baseline, not the official code itself.

Peak memory. torch's CPU allocator is invisible to tracemalloc, so every (variant, K) runs in a fresh subprocess
that (1) imports, builds the input and runs the same variant once on a 1-token input (one-time library and thread
pool set-up), (2) clears the process's peak-RSS mark and reads the RSS as the baseline (``peak_memory.reset``; the
peak that the imports left can exceed the measured call's), (3) runs the measured call and reads the new peak. Peak
MiB = its rise over the baseline, i.e. the extra memory of one forward + backward. glibc serves these large
tensors with mmap, so freed memory does not hide a later peak.
Time: median over ``--repeats`` further calls (wall clock at torch's default thread count), after the memory run.
Fraction of the limit: FLOPs of one forward + backward (``limits.count_flops``: the matmuls; counted on one image of
16 × 16 tokens and × B, as every matmul here is linear in the number of tokens) / wall clock / the float32 GEMM rate
measured by the parent process at the same thread count (``benchmarks/limits.py``). The dense formula is a handful
of (N × 2^K) element-wise passes besides its matmul, so it is memory-bound and its GEMM fraction is small.

Accuracy: the "exact" values are ours in float64 (the tests show that this equals the official module run in
float64 to ~1e-10). The table gives each float32 variant's relative error of H_s, H_c and the max |grad| error
relative to max |grad|, and ours vs dense directly.

Usage: ``.venv/bin/python benchmarks/bench_lfq.py [--bits 18 14] [--repeats 5] [--dense-repeats 2]``.
The dense run at 2^18 needs ~15 GiB; it is skipped (and said so) when less memory is available.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH, SIDE, SCALE, TAU = 8, 16, 0.005, 0.01


def _make_z(bits: int, batch: int = BATCH, side: int = SIDE):
    import torch

    g = torch.Generator().manual_seed(0)
    return SCALE * torch.randn(batch, bits, side, side, generator=g)  # (B, K, h, w)


def _step(fn, z):
    """One forward + backward of H_s − H_c; returns (h_s, h_c, grad_z)."""
    z = z.detach().clone().requires_grad_(True)
    h_s, h_c = fn(z)
    (h_s - h_c).backward()
    return h_s.detach(), h_c.detach(), z.grad


def worker(variant: str, bits: int, repeats: int, out: str) -> None:
    import torch

    from open_magvit2.quantize import dense_entropy_terms, entropy_terms

    fns = {
        "ours": lambda z: entropy_terms(z, temperature=TAU, eps=1e-5, sync=False),
        "dense": lambda z: dense_entropy_terms(z, TAU, 1e-5),
    }
    fn = fns[variant]
    z = _make_z(bits)
    _step(fn, _make_z(bits, batch=1, side=1))  # warm-up on one token: library / thread-pool set-up
    import peak_memory

    base = peak_memory.reset()  # clear the peak-RSS mark that imports left (it can exceed the measured call's)
    h_s, h_c, grad = _step(fn, z)
    peak_mib = peak_memory.peak_since(base)
    del grad
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        *_, grad = _step(fn, z)
        times.append(time.perf_counter() - t0)
    import limits

    flops = BATCH * limits.count_flops(_step, fn, _make_z(bits, batch=1))
    result = {"ms": 1e3 * statistics.median(times), "peak_mib": peak_mib, "h_s": h_s.item(), "h_c": h_c.item(),
              "flops": flops}
    if variant == "ours":  # the exact reference, after the measurements
        e_s, e_c, e_grad = _step(fns["ours"], z.double())
        result.update(exact_h_s=e_s.item(), exact_h_c=e_c.item())
        torch.save(e_grad, out + ".exact_grad.pt")
    torch.save(grad, out + ".grad.pt")
    Path(out).write_text(json.dumps(result))


def _available_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def _run(variant: str, bits: int, repeats: int, tmp: str) -> dict | None:
    out = os.path.join(tmp, f"{variant}_{bits}.json")
    cmd = [sys.executable, __file__, "--worker", variant, "--bits", str(bits), "--repeats", str(repeats), "--out", out]
    subprocess.run(cmd, check=True)
    return json.loads(Path(out).read_text()) | {"out": out}


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bits", type=int, nargs="+", default=[18, 14])
    p.add_argument("--repeats", type=int, default=5, help="timed calls of ours (and of dense below 2^18)")
    p.add_argument("--dense-repeats", type=int, default=1, help="timed calls of dense at >= 2^16 codes")
    p.add_argument("--worker", choices=["ours", "dense"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.bits[0], args.repeats, args.out)
        return 0

    import torch

    import limits

    print(limits.machine_header())
    gemm = limits.gemm_flops_per_s(torch.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bits in args.bits:
            ours = _run("ours", bits, args.repeats, tmp)
            need_gib = 7 * BATCH * SIDE * SIDE * 2**bits * 4 / 2**30  # ~7 live (N, 2^K) float32 tensors
            if need_gib > 0.8 * _available_gib():
                print(f"dense at 2^{bits} skipped: needs ~{need_gib:.1f} GiB, {_available_gib():.1f} GiB available")
                dense = None
            else:
                dense = _run("dense", bits, args.repeats if bits < 16 else args.dense_repeats, tmp)
            exact_grad = torch.load(ours["out"] + ".exact_grad.pt")
            gmax = exact_grad.abs().max().item()
            for name, r in (("ours", ours), ("dense (official formula, re-implemented)", dense)):
                if r is None:
                    continue
                grad = torch.load(r["out"] + ".grad.pt").double()
                r["err"] = (
                    _rel(r["h_s"], ours["exact_h_s"]),
                    _rel(r["h_c"], ours["exact_h_c"]),
                    (grad - exact_grad).abs().max().item() / gmax,
                )
                rows.append((bits, name, r))
            if dense is not None:
                g_o = torch.load(ours["out"] + ".grad.pt")
                g_d = torch.load(dense["out"] + ".grad.pt")
                dense["vs_ours"] = (
                    _rel(ours["h_s"], dense["h_s"]),
                    _rel(ours["h_c"], dense["h_c"]),
                    (g_o - g_d).abs().max().item() / g_d.abs().max().item(),
                )
                dense["speedup"] = dense["ms"] / ours["ms"]
                dense["mem_ratio"] = dense["peak_mib"] / max(ours["peak_mib"], 1e-3)

    print(f"\n{torch.get_num_threads()} threads, float32 GEMM {gemm / 1e9:.1f} GFLOP/s. B={BATCH}, {SIDE}x{SIDE} "
          f"tokens (N={BATCH * SIDE * SIDE}), z = {SCALE}·randn, τ = {TAU}; forward + backward of H_s − H_c.\n")
    print("| codes | variant | ms (wall) | GFLOP | fraction of fp32 GEMM | peak MiB | dense/ours time "
          "| dense/ours memory | rel. err H_s | rel. err H_c | grad err | ours vs dense (H_s, H_c, grad) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for bits, name, r in rows:
        ratio_t = f"{r['speedup']:.0f}×" if "speedup" in r else ""
        ratio_m = f"{r['mem_ratio']:.0f}×" if "mem_ratio" in r else ""
        vs = ", ".join(f"{v:.1e}" for v in r["vs_ours"]) if "vs_ours" in r else ""
        e = r["err"]
        frac = r["flops"] / (r["ms"] / 1e3) / gemm
        print(f"| 2^{bits} | {name} | {r['ms']:.1f} | {r['flops'] / 1e9:.2f} | {frac:.1%} "
              f"| {r['peak_mib']:.1f} | {ratio_t} | {ratio_m} "
              f"| {e[0]:.1e} | {e[1]:.1e} | {e[2]:.1e} | {vs} |")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    sub_token_section()
    return 0


def sub_token_section() -> None:
    """Issue 20: the per-token AR sampling cost of 32-bit tokens as M = 2, 3, 4 sub-tokens (the same measurement
    as ``bench_sampling.py``'s sub-token section; defaults: dim 768, 12 + 2 layers, 8×8 grid, batch 4 + CFG)."""
    from bench_sampling import print_sub_token_cost, sub_token_cost

    print_sub_token_cost(sub_token_cost())


if __name__ == "__main__":
    raise SystemExit(main())
