"""AR sampling speed: ours (eager and compiled) vs the official sampler's computation, and vs naive recompute.

Main comparison (default): full 256-step runs, nothing interpolated, variants interleaved, medians.

* official-style: ``benchmarks/official_style.py::official_style_sample`` — ``sample_Open_MAGVIT2`` op for op on
  the same weights: 264-slot spatial caches attached per run, intra caches re-allocated at every step (docs/design.md
  O-40), a (rows, 264, 264) mask table gathered per step, ``repeat_interleave`` of keys/values, plain
  ``nn.Linear``;
* ours: ``generate_tokens`` — fixed-size caches allocated once, read through a mask, ``prefill`` /
  ``decode_one_token`` / ``post_logits``;
* ours, plain F.linear: the same with ``generator.model.Linear``'s CPU decode path (``(W·xᵀ)ᵀ`` for 8–32 rows)
  switched off, to show what it adds;
* ours, compiled: ``generate_tokens(..., compile=True)`` (inductor; the compile time is reported separately).

Model: ``--dim 768 --layers 12`` ("mid": 106 M parameters, about a third of B) unless given, random weights (heads
N(0, 0.02) instead of the official zero init so that sampling is not uniform; speed does not depend on values),
batch 4 with CFG (1.9, 2.0), i.e. 8 rows, temperature 1, float32. All variants start from the same seed on torch's
global RNG and must return identical sequences (checked and printed: "equal outputs").

Time: wall clock and the main thread's CPU time (``time.thread_time``). Other jobs share this machine's 2 cores,
so the default is ``--threads 1``, where the CPU time is immune to waiting for a core; the ratios of both are
printed. Peak memory: a thread polls the RSS every 2 ms; "extra" is the peak minus the RSS before the run
(weights already resident; the compiled variant reuses the cache its compile run allocated). The floor: parameter
bytes / the streaming bandwidth of one ``sum`` over a buffer of the same size (CPU time), the time a step needs
just to read the weights once.

``--naive`` adds the older comparison: a sampler that re-runs the whole prefix every step, timed at
``--naive-points`` prefix lengths and interpolated (a full run of B takes hours).

Usage: ``.venv/bin/python benchmarks/bench_sampling.py [--dim 768 --layers 12] [--repeats 3] [--threads 1]``;
``--dim 1024 --layers 24`` is the B preset (about 3× slower).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from official_style import official_style_sample
from open_magvit2.generator import GENERATOR_PRESETS, GeneratorTransformer, generate_tokens
from open_magvit2.generator import model as gmodel
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


def build(dim: int, layers: int, intra: int, seed: int = 0, **changes) -> GeneratorTransformer:
    torch.manual_seed(seed)
    config = dataclasses.replace(
        GENERATOR_PRESETS["B"], dim=dim, n_layers=layers, n_intra_layers=intra, n_heads=dim // 64, **changes
    )
    model = GeneratorTransformer(config=config)
    for h in model.head:
        torch.nn.init.normal_(h.weight, std=0.02)
    return model.eval()


def stream_bandwidth(nbytes: int) -> float:
    """Bytes per CPU second of one pass of ``sum`` over a float32 buffer of ``nbytes`` (median of 5)."""
    buf = torch.ones(nbytes // 4)
    times = []
    for _ in range(6):
        t = time.thread_time()
        buf.sum()
        times.append(time.thread_time() - t)
    return nbytes / statistics.median(times[1:])


# --------------------------------------------------------------------------------- naive full recompute (--naive)


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


def naive_comparison(model, labels, scales, points: int, fast_pre, fast_post, t_fast: float) -> None:
    N, B = model.config.seq_len, labels.shape[0]
    lengths = sorted({round(1 + i * (N - 1) / (points - 1)) for i in range(points)})
    lr = rows_labels(model, labels, scales)
    measured = {}
    for L in lengths:  # prefix of n = L - 1 tokens plus the class token
        t = time.perf_counter()
        naive_step(model, lr, fast_pre[:, : L - 1], fast_post[:, : L - 1], B, scales, torch.Generator().manual_seed(L))
        measured[L] = time.perf_counter() - t
    xs = list(measured)
    t_naive = float(np.interp(np.arange(1, N + 1), xs, [measured[x] for x in xs]).sum())  # linear interpolation
    print("\nnaive step times (s) by sequence length: " + ", ".join(f"{L}: {s:.2f}" for L, s in measured.items()))
    print(f"naive full recompute: {t_naive:.0f} s for {N} steps (interpolated from {len(xs)} lengths); ours "
          f"{t_fast:.1f} s measured: {t_naive / t_fast:.1f}x")


# --------------------------------------------------------------------------------------------- main comparison


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--intra", type=int, default=2)
    ap.add_argument("--grid", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--cfg", type=float, nargs=2, default=(1.9, 2.0))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--naive", action="store_true", help="also the naive-recompute comparison (interpolated)")
    ap.add_argument("--naive-points", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    scales = tuple(args.cfg)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {args.threads}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (other processes share these cores)")

    model = build(args.dim, args.layers, args.intra, grid_size=args.grid)
    n_params, N, B = model.num_params(), model.config.seq_len, args.batch
    labels = torch.arange(B) * 7 % model.config.num_classes
    rows = B * (2 if max(scales) > 1 else 1)

    def ours(compile: bool = False):
        torch.manual_seed(0)
        out = generate_tokens(model, labels, cfg_scale=scales, compile=compile)
        return out.pre, out.post

    def official():
        torch.manual_seed(0)
        return official_style_sample(model, labels, scales)

    def ours_plain_linear():  # the F.linear path everywhere: what generator.model.Linear's CPU decode path adds
        saved = gmodel.CPU_DECODE_ROWS
        gmodel.CPU_DECODE_ROWS = range(0)
        try:
            return ours()
        finally:
            gmodel.CPU_DECODE_ROWS = saved

    variants = {"official-style": official, "ours": ours, "ours, plain F.linear": ours_plain_linear}
    if not args.no_compile:
        t = time.perf_counter()
        ours(True)
        print(f"compile (first compiled run, incl. sampling): {time.perf_counter() - t:.1f} s")
        variants["ours, compiled"] = lambda: ours(True)

    wall = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    peak: dict[str, float] = {}
    outputs = {}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            with PeakRSS() as mem:
                w, c = time.perf_counter(), time.thread_time()
                outputs[name] = fn()
                cpu[name].append(time.thread_time() - c)
                wall[name].append(time.perf_counter() - w)
            peak[name] = max(peak.get(name, 0.0), mem.mib)
    ref = outputs["official-style"]
    equal = all(torch.equal(o[0], ref[0]) and torch.equal(o[1], ref[1]) for o in outputs.values())
    floor = n_params * 4 / stream_bandwidth(n_params * 4)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(f"equal outputs (all variants, same seed): {equal}")
    title = f"{n_params / 1e6:.1f} M params (dim {args.dim}, {args.layers}+{args.intra} layers), batch {B} + CFG"
    print(f"\n| {title} | wall s / {N} steps | CPU s / {N} steps | CPU ms / step | × official (wall) | "
          "× official (CPU) | peak extra RSS |")
    print("|---|---|---|---|---|---|---|")
    med = {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in variants}
    for name in variants:
        w, c = med[name]
        print(f"| {name} | {w:.1f} | {c:.1f} | {c / N * 1e3:.0f} | {med['official-style'][0] / w:.2f} | "
              f"{med['official-style'][1] / c:.2f} | {peak[name]:.0f} MiB |")
    print(f"\nrows {rows}; weight-read floor: {floor * 1e3:.0f} CPU ms / step ({n_params * 4 / 2**20:.0f} MiB of "
          "float32 weights at the streaming bandwidth of one sum, measured in CPU time)")
    print("all runs (wall s): " + "; ".join(f"{k}: {', '.join(f'{v:.1f}' for v in wall[k])}" for k in variants))

    if args.naive:
        naive_comparison(model, labels, scales, args.naive_points, *outputs["ours"], med["ours"][0])


if __name__ == "__main__":
    main()
