"""LFQ past 2^18 codes: the bias of the grouped codebook entropy, and the cost of LFQ forward + backward up to 2^62.

Part 1, bias. ``LFQ(entropy_group_bits=g)`` replaces the exact codebook entropy H_c by the sum of the exact codebook
entropies of consecutive groups of g bits (docs/quantizer.md). The sum ignores the dependence between groups, so
(eps = 0) it is ≥ the exact H_c by the groups' total correlation. Measured where the exact value fits (K = 18, 20,
24), N = 2048 tokens (B = 8, 16 × 16), τ = 0.01, forward only, float32, on:

* random latents, *soft*: z = 0.005·randn (bit logits 4z/τ ≈ ±2, far from saturation; as in bench_lfq.py);
* random latents, *hard*: z = randn (bit logits ≈ ±400: every token is one code, p̄ ≈ the histogram of N random codes);
* demo latents: ``ImageTokenizer.from_pretrained("demo")`` (K = 18) encoder outputs (``encode_latent``, before
  quantisation) of 8 crops of 128 × 128 (4 from each held-out photo, "chelsea" and "coffee", at random positions,
  numpy seed 0). For K = 20 and 24 the 18 channels are mapped linearly to K: z' = √(K/18)·Q[:, :18]·z with Q a
  random K × K orthogonal matrix (QR of a Gaussian, torch seed 0), i.e. K channels that mix the real ones, keep
  their joint structure (rank 18) and their mean squared value per channel.

Each row gives H_c in nats with the official eps = 1e-5 (what the loss uses) and with eps = 0 (the entropy itself),
and "grad cos": the cosine between the gradients of the grouped and the exact H_c with respect to z (1 = the
penalty pushes z the same way).

Part 2, cost. Time and peak memory of ``LFQ`` forward + backward of ``entropy_loss + commitment`` in train mode at
B = 8, 16 × 16, z = 0.005·randn, for K = 18, 24, 32, 48 and 62, three variants side by side:

* exact: ``LFQ(bits=K)`` (only where it is allowed, K ≤ 28);
* grouped: ``LFQ(bits=K, entropy_group_bits=8)``;
* BSQ per bit: the same quantiser (signs, straight-through codes, indices, commitment) with the per-bit factorised
  entropy of BSQ / Infinity re-implemented here from their published ``soft_entropy_loss``: P(bit) = sigmoid of the
  bit logit, ``prob = stack([p, 1 − p])`` (N, K, 2), H_s = mean_n Σ_k −Σ prob·log(prob + 1e-8), H_c = Σ_k
  −Σ p̄_k log(p̄_k + eps) with p̄_k = mean_n prob[n, k] (i.e. g = 1; eps = 1e-5 as ours, so that its H_c equals our
  g = 1 value up to rounding, which the run checks).

Each (variant, K, threads) runs in a fresh subprocess: imports, input creation and a warm-up call of the same variant
at K = 4 (library and thread-pool set-up), then ``peak_memory.reset()``, the measured call (peak = rise of the peak
RSS over the RSS before it, ``benchmarks/peak_memory.py``), then ``--repeats`` timed calls (median wall clock, and
median process CPU time). Threads: torch's default first, then 1. "× exact" = the exact entropy's wall clock over
the row's, same K and threads (the exact codebook entropy is the official behaviour). Fraction of the limit: FLOPs of
one forward + backward (``limits.count_flops``: the matmuls) / wall clock / the float32 GEMM rate the parent
measures at that thread count (``benchmarks/limits.py``); these are small, memory- and launch-bound operations, so
the fractions are small by nature.

Usage: ``.venv/bin/python benchmarks/bench_lfq_groups.py [--repeats 5] [--threads default 1] [--skip-bias]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH, SIDE, TAU, EPS = 8, 16, 0.01, 1e-5
BIAS_BITS = (18, 20, 24)
COST_BITS = (18, 24, 32, 48, 62)
GROUP = 8


# ---- inputs ------------------------------------------------------------------------------------------------------


def _random_z(bits: int, scale: float, batch: int = BATCH, side: int = SIDE, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(batch, bits, side, side, generator=g)  # (B, K, h, w)


def _demo_latents():
    """(8, 18, 16, 16) encoder outputs of the demo tokenizer on 128² crops of the two held-out photos."""
    import numpy as np
    import torch

    from open_magvit2 import ImageTokenizer
    from open_magvit2.demo.data import HELD_OUT_PHOTOS, load_photo

    tok = ImageTokenizer.from_pretrained("demo").eval()
    rng = np.random.default_rng(0)
    crops = []
    for name in HELD_OUT_PHOTOS:
        photo = load_photo(name)
        for _ in range(BATCH // len(HELD_OUT_PHOTOS)):
            y = int(rng.integers(0, photo.shape[0] - 128 + 1))
            x = int(rng.integers(0, photo.shape[1] - 128 + 1))
            crops.append(photo[y : y + 128, x : x + 128])
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        return tok.encode_latent(x)  # (8, 18, 16, 16)


def _lift(z, bits: int):
    """z (B, 18, h, w) → (B, K, h, w): √(K/18)·Q[:, :18]·z with a random orthogonal Q (K × K), seed 0."""
    import torch

    k0 = z.shape[1]
    if bits == k0:
        return z
    q, _ = torch.linalg.qr(torch.randn(bits, bits, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    w = (math.sqrt(bits / k0) * q[:, :k0]).float()  # (K, 18), orthonormal columns
    return torch.einsum("kc,bchw->bkhw", w, z)


# ---- part 1: bias ------------------------------------------------------------------------------------------------


def _h_c_and_grad(z, eps: float, group_bits: int | None):
    import torch

    from open_magvit2.quantize import entropy_terms

    z = z.detach().clone().requires_grad_(True)
    h_c = entropy_terms(z, temperature=TAU, eps=eps, group_bits=group_bits).codebook_entropy
    (grad,) = torch.autograd.grad(h_c, z)
    return h_c.item(), grad.flatten()


def bias_rows() -> list[tuple]:
    import torch

    demo = _demo_latents()
    sources = {
        "random soft (0.005·randn)": lambda k: _random_z(k, 0.005),
        "random hard (randn)": lambda k: _random_z(k, 1.0),
        "demo latents": lambda k: _lift(demo, k),
    }
    rows = []
    for source, make in sources.items():
        for bits in BIAS_BITS:
            z = make(bits)
            exact, grads = {}, {}
            for e in (EPS, 0.0):
                exact[e], grads[e] = _h_c_and_grad(z, e, None)
            for g in sorted({1, 4, 8, bits // 2}):
                grouped, cos = {}, {}
                for e in (EPS, 0.0):
                    grouped[e], grad = _h_c_and_grad(z, e, g)
                    cos[e] = torch.nn.functional.cosine_similarity(grad, grads[e], dim=0).item()
                rows.append((source, bits, g, exact, grouped, cos))
    return rows


def print_bias(rows: list[tuple]) -> None:
    print("\n| latents | K | g | exact H_c | grouped H_c | bias (rel.) | grad cos | exact H_c, eps 0 | grouped, eps 0 "
          "| bias, eps 0 (rel.) | grad cos, eps 0 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for source, bits, g, exact, grouped, cos in rows:
        cells = []
        for e in (EPS, 0.0):
            d = grouped[e] - exact[e]
            cells += [f"{exact[e]:.3f}", f"{grouped[e]:.3f}", f"{d:+.3f} ({d / exact[e]:+.1%})", f"{cos[e]:.3f}"]
        print(f"| {source} | {bits} | {g} | " + " | ".join(cells) + " |")
    print(f"(nats; log 2^K = {', '.join(f'{k}: {k * math.log(2):.2f}' for k in BIAS_BITS)}; "
          f"log N = {math.log(BATCH * SIDE * SIDE):.2f})")


# ---- part 2: cost ------------------------------------------------------------------------------------------------


def _bsq_module(bits: int):
    """The LFQ quantiser with BSQ / Infinity's per-bit factorised entropy (see the module docstring)."""
    import torch
    from torch import nn

    from open_magvit2.quantize import codes_to_indices, quantize_signs

    class BSQPerBit(nn.Module):
        def forward(self, z):
            q = quantize_signs(z)
            codes = z + (q - z).detach()
            indices = codes_to_indices(q)
            with torch.autocast(device_type=z.device.type, enabled=False):
                x = z.float().movedim(1, -1).reshape(-1, bits) * (4.0 / TAU)  # (N, K) bit logits
                p = torch.sigmoid(x)
                prob = torch.stack([p, 1 - p], dim=-1)  # (N, K, 2)
                h_s = (-(prob * torch.log(prob + 1e-8)).sum(-1)).sum(-1).mean()
                avg = prob.mean(0)  # (K, 2)
                h_c = (-(avg * torch.log(avg + EPS)).sum(-1)).sum()
            commitment = (z.float() - q.detach().float()).square().mean()
            return codes, indices, h_s - h_c, h_s, h_c, commitment

    return BSQPerBit().train()


def _module(variant: str, bits: int):
    from open_magvit2.quantize import LFQ

    if variant == "exact":
        return LFQ(bits=bits).train()
    if variant == "grouped":
        return LFQ(bits=bits, entropy_group_bits=min(GROUP, bits)).train()
    return _bsq_module(bits)


def _step(module, z) -> tuple[float, float]:
    z = z.detach().clone().requires_grad_(True)
    out = module(z)
    (out[2] + out[5]).backward()  # entropy_loss + commitment
    return out[4].item(), z.grad.abs().sum().item()


def worker(variant: str, bits: int, threads: int | None, repeats: int, out: str) -> None:
    import torch

    import peak_memory

    if threads is not None:
        torch.set_num_threads(threads)
    z = _random_z(bits, 0.005)
    _step(_module(variant, 4), _random_z(4, 0.005))  # warm-up at K = 4: library / thread pools, nothing K-sized
    module = _module(variant, bits)
    base = peak_memory.reset()
    h_c, _ = _step(module, z)
    peak = peak_memory.peak_since(base)
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        _step(module, z)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    import limits

    result = {"ms": 1e3 * statistics.median(wall), "cpu_ms": 1e3 * statistics.median(cpu), "peak_mib": peak,
              "h_c": h_c, "threads": torch.get_num_threads(), "flops": limits.count_flops(_step, module, z)}
    if variant == "grouped":  # our g = 1 value, to check the BSQ re-implementation against
        from open_magvit2.quantize import entropy_terms

        result["h_c_g1"] = entropy_terms(z, temperature=TAU, eps=EPS, group_bits=1).codebook_entropy.item()
    Path(out).write_text(json.dumps(result))


def _run(variant: str, bits: int, threads: int | None, repeats: int, tmp: str) -> dict:
    out = os.path.join(tmp, f"{variant}_{bits}_{threads}.json")
    cmd = [sys.executable, __file__, "--worker", variant, "--bits", str(bits), "--repeats", str(repeats),
           "--out", out, "--threads", "default" if threads is None else str(threads)]
    subprocess.run(cmd, check=True)
    return json.loads(Path(out).read_text())


def cost_rows(threads_list: list[int | None], repeats: int) -> list[tuple]:
    from open_magvit2.quantize.entropy import EXACT_MAX_BITS

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in threads_list:
            for bits in COST_BITS:
                variants = (["exact"] if bits <= EXACT_MAX_BITS else []) + ["grouped", "bsq"]
                for variant in variants:
                    rows.append((threads, bits, variant, _run(variant, bits, threads, repeats, tmp)))
    return rows


NAMES = {"exact": "exact (default)", "grouped": f"grouped g = {GROUP}", "bsq": "BSQ per bit (re-implemented)"}


def print_cost(rows: list[tuple], gemm: dict[int, float]) -> None:
    print("\n| threads | K | variant | ms (wall) | × exact (wall) | MFLOP | fraction of fp32 GEMM | CPU ms | peak MiB "
          "| H_c |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    g1 = {(t, k): r["h_c_g1"] for t, k, v, r in rows if v == "grouped"}
    exact = {(t, k): r["ms"] for t, k, v, r in rows if v == "exact"}
    for t, bits, variant, r in rows:
        ratio = f"{exact[(t, bits)] / r['ms']:.1f}" if (t, bits) in exact else "—"
        frac = r["flops"] / (r["ms"] / 1e3) / gemm[r["threads"]]
        print(f"| {r['threads']} | {bits} | {NAMES[variant]} | {r['ms']:.1f} | {ratio} | {r['flops'] / 1e6:.1f} | "
              f"{frac:.1%} | {r['cpu_ms']:.1f} | {r['peak_mib']:.1f} | {r['h_c']:.4f} |")
    diffs = [abs(r["h_c"] - g1[(t, k)]) / g1[(t, k)] for t, k, v, r in rows if v == "bsq"]
    print(f"BSQ re-implementation vs ours with g = 1: max relative H_c difference {max(diffs):.1e}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", nargs="+", default=["default", "1"], help="torch threads per cost run ('default')")
    p.add_argument("--skip-bias", action="store_true")
    p.add_argument("--skip-cost", action="store_true")
    p.add_argument("--worker", choices=["exact", "grouped", "bsq"], help=argparse.SUPPRESS)
    p.add_argument("--bits", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    threads_list = [None if t == "default" else int(t) for t in args.threads]
    if args.worker:
        worker(args.worker, args.bits, threads_list[0], args.repeats, args.out)
        return 0

    import torch

    import limits

    print(limits.machine_header())
    print(f"B = {BATCH}, {SIDE}x{SIDE} tokens (N = {BATCH * SIDE * SIDE}), τ = {TAU}.")
    if not args.skip_bias:
        t0 = time.perf_counter()
        print_bias(bias_rows())
        print(f"(bias part: {time.perf_counter() - t0:.0f} s)")
    if not args.skip_cost:
        default = torch.get_num_threads()
        gemm = {}
        for t in threads_list:
            torch.set_num_threads(t or default)
            gemm[t or default] = limits.gemm_flops_per_s(torch.float32)
        torch.set_num_threads(default)
        print("float32 GEMM: " + ", ".join(f"{t} threads {g / 1e9:.1f} GFLOP/s" for t, g in gemm.items()))
        print_cost(cost_rows(threads_list, args.repeats), gemm)
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
