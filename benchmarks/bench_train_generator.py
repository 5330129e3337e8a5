"""AR generator training throughput: pre-tokenised shards vs encoding every batch on the fly (docs/design.md O-30).

The official loop encodes every image with the frozen 256_L tokenizer at every step; ``tokenize-dataset`` encodes
once and the trainer then reads token shards. Both paths run the real ``train_generator`` loop (DDP on a
1-process group, AdamW, clipping, logging) in the same run of this script, on the same images:

* data: ``--images`` random 256×256 PNGs in 4 class folders;
* tokenizer: the ``imagenet_256_L`` architecture (the first stage of AR_256_B/L/XL, 16× down, 18 bits) with random
  weights (no downloads here; its speed does not depend on the weights); 256² px → 16×16 = 256 tokens;
* generators: ``configs/generator/tiny.yaml`` and ``B.yaml`` (343.6 M parameters, batch 1), in float32 (this CPU
  has no bf16 matmul units, so bf16 autocast is slower here), no sample grids, one checkpoint at the end (after
  the timed steps).

Throughput = the trainer's own ``throughput/tokens_per_s`` (B · 256 tokens / wall time between two optimiser
steps, data loading and encoding included), median over the steps after the first of every run. The two paths
alternate (shards, on the fly, shards, ...; ``--repeats`` runs each), so that a change in the load of a shared
machine hits both. Each run is a fresh subprocess; peak = its high-water RSS (``ru_maxrss``, whole process),
and "after imports" the same mark before the run starts. (Linux keeps ``ru_maxrss`` across ``exec``, so the
parent stays small: the data set and the token set are made in a subprocess too.) The one-off cost of
``tokenize-dataset`` on the same images is reported.

A second measurement pairs the two at the step level (``paired_worker``): in one process it alternates a
training step on shard tokens and one on freshly encoded images, ``--pairs`` times, and reports the ratio of
their CPU times (``time.process_time``: the work this process did, both threads) per pair, with the wall times
beside. On a shared machine whose load swings within a minute, wall times of separate runs vary several-fold; the
CPU time of the same work varies far less.

Usage: ``.venv/bin/python benchmarks/bench_train_generator.py [--images 8] [--repeats 2] [--pairs 3] [--skip-b]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZE = 256
# (config, path) → (batch, optimiser steps); on-the-fly steps are few because each costs B tokenizer encodes.
PLAN = {
    ("tiny", "shards"): (4, 30),
    ("tiny", "on the fly"): (4, 4),
    ("B", "shards"): (1, 4),
    ("B", "on the fly"): (1, 4),
}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(config: str, mode: str, root: str, out: str) -> None:
    import torch  # noqa: F401 - counted in the baseline

    from open_magvit2.train.config import load_recipe
    from open_magvit2.train.generator import GeneratorTrainConfig, train_generator
    from open_magvit2.train.metrics import read_metrics

    base = _peak_mib()
    batch, steps = PLAN[(config, mode)]
    sets = [f"data.batch_size={batch}", "run.precision=fp32", "run.sample_every=0", "run.log_every=1",
            f"run.save_every={steps}"]
    data = Path(root) / "tokens"
    if mode == "on the fly":
        data = Path(root) / "images"
        sets += [f"data.tokenizer={Path(root) / 'tokenizer'}", f"data.size={SIZE}"]
    cfg = load_recipe(GeneratorTrainConfig, REPO / "configs" / "generator" / f"{config}.yaml", sets,
                      run={"max_steps": steps})
    run = Path(root) / f"run-{config}-{mode.replace(' ', '_')}"
    t0 = time.perf_counter()
    train_generator(cfg, data, run)
    rates = [m["throughput/tokens_per_s"] for m in read_metrics(run)][1:]
    result = {"rates": rates, "steps": steps, "batch": batch,
              "wall_s": time.perf_counter() - t0, "peak_mib": _peak_mib(), "import_mib": base}
    Path(out).write_text(json.dumps(result))


def paired_worker(config: str, root: str, out: str, pairs: int) -> None:
    """Alternate, in one process, one training step on shard tokens and one on freshly encoded images: the
    trainer's data paths (``TrainData.next_batch``) and its step (factorise, forward, loss, backward, clip, AdamW),
    without the DDP wrapper. A load change of the shared machine then hits both sides of each pair."""
    import torch

    from open_magvit2.distributed import DistContext
    from open_magvit2.generator import GeneratorTransformer, generator_loss
    from open_magvit2.quantize import factorize_indices
    from open_magvit2.train.config import load_recipe
    from open_magvit2.train.generator import GeneratorTrainConfig
    from open_magvit2.train.generator_arch import resolve_generator_config
    from open_magvit2.train.generator_data import open_train_data
    from open_magvit2.train.optim import adamw, grad_norm

    batch = PLAN[(config, "shards")][0]
    path = REPO / "configs" / "generator" / f"{config}.yaml"
    cfg = load_recipe(GeneratorTrainConfig, path, [f"data.batch_size={batch}"])
    fly = load_recipe(GeneratorTrainConfig, path, [f"data.batch_size={batch}", f"data.size={SIZE}",
                                                   f"data.tokenizer={Path(root) / 'tokenizer'}"])
    ctx = DistContext()
    sources = {"shards": open_train_data(Path(root) / "tokens", cfg.data, ctx, 0),
               "on the fly": open_train_data(Path(root) / "images", fly.data, ctx, 0)}
    gcfg = resolve_generator_config(cfg.model, cfg.model_args, sources["shards"])
    torch.manual_seed(0)
    model = GeneratorTransformer(config=gcfg).train()
    opt = adamw(model, cfg.optim)
    times: dict[str, list[float]] = {"shards": [], "on the fly": []}
    cpu: dict[str, list[float]] = {"shards": [], "on the fly": []}
    for i in range(pairs + 1):  # pair 0 warms up
        for name, data in sources.items():
            t0, c0 = time.perf_counter(), time.process_time()
            tokens, labels = data.next_batch(ctx.device)
            pre, post = factorize_indices(tokens.flatten(1), gcfg.factorized_bits)
            out_ = generator_loss(*model(pre, post, labels), pre, post)
            out_.loss.backward()
            grad_norm(model.parameters(), cfg.optim.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i:
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    ratios = [f / s for s, f in zip(cpu["shards"], cpu["on the fly"])]
    Path(out).write_text(json.dumps({"times": times, "cpu": cpu, "ratios": ratios, "batch": batch}))


def prepare(root: Path, images: int) -> None:
    """Images, the tokenizer, and the token set; writes tokenize-dataset's images/s to ``root/prepare.json``."""
    import numpy as np
    import torch
    from PIL import Image

    from open_magvit2.data.pretokenize import tokenize_dataset
    from open_magvit2.tokenizer import ImageTokenizer
    from open_magvit2.tokenizer.presets import tokenizer_config

    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / "images" / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    torch.manual_seed(0)
    ImageTokenizer(tokenizer_config("imagenet_256_L")).save_pretrained(root / "tokenizer")
    t0 = time.perf_counter()
    tokenize_dataset(root / "tokenizer", root / "images", SIZE, root / "tokens", batch_size=4, num_workers=0)
    (root / "prepare.json").write_text(json.dumps({"images_per_s": images / (time.perf_counter() - t0)}))


def _run(config: str, mode: str, root: Path, repeat: int) -> dict:
    out = root / f"{config}-{mode.replace(' ', '_')}-{repeat}.json"
    subprocess.run([sys.executable, __file__, "--worker", config, mode, str(root), str(out)], check=True)
    shutil.rmtree(root / f"run-{config}-{mode.replace(' ', '_')}")  # the next repeat starts a fresh run
    return json.loads(out.read_text())


def _merge(runs: list[dict]) -> dict:
    per_run = [statistics.median(r["rates"]) for r in runs]
    return {**runs[0], "tokens_per_s": statistics.median([x for r in runs for x in r["rates"]]), "per_run": per_run,
            "peak_mib": max(r["peak_mib"] for r in runs), "import_mib": max(r["import_mib"] for r in runs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8, help="random 256² images in the data set (default 8)")
    p.add_argument("--skip-b", action="store_true", help="only the tiny config")
    p.add_argument("--repeats", type=int, default=2, help="runs of each path, alternating (default 2)")
    p.add_argument("--pairs", type=int, default=3, help="paired steps per config (default 3; 0: none)")
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--paired-worker", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--prepare", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    if args.paired_worker:
        paired_worker(*args.paired_worker, args.pairs)
        return 0
    if args.prepare:
        prepare(Path(args.prepare), args.images)
        return 0

    import torch

    configs = ["tiny"] if args.skip_b else ["tiny", "B"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run([sys.executable, __file__, "--prepare", str(root), "--images", str(args.images)], check=True)
        images_per_s = json.loads((root / "prepare.json").read_text())["images_per_s"]
        runs: dict[tuple[str, str], list[dict]] = {}
        for c in configs:
            for i in range(args.repeats):
                for m in ("shards", "on the fly"):
                    runs.setdefault((c, m), []).append(_run(c, m, root, i))
        rows = {k: _merge(v) for k, v in runs.items()}
        paired = {}
        for c in configs if args.pairs else []:
            out = root / f"paired-{c}.json"
            subprocess.run([sys.executable, __file__, "--paired-worker", c, str(root), str(out), "--pairs",
                            str(args.pairs)], check=True)
            paired[c] = json.loads(out.read_text())
    load = os.getloadavg()
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, float32; load average {load[0]:.1f} at the end.")
    print(f"tokenize-dataset (once): {images_per_s:.2f} images/s with the 256_L tokenizer at {SIZE}².\n")
    print("| config | batch | data path | runs × steps | tokens/s (per run) | ms/step | peak RSS MiB (after imports) "
          "| shards / on the fly |")
    print("|---|---|---|---|---|---|---|---|")
    for (c, m), r in rows.items():
        ms = 1e3 * r["batch"] * 256 / r["tokens_per_s"]
        ratio = r["tokens_per_s"] / rows[(c, "on the fly")]["tokens_per_s"] if m == "shards" else None
        each = ", ".join(f"{x:.1f}" for x in r["per_run"])
        print(f"| {c} | {r['batch']} | {m} | {len(r['per_run'])} × {r['steps']} | {r['tokens_per_s']:.1f} ({each}) "
              f"| {ms:.0f} | "
              f"{r['peak_mib']:.0f} ({r['import_mib']:.0f}) | {'' if ratio is None else f'{ratio:.1f}×'} |")
    if paired:
        print("\nPaired steps in one process (shards step, then on-the-fly step, alternating); CPU = process time "
              "(both threads), wall = elapsed:\n")
        print("| config | batch | pairs | CPU s/step shards | CPU s/step on the fly | wall s/step shards, on the fly "
              "| on the fly / shards (CPU) per pair | median |")
        print("|---|---|---|---|---|---|---|---|")
    for c, r in paired.items():
        t, u, med = r["times"], r["cpu"], statistics.median
        print(f"| {c} | {r['batch']} | {len(r['ratios'])} | {med(u['shards']):.2f} | {med(u['on the fly']):.2f} | "
              f"{med(t['shards']):.2f}, {med(t['on the fly']):.2f} | {', '.join(f'{x:.2f}' for x in r['ratios'])} "
              f"| {med(r['ratios']):.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
