"""Keeping freed CPU memory (``open_magvit2.cpu_memory.keep_freed_memory``, what the commands and ``make
demo-models`` set) against glibc's defaults, on the two CPU workloads of the demo video build:

* ``encode``: the moving-digit clips through the demo video generator's tokenizer, 16 clips a batch (what
  ``make demo-models`` does to make the video token set; 17 × 64² clips, float32): seconds per clip, the process's
  kernel (sys) time and minor page faults per clip, and whether the tokens are equal;
* ``train``: training steps of the demo video generator's recipe (``configs/demo/video_generator.yaml``: batch
  8 × 576 tokens, AdamW) from its initial weights on the demo token grid's shape, bf16 autocast where bf16 is fast
  (else float32), eager, and compiled when ``--compile`` (the recipe compiles): steps per second.

Each variant runs in its own fresh process (the thresholds are per process and cannot be unset), alternating
default / keep, ``--repeats`` times; medians. Time: wall clock at torch's default thread count first, then
process CPU time (user + sys). Peak memory: the process's RSS high-water mark above the RSS before the measured
work (``peak_memory``). The baseline is the same code without the call: glibc's mmap for every block over its
(dynamic, at most 32 MiB) threshold. With the thresholds raised the RSS before the measured work already holds
the warm-up's freed blocks, so the whole process's high-water mark is the figure to compare.

Usage: ``.venv/bin/python benchmarks/bench_cpu_memory.py [--clips 96] [--steps 30] [--repeats 3] [--compile]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import torch
from open_magvit2.cpu_memory import keep_freed_memory
import peak_memory
mode, work, n, compiled = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
if mode == "keep":
    assert keep_freed_memory()
from open_magvit2 import VideoGenerator
gen = VideoGenerator.from_pretrained("demo").eval()
out = {}
if work == "encode":
    from open_magvit2.data.video_io import uint8_to_video
    from open_magvit2.demo.data import moving_digits
    clips, _ = moving_digits("train", n, seed=0)
    x = uint8_to_video(torch.from_numpy(clips).permute(0, 4, 1, 2, 3))
    tok = gen.tokenizer
    with torch.no_grad():
        tok.encode(x[:16])  # warm-up
        base = peak_memory.reset()
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        tokens = torch.cat([tok.encode(p) for p in x.split(16)])
        wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out = {"per_item_s": wall / n, "cpu_s": (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / n,
           "sys_s": (r1.ru_stime - r0.ru_stime) / n, "faults": (r1.ru_minflt - r0.ru_minflt) / n,
           "peak_mib": peak_memory.peak_since(base), "hwm_mib": peak_memory._status_mib("VmHWM"),
           "tokens": tokens.flatten()[::97].tolist()}
else:
    from pathlib import Path
    from open_magvit2.demo.build import CONFIGS, fast_bf16
    from open_magvit2.generator import generator_loss
    from open_magvit2.generator.model import transformer_for
    from open_magvit2.quantize import factorize_indices
    from open_magvit2.train.config import load_recipe
    from open_magvit2.train.generator import GeneratorTrainConfig
    from open_magvit2.train.optim import adamw
    cfg = load_recipe(GeneratorTrainConfig, CONFIGS / "video_generator.yaml")
    torch.manual_seed(0)
    model = transformer_for(gen.config).train()
    opt = adamw(model, cfg.optim)
    fwd = torch.compile(model) if compiled else model
    g = gen.config
    bits = g.factorized_bits
    B = cfg.data.batch_size
    tokens = torch.randint(0, 2 ** sum(bits), (4, B, g.seq_len))
    labels = torch.randint(0, g.num_classes, (4, B))
    dtype = torch.bfloat16 if fast_bf16() else torch.float32
    def step(i):
        subs = factorize_indices(tokens[i % 4], bits)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype == torch.bfloat16):
            loss = generator_loss(*fwd(*subs, labels[i % 4]), *subs).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    for i in range(8):
        step(i)
    base = peak_memory.reset()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for i in range(n):
        step(i)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out = {"per_item_s": wall / n, "cpu_s": (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / n,
           "sys_s": (r1.ru_stime - r0.ru_stime) / n, "faults": (r1.ru_minflt - r0.ru_minflt) / n,
           "peak_mib": peak_memory.peak_since(base), "hwm_mib": peak_memory._status_mib("VmHWM"), "dtype": str(dtype)}
print("RESULT " + json.dumps(out))
"""


def run_child(mode: str, work: str, n: int, compiled: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPEN_MAGVIT2_CPU_MEMORY"}
    p = subprocess.run([sys.executable, "-c", CHILD, str(HERE), mode, work, str(n), "1" if compiled else "0"],
                       capture_output=True, text=True, env=env, check=False)
    lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    if p.returncode or not lines:
        raise SystemExit(f"{work}/{mode} failed:\n{p.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=96, help="moving-digit clips encoded per run")
    ap.add_argument("--steps", type=int, default=30, help="generator training steps per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time compiled training steps (as the recipe)")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from limits import machine_header

    print(machine_header())
    works = [("encode", args.clips, False, "s/clip"), ("train", args.steps, False, "s/step")]
    if args.compile:
        works.append(("train", args.steps, True, "s/step"))
    for work, n, compiled, unit in works:
        runs: dict[str, list[dict]] = {"default": [], "keep": []}
        for _ in range(args.repeats):
            for mode in ("default", "keep"):
                runs[mode].append(run_child(mode, work, n, compiled))
        med = {m: {k: statistics.median(r[k] for r in rs) for k in ("per_item_s", "cpu_s", "sys_s", "faults",
                                                                     "peak_mib", "hwm_mib")} for m, rs in runs.items()}
        name = f"{work}{' (compiled)' if compiled else ''}"
        extra = ""
        if work == "encode":
            same = all(r["tokens"] == runs["default"][0]["tokens"] for rs in runs.values() for r in rs)
            extra = f", tokens equal: {same}"
        else:
            extra = f", {runs['keep'][0]['dtype']}"
        print(f"\n{name}: {n} per run, {args.repeats} runs each, medians{extra}")
        for m in ("default", "keep"):
            d = med[m]
            print(f"  {m:8s} wall {d['per_item_s']:.4f} {unit} | CPU {d['cpu_s']:.4f} (sys {d['sys_s']:.4f}) {unit} | "
                  f"minor faults {d['faults']:.0f} per item | peak RSS +{d['peak_mib']:.0f} MiB over the start of the "
                  f"measured work, {d['hwm_mib']:.0f} MiB for the whole process")
        ratio = med["default"]["per_item_s"] / med["keep"]["per_item_s"]
        cpu = med["default"]["cpu_s"] / med["keep"]["cpu_s"]
        print(f"  keep / default: {ratio:.2f}× faster (wall, default threads), {cpu:.2f}× less CPU time")


if __name__ == "__main__":
    main()
