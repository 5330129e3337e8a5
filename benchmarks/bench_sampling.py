"""AR sampling throughput: static-KV-cache decoding vs a naive sampler that recomputes the whole sequence.

Model: the B preset (343.6 M parameters, spec §5.2) with random init weights (the heads are given N(0, 0.02)
weights instead of the official zero init so that sampling is not uniform; speed does not depend on values).
Batch 8 images with CFG (1.9, 2.0), i.e. 16 rows through the transformer, temperature 1, no top-k/top-p.
One "token" is one full LFQ token (a pre + post sub-token pair); an image has 256.

* fast: ``open_magvit2.generator.generate_tokens`` — class-token prefill, then one spatial step and two intra
  positions per token, static KV caches allocated once. Timed over all 256 steps.
* naive: every step re-runs the spatial transformer over the whole prefix ``[class, E[0..n−1]]`` (no cache) and
  the intra transformer over ``[h_n]`` then ``[h_n, pre_emb(pre_n)]``. A full naive run of the B model takes
  about an hour on 2 cores, so its cost is measured at ``--naive-points`` prefix lengths spread over 1..256 (one
  real naive step each, on the tokens the fast run sampled) and the 256-step total is the sum of the linear
  interpolation of those step times over all 256 lengths. The per-step cost grows linearly with the prefix (matmul
  FLOPs ∝ length; attention is a small quadratic term), so linear interpolation is accurate; the measured points are
  printed so the estimate can be checked.
* correctness (on unless ``--no-check``): on the tiny preset with an 8×8 grid, the naive and fast samplers give
  identical sequences from the same seed, with CFG.

dtype: float32 by default. bfloat16 is also timed for ``--dtype-steps`` decode steps (this CPU has no bf16
matmul instructions), and the faster one is printed; the full runs use ``--dtype``.

Peak memory: a thread polls the process RSS (/proc/self/statm) every 2 ms; each phase reports the peak minus the
RSS at its start (the weights are already resident), i.e. the extra memory of sampling.

Usage: ``.venv/bin/python benchmarks/bench_sampling.py [--batch 8] [--naive-points 6] [--dtype float32]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import threading
import time

import numpy as np
import torch

from open_magvit2.generator import GENERATOR_PRESETS, GeneratorTransformer, generate_tokens
from open_magvit2.generator.sampling import guide_logits, sample_from_logits

PAGE = os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Context manager: peak RSS above the starting RSS while inside, in MiB (polled every 2 ms)."""

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())
        self.mib = (self.peak - self.start) / 2**20


@torch.no_grad()
def naive_step(model, labels_rows, pre, post, batch, scales, generator):
    """One token by full recomputation: pre, post (B, n) → sampled (pre_n, post_n), each (B,)."""
    reps = labels_rows.shape[0] // batch
    seq = model.class_emb(labels_rows)  # (rows, 1, D)
    if pre.shape[1]:
        seq = torch.cat([seq, model.embed_tokens(pre.repeat(reps, 1), post.repeat(reps, 1))], dim=1)
    h = model.spatial(seq)[:, -1:]  # (rows, 1, D): causal pass over the whole prefix, no cache
    o = model.intra(h)
    tok0 = sample_from_logits(
        guide_logits(model.head[0](o[:, 0]), scales[0], batch, scales[0] > 1), 1.0, 0, 1.0, generator
    )
    o = model.intra(torch.cat([h, model.pre_emb(tok0.repeat(reps))[:, None]], dim=1))  # recomputes intra position 0
    tok1 = sample_from_logits(
        guide_logits(model.head[1](o[:, 1]), scales[1], batch, scales[1] > 1), 1.0, 0, 1.0, generator
    )
    return tok0, tok1


def rows_labels(model, labels, scales):
    return torch.cat([labels, torch.full_like(labels, model.config.num_classes)]) if max(scales) > 1 else labels


@torch.no_grad()
def naive_generate(model, labels, scales, generator):
    B, N = labels.shape[0], model.config.seq_len
    pre = torch.empty(B, 0, dtype=torch.int64)
    post = torch.empty(B, 0, dtype=torch.int64)
    lr = rows_labels(model, labels, scales)
    for _ in range(N):
        a, b = naive_step(model, lr, pre, post, B, scales, generator)
        pre, post = torch.cat([pre, a[:, None]], 1), torch.cat([post, b[:, None]], 1)
    return pre, post


def build(preset: str, dtype: torch.dtype, seed: int = 0, **changes) -> GeneratorTransformer:
    torch.manual_seed(seed)
    model = GeneratorTransformer(config=dataclasses.replace(GENERATOR_PRESETS[preset], **changes))
    for h in model.head:
        torch.nn.init.normal_(h.weight, std=0.02)
    return model.eval().to(dtype)


def check_tiny(scales) -> bool:
    model = build("tiny", torch.float32, grid_size=8)  # 64 steps keep the full naive run short
    labels = torch.tensor([1, 5, 9])
    fast = generate_tokens(model, labels, cfg_scale=scales, generator=torch.Generator().manual_seed(7))
    naive = naive_generate(model, labels, scales, torch.Generator().manual_seed(7))
    return torch.equal(fast.pre, naive[0]) and torch.equal(fast.post, naive[1])


@torch.no_grad()
def decode_step_time(model, rows: int, steps: int) -> float:
    """Median seconds of one decode step (spatial step + two intra positions + heads), cache included."""
    dtype = model.pre_emb.weight.dtype
    sc, ic = model.new_caches(rows, dtype=dtype, device=torch.device("cpu"))
    x = model.class_emb(torch.zeros(rows, dtype=torch.int64))
    times = []
    for n in range(steps):
        t = time.perf_counter()
        h = model.spatial(x, n, sc)
        model.head[0](model.intra(h, 0, ic))
        model.head[1](model.intra(x, 1, ic))
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="B")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cfg", type=float, nargs=2, default=(1.9, 2.0))
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--naive-points", type=int, default=6)
    ap.add_argument("--dtype-steps", type=int, default=8, help="decode steps timed per dtype (0 = skip)")
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args()
    scales = tuple(args.cfg)
    threads = torch.get_num_threads()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {threads}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (other processes share these cores)")
    if not args.no_check:
        print(f"tiny preset (8x8 grid), CFG {scales}: naive == fast sequences: {check_tiny(scales)}")

    dtype = getattr(torch, args.dtype)
    model = build(args.preset, dtype)
    n_params, N, B = model.num_params(), model.config.seq_len, args.batch
    labels = torch.arange(B) * 7 % model.config.num_classes
    rows = rows_labels(model, labels, scales).shape[0]
    if args.dtype_steps:
        other = torch.bfloat16 if dtype == torch.float32 else torch.float32
        per = {dtype: decode_step_time(model, rows, args.dtype_steps)}
        per[other] = decode_step_time(build(args.preset, other), rows, args.dtype_steps)
        for d, t in per.items():
            print(f"decode step, {str(d).removeprefix('torch.')}: {t * 1e3:.0f} ms (median of {args.dtype_steps})")
        print(f"faster dtype on this CPU: {str(min(per, key=per.get)).removeprefix('torch.')}")

    generate_tokens(model, labels[:1], cfg_scale=scales)  # warm-up (thread pool, allocator)
    with PeakRSS() as mem_fast:
        t = time.perf_counter()
        out = generate_tokens(model, labels, cfg_scale=scales, generator=torch.Generator().manual_seed(0))
        t_fast = time.perf_counter() - t

    lengths = sorted({round(1 + i * (N - 1) / (args.naive_points - 1)) for i in range(args.naive_points)})
    lr = rows_labels(model, labels, scales)
    measured = {}
    with PeakRSS() as mem_naive:
        for L in lengths:  # prefix of n = L - 1 tokens plus the class token
            t = time.perf_counter()
            naive_step(
                model, lr, out.pre[:, : L - 1], out.post[:, : L - 1], B, scales, torch.Generator().manual_seed(L)
            )
            measured[L] = time.perf_counter() - t
    xs = list(measured)
    t_naive = float(np.interp(np.arange(1, N + 1), xs, [measured[x] for x in xs]).sum())  # linear interpolation

    tokens = B * N
    print("\nnaive step times (s) by sequence length: " + ", ".join(f"{L}: {s:.2f}" for L, s in measured.items()))
    title = f"{args.preset} ({n_params / 1e6:.1f} M params), batch {B}, CFG {scales}, {args.dtype}"
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(f"\n| {title} | time for {N} steps | tokens/s | peak extra RSS |")
    print("|---|---|---|---|")
    print(f"| static KV cache (ours) | {t_fast:.1f} s (measured) | {tokens / t_fast:.1f} | {mem_fast.mib:.0f} MiB |")
    print(
        f"| naive full recompute | {t_naive:.0f} s (extrapolated from {len(xs)} lengths) | {tokens / t_naive:.2f} | "
        f"{mem_naive.mib:.0f} MiB |"
    )
    print(f"\nspeed-up: {t_naive / t_fast:.1f}x")


if __name__ == "__main__":
    main()
