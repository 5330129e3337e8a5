"""Video sampling speed: ``VideoGenerator`` token sampling, eager and compiled, against the official sampler's
computation on the same weights, with the KV-cache memory and the weight-read floor per step.

Models:

* ``demo``: the bundled moving-digits video generator (``VideoGenerator.from_pretrained("demo")``), one clip
  per class (10 clips, CFG at the model's default scales, 20 rows), tokens only and tokens + decode;
* ``B``: the B preset (1024 wide, 24 blocks, 2 intra blocks, 16 heads, 18 bits as 6 + 12) over 5 × 16 × 16 =
  1,280 tokens (a 17 × 128² clip through the official video tokenizer), random weights (heads N(0, 0.02) so that
  sampling is not uniform), batch 4 with CFG (8 rows), float32 on the CPU. ``--b-dim``/``--b-layers`` shrink it.

Variants, interleaved, medians of ``--repeats`` runs: ours eager (``generate_tokens``: fixed-size caches read
through their filled prefix), ours compiled (``compile=True``; the compile time is reported apart), and the
official-style sampler (``benchmarks/official_style.py::official_style_sample``, ``sample_Open_MAGVIT2`` op for op:
caches attached per run and sized 1 + N rounded up to 8, intra caches re-allocated per step, masked attention over
every slot) run on the same video transformer — the official code has no video generator, so this is its sampler
applied to the same sequence. All variants start from the same seed and must return identical tokens
("equal outputs").

Time: wall clock at torch's default thread count first, then process CPU time. The first line is
``limits.machine_header``. Peak memory: the RSS above the start (``bench_sampling.PeakRSS``), and the KV caches'
size computed from their shapes (2 × layers × rows × heads × N × head_dim × bytes). Floors: the bytes of the
weights one decode step reads / ``limits.stream_bytes_per_s`` (weight-read floor), and each variant's step as the
floor's fraction of it.

Usage: ``.venv/bin/python benchmarks/bench_video_sampling.py [--models demo B] [--repeats 3] [--no-compile]
[--device cuda]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_sampling import PeakRSS, interleaved, step_weight_bytes
from limits import bandwidth_floor_s, machine_header
from official_style import official_style_sample
from open_magvit2.generator import GENERATOR_PRESETS, VideoGeneratorConfig, VideoGeneratorTransformer, generate_tokens


def b_video_transformer(dim: int, layers: int, device: torch.device, frames: int = 5, grid: int = 16
                        ) -> VideoGeneratorTransformer:
    """The B preset (or a narrower/shallower one) over frames × grid² tokens, random N(0, 0.02) weights."""
    b = GENERATOR_PRESETS["B"]
    fields = {f.name: getattr(b, f.name) for f in dataclasses.fields(b) if f.init}
    fields.update(dim=dim, n_layers=layers, n_heads=dim // 64, frames=frames, grid_size=grid, num_classes=101)
    config = VideoGeneratorConfig(**fields)
    with torch.device("meta"):
        model = VideoGeneratorTransformer(config=config)
    return random_weights(model, device)


def random_weights(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A model built on the meta device, materialised on ``device`` (in ``dtype``) with seeded random weights:
    matrices N(0, 0.02), vectors 1 (speed does not depend on the values; zero heads would make sampling uniform)."""
    if dtype is not None:
        model = model.to(dtype)
    model = model.to_empty(device=device).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.02)
            else:
                p.fill_(1.0)
    return model


def kv_cache_bytes(model: VideoGeneratorTransformer, rows: int) -> int:
    c = model.config
    elem = model.pre_emb.weight.element_size()
    spatial = 2 * c.n_layers * rows * c.n_heads * c.seq_len * c.head_dim * elem
    intra = 2 * c.n_intra_layers * rows * c.n_heads * c.sub_tokens * c.head_dim * elem
    return spatial + intra


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: VideoGeneratorTransformer, labels: torch.Tensor, cfg: tuple[float, ...], repeats: int,
            compile_opt: Any, baseline: bool) -> dict[str, Any]:
    """Time eager / compiled / official-style sampling of one batch; returns the figures as a dict."""
    device = labels.device
    c = model.config
    rows = 2 * labels.shape[0] if max(cfg) > 1 else labels.shape[0]

    def ours(compile: Any):
        def run():
            torch.manual_seed(0)
            out = generate_tokens(model, labels, cfg_scale=cfg, compile=compile)
            sync(device)
            return out.tokens
        return run

    def official():
        torch.manual_seed(0)
        out = official_style_sample(model, labels, (cfg[0], cfg[-1]))
        sync(device)
        return out

    res: dict[str, Any] = {"tokens_per_clip": c.seq_len, "clips": labels.shape[0], "rows": rows,
                           "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
                           "kv_cache_mib": round(kv_cache_bytes(model, rows) / 2**20, 1)}
    variants: dict[str, Any] = {"ours eager": ours(False)}
    if baseline and c.sub_tokens == 2:
        variants["official-style"] = official
    if compile_opt:
        t = time.perf_counter()
        ours(compile_opt)()
        res["compile_s"] = round(time.perf_counter() - t, 1)
        variants["ours compiled"] = ours(compile_opt)
    runs = interleaved(variants, repeats, time.process_time)
    outs = [r[4] for r in runs.values()]
    res["equal_outputs"] = all(all(torch.equal(a, b) for a, b in zip(outs[0], o)) for o in outs[1:])
    floor = bandwidth_floor_s(step_weight_bytes(model), device)
    res["weight_read_floor_ms_per_step"] = round(floor * 1e3, 3)
    for name, (wall, cpu, mib, _walls, _) in runs.items():
        res[name] = {"wall_s_per_batch": round(wall, 3), "s_per_clip": round(wall / labels.shape[0], 3),
                     "tokens_per_s": round(c.seq_len * labels.shape[0] / wall, 1), "cpu_s": round(cpu, 2),
                     "ms_per_step": round(wall / c.seq_len * 1e3, 2),
                     "floor_fraction": round(floor / (wall / c.seq_len), 3), "peak_extra_mib": round(mib, 1)}
    if "official-style" in runs:
        res["speedup_eager_vs_official"] = round(runs["official-style"][0] / runs["ours eager"][0], 2)
        if "ours compiled" in runs:
            res["speedup_compiled_vs_official"] = round(runs["official-style"][0] / runs["ours compiled"][0], 2)
    return res


def demo_section(repeats: int, compile_opt: Any, device: torch.device) -> dict[str, Any]:
    from open_magvit2 import VideoGenerator

    gen = VideoGenerator.from_pretrained("demo", device=device)
    labels = torch.arange(gen.config.num_classes, device=device)
    res = measure(gen.transformer, labels, gen.config.sample_cfg_scale, repeats, compile_opt, baseline=True)
    with PeakRSS() as mem:
        t = time.perf_counter()
        idx = gen.generate(labels, generator=torch.Generator(device).manual_seed(0))
        t_tokens = time.perf_counter() - t
        t = time.perf_counter()
        gen.decode(idx)
        sync(device)
        t_decode = time.perf_counter() - t
    res["eager_tokens_and_decode"] = {"tokens_s": round(t_tokens, 3), "decode_s": round(t_decode, 3),
                                      "s_per_clip": round((t_tokens + t_decode) / len(labels), 3),
                                      "peak_extra_mib": round(mem.mib, 1),
                                      "frames": gen.num_frames, "frame_size": gen.frame_size}
    return res


def print_result(name: str, res: dict[str, Any]) -> None:
    print(f"\n## {name}: {res['params_m']} M parameters, {res['tokens_per_clip']} tokens per clip, "
          f"{res['clips']} clips ({res['rows']} rows with CFG); KV caches {res['kv_cache_mib']} MiB; "
          f"weight-read floor {res['weight_read_floor_ms_per_step']} ms/step")
    print("| variant | wall s/batch | s/clip | tokens/s | ms/step | floor / step | CPU s | peak extra MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for k, v in res.items():
        if isinstance(v, dict) and "wall_s_per_batch" in v:
            print(f"| {k} | {v['wall_s_per_batch']} | {v['s_per_clip']} | {v['tokens_per_s']} | {v['ms_per_step']} | "
                  f"{v['floor_fraction']} | {v['cpu_s']} | {v['peak_extra_mib']} |")
    extras = {k: v for k, v in res.items() if not (isinstance(v, dict) and "wall_s_per_batch" in v)}
    print("  " + ", ".join(f"{k}={v}" for k, v in extras.items() if k not in ("params_m", "tokens_per_clip")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["demo", "B"], choices=["demo", "B"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--b-dim", type=int, default=1024)
    ap.add_argument("--b-layers", type=int, default=24)
    ap.add_argument("--batch", type=int, default=4, help="clips per batch of the B model (CFG doubles the rows)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-baseline", action="store_true", help="skip the official-style sampler")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(machine_header())
    compile_opt: Any = not args.no_compile
    if "demo" in args.models:
        print_result("demo moving-digits video generator", demo_section(args.repeats, compile_opt, device))
    if "B" in args.models:
        model = b_video_transformer(args.b_dim, args.b_layers, device)
        labels = (torch.arange(args.batch) * 37 % 101).to(device)
        res = measure(model, labels, (1.9, 2.0), args.repeats, compile_opt, baseline=not args.no_baseline)
        print_result(f"B-size video transformer (dim {args.b_dim}, {args.b_layers} blocks), 1,280 tokens", res)
    print(f"\nload average at the end: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
