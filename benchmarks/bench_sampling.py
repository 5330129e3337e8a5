"""AR sampling speed: ours (eager and compiled) vs the official sampler's computation, and vs naive recompute.

Main comparison (default): full 256-step runs, nothing interpolated, variants interleaved, medians.

* official-style: ``benchmarks/official_style.py::official_style_sample`` — ``sample_Open_MAGVIT2`` op for op on
  the same weights: 264-slot spatial caches attached per run, intra caches re-allocated at every step (docs/design.md
  O-40), a (rows, 264, 264) mask table gathered per step, ``repeat_interleave`` of keys/values, masked attention
  over all 264 slots, plain ``nn.Linear``;
* ours: ``generate_tokens``, the default eager path — fixed-size caches allocated once, each call reading only
  their filled prefix (int positions, no mask), ``prefill`` / ``decode_one_token`` / ``sub_token_logits``;
* ours, plain F.linear (``--plain-linear``): the same with ``generator.model.Linear``'s CPU decode path
  (``(W·xᵀ)ᵀ`` for 8–32 rows) switched off, to show what it adds;
* ours, compiled: ``generate_tokens(..., compile=True)`` (inductor; whole fixed-size caches through a mask; the
  compile time is reported separately).

Model: ``--dim 768 --layers 12`` ("mid": 106 M parameters, about a third of B) unless given, random weights (heads
N(0, 0.02) instead of the official zero init so that sampling is not uniform; speed does not depend on values),
batch 4 with CFG (1.9, 2.0), i.e. 8 rows, temperature 1, float32. All variants start from the same seed on torch's
global RNG and must return identical sequences (checked and printed: "equal outputs").

Time: wall clock at torch's default thread count first (``--threads`` sets another), then the process CPU time
(all threads, ``time.process_time``). ``--one-thread`` adds official-style and ours at one thread, timed by the
main thread's CPU time (``time.thread_time``: immune to waiting for a core when other jobs share the machine).
The first line is ``benchmarks/limits.py::machine_header`` (date, CPU, threads, load average); the load average
is printed again at the end. Peak memory: a thread polls the RSS every 2 ms; "extra" is the peak minus the RSS
before the run (weights already resident; the compiled variant reuses the cache its compile run allocated).

The floors: a decode step (one token: the spatial blocks once, the intra blocks and the final norm once per
sub-token, every head once) must read those weights once: weight bytes per step / ``limits.stream_bytes_per_s``
(read bandwidth of a ``sum``, same thread count) is the weight-read floor, and the step's FLOPs
(``limits.count_flops`` of one ``decode_one_token`` + ``sub_token_logits``) / ``limits.gemm_flops_per_s`` the
GEMM floor; each variant's step is given as the weight-read floor's fraction of it.

Sub-token cost (issue 20; :func:`sub_token_cost`, also printed by ``bench_lfq.py``): per-token sampling cost of
the same transformer (dim, layers) for 32-bit tokens split into M = 2, 3, 4 sub-tokens, (16, 16), (11, 11, 10),
(8, 8, 8, 8), eager, batch 4 + CFG, on an 8×8 grid (64 tokens; ``--sub-grid``). 32 bits because that is the
token size issue 20 chooses M for (the 18-bit models keep the official (6, 12)); M trades the heads' size
(2^16-way logits and embeddings for M = 2) against one more intra pass per sub-token.

``--naive`` adds the older comparison: a sampler that re-runs the whole prefix every step, timed at
``--naive-points`` prefix lengths and interpolated (a full run of B takes hours).

Usage: ``.venv/bin/python benchmarks/bench_sampling.py [--dim 768 --layers 12] [--repeats 3] [--one-thread]``;
``--dim 1024 --layers 24`` is the B preset (about 3× slower); ``--no-compile``, ``--no-sub-tokens`` skip sections.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from limits import count_flops, gemm_flops_per_s, machine_header, stream_bytes_per_s
from official_style import official_style_sample
from open_magvit2.generator import GENERATOR_PRESETS, GeneratorTransformer, generate_tokens
from open_magvit2.generator import model as gmodel
from open_magvit2.generator import sampling as gsampling
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


# ------------------------------------------------------------------------------------------ floors and timing


def step_weight_bytes(model: GeneratorTransformer) -> int:
    """Bytes of the weights one decode step (one token) reads: the spatial blocks once, the intra blocks and the
    final norm once per sub-token, every head once (the few embedding rows it gathers are left out)."""

    def nbytes(module: torch.nn.Module) -> int:
        return sum(p.numel() * p.element_size() for p in module.parameters())

    m = model.config.sub_tokens
    return nbytes(model.spatial_blocks) + m * (nbytes(model.factorized_blocks) + nbytes(model.norm)) + nbytes(
        model.head)


def step_flops(model: GeneratorTransformer, rows: int) -> int:
    """FLOPs (``limits.count_flops``) of one eager decode step at mid-sequence: ``decode_one_token`` and
    ``sub_token_logits`` for each later sub-token, ``rows`` rows."""
    m, n = model.config.sub_tokens, model.config.seq_len // 2
    g = gsampling.Guidance(rows // 2, (2.0,) * m, (True,) * m)
    state = gsampling.DecodeState.new(model, rows)
    tokens = tuple(torch.zeros(rows, dtype=torch.int64) for _ in range(m))

    @torch.no_grad()
    def step() -> None:
        gsampling.decode_one_token(model, tokens, n, state, g)
        for i in range(1, m):
            gsampling.sub_token_logits(model, tokens[i - 1], i, state, g)

    return count_flops(step)


def timed(fn: Callable[[], object], clock: Callable[[], float]) -> tuple[float, float, float, object]:
    """Run fn once: (wall s, CPU s by ``clock``, peak extra RSS MiB, its result)."""
    with PeakRSS() as mem:
        w, c = time.perf_counter(), clock()
        out = fn()
        cpu = clock() - c
        wall = time.perf_counter() - w
    return wall, cpu, mem.mib, out


def interleaved(variants: dict[str, Callable[[], object]], repeats: int, clock: Callable[[], float]) -> dict:
    """Each variant ``repeats`` times, interleaved: name → (median wall, median CPU, max peak MiB, all walls, last
    output)."""
    runs: dict[str, list] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            runs[name].append(timed(fn, clock))
    return {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v), max(r[2] for r in v),
                [r[0] for r in v], v[-1][3]) for k, v in runs.items()}


# ------------------------------------------------------------------------------- sub-token cost (issue 20)

SUB_TOKEN_SPLITS = ((16, 16), (11, 11, 10), (8, 8, 8, 8))  # 32-bit tokens as M = 2, 3, 4 sub-tokens


def sub_token_cost(dim: int = 768, layers: int = 12, intra: int = 2, grid: int = 8, batch: int = 4,
                   splits: tuple[tuple[int, ...], ...] = SUB_TOKEN_SPLITS, repeats: int = 1) -> list[dict]:
    """Per-token eager sampling cost of one transformer size for each sub-token split: batch + CFG (scale 2 on every
    sub-token), a ``grid`` × ``grid`` image, wall and process CPU time per token (medians of ``repeats`` full runs)
    at the current thread count, with the parameters and the weight bytes a step reads."""
    labels = torch.arange(batch) * 7 % 1000
    rows = []
    for bits in splits:
        model = build(dim, layers, intra, grid_size=grid, factorized_bits=bits, sample_cfg_scale=None,
                      sample_temperature=None)
        n = model.config.seq_len

        def run(model: GeneratorTransformer = model) -> object:
            torch.manual_seed(0)
            return generate_tokens(model, labels, cfg_scale=2.0)

        walls, cpus = zip(*(timed(run, time.process_time)[:2] for _ in range(repeats)))
        rows.append(dict(bits=bits, params=model.num_params(), step_bytes=step_weight_bytes(model),
                         wall_ms=statistics.median(walls) / n * 1e3, cpu_ms=statistics.median(cpus) / n * 1e3))
        del model
    return rows


def print_sub_token_cost(rows: list[dict], dim: int = 768, layers: int = 12, intra: int = 2, grid: int = 8,
                         batch: int = 4) -> None:
    """The :func:`sub_token_cost` table, ratios to the first split."""
    print(f"\nPer-token sampling cost by sub-token split (32-bit tokens; dim {dim}, {layers}+{intra} layers; batch "
          f"{batch} + CFG; {grid}x{grid} grid; eager; {torch.get_num_threads()} threads)")
    print("| split | M | params | weights read / token | wall ms / token | × first (wall) | process CPU ms / token |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['bits']} | {len(r['bits'])} | {r['params'] / 1e6:.1f} M | {r['step_bytes'] / 2**20:.0f} MiB "
              f"| {r['wall_ms']:.0f} | {r['wall_ms'] / rows[0]['wall_ms']:.2f} | {r['cpu_ms']:.0f} |")


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
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's default)")
    ap.add_argument("--one-thread", action="store_true", help="also official-style and ours at one thread, CPU time")
    ap.add_argument("--plain-linear", action="store_true", help="also ours with generator.model.Linear's path off")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-sub-tokens", action="store_true", help="skip the M = 2, 3, 4 sub-token cost section")
    ap.add_argument("--sub-grid", type=int, default=8)
    ap.add_argument("--naive", action="store_true", help="also the naive-recompute comparison (interpolated)")
    ap.add_argument("--naive-points", type=int, default=6)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    scales = tuple(args.cfg)
    print(machine_header())

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

    variants = {"official-style": official, "ours (eager, default)": ours}
    if args.plain_linear:
        variants["ours, plain F.linear"] = ours_plain_linear
    compile_s = None
    if not args.no_compile:
        t = time.perf_counter()
        ours(True)
        compile_s = time.perf_counter() - t
        variants["ours, compile=True"] = lambda: ours(True)

    res = interleaved(variants, args.repeats, time.process_time)
    ref = res["official-style"][4]
    equal = all(torch.equal(r[4][0], ref[0]) and torch.equal(r[4][1], ref[1]) for r in res.values())
    weight_bytes = step_weight_bytes(model)
    floor = weight_bytes / stream_bytes_per_s()
    flops = step_flops(model, rows)
    gemm_floor = flops / gemm_flops_per_s()
    print(f"equal outputs (all variants, same seed): {equal}")
    if compile_s is not None:
        print(f"compile=True: first run (compile + sampling) {compile_s:.1f} s")
    title = (f"{n_params / 1e6:.1f} M params (dim {args.dim}, {args.layers}+{args.intra} layers), batch {B} + CFG, "
             f"fp32, {threads} threads")
    print(f"\n| {title} | wall s / {N} steps | wall ms / step | × official (wall) | process CPU s | "
          "× official (CPU) | weight-read floor / step | peak extra RSS |")
    print("|---|---|---|---|---|---|---|---|")
    w0, c0 = res["official-style"][:2]
    for name, (w, c, peak, _, _) in res.items():
        print(f"| {name} | {w:.1f} | {w / N * 1e3:.0f} | {w0 / w:.2f} | {c:.1f} | {c0 / c:.2f} | "
              f"{floor / (w / N):.0%} | {peak:.0f} MiB |")
    print(f"\nrows {rows}; a step reads {weight_bytes / 2**20:.0f} MiB of float32 weights (spatial blocks once, intra "
          f"blocks + norm per sub-token, heads): weight-read floor {floor * 1e3:.0f} ms / step at the read bandwidth "
          f"of a sum ({stream_bytes_per_s() / 1e9:.1f} GB/s, {threads} threads); {flops / 1e9:.2f} GFLOP / step: "
          f"GEMM floor {gemm_floor * 1e3:.0f} ms / step at {gemm_flops_per_s() / 1e9:.1f} GFLOP/s (fp32 GEMM, "
          f"{threads} threads)")
    print("all runs (wall s): " + "; ".join(f"{k}: {', '.join(f'{v:.1f}' for v in r[3])}" for k, r in res.items()))

    if args.one_thread:
        torch.set_num_threads(1)
        one = interleaved({"official-style": official, "ours (eager, default)": ours}, args.repeats,
                          time.thread_time)
        floor1 = weight_bytes / stream_bytes_per_s()
        print(f"\nOne thread, CPU time of the sampling thread (load average {os.getloadavg()[0]:.2f}):")
        print(f"| one thread | CPU s / {N} steps | CPU ms / step | × official (CPU) | wall s | × official (wall) | "
              "weight-read floor / step (wall) |")
        print("|---|---|---|---|---|---|---|")
        for name, (w, c, _, _, _) in one.items():
            print(f"| {name} | {c:.1f} | {c / N * 1e3:.0f} | {one['official-style'][1] / c:.2f} | {w:.1f} | "
                  f"{one['official-style'][0] / w:.2f} | {floor1 / (w / N):.0%} |")
        print(f"weight-read floor at one thread: {floor1 * 1e3:.0f} ms / step")
        torch.set_num_threads(threads)

    if not args.no_sub_tokens:
        kw = dict(dim=args.dim, layers=args.layers, intra=args.intra, grid=args.sub_grid, batch=B)
        print_sub_token_cost(sub_token_cost(**kw), **kw)

    if args.naive:
        naive_comparison(model, labels, scales, args.naive_points, *res["ours (eager, default)"][4],
                         res["ours (eager, default)"][0])
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min)")


if __name__ == "__main__":
    main()
