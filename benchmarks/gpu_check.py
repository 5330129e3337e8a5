"""The prepared GPU check (run through ``benchmarks/gpu_check.sh``): one JSON object and markdown tables.

Sections, in this order (each one times itself and records an error instead of stopping the others; a time budget
guard, ``--budget-s``, skips what no longer fits with a recorded reason, so the whole script stays within the
8 minutes of ``gpu_check.sh``; the JSON is rewritten after every section):

0. ``limits``: the GPU's measured limits (``benchmarks/limits.py``): fp32 GEMM (TF32 off) and bf16 GEMM FLOP/s,
   read bandwidth;
1. ``tokenizer``: ``imagenet_256_L`` (random weights), batch 32 at 256²: encode and decode images/s in fp32 (TF32
   off, as ``precision.set_tf32(False)``) and bf16, each with its fraction of the GEMM limit of its dtype (FLOPs
   counted by ``FlopCounterMode``), the bf16 index agreement (tokens and bits) and decode error against fp32, peak
   GPU memory of each; also bf16 with channels-last on, to decide ``precision.CHANNELS_LAST``;
2. ``sampling``: AR-B (random weights), batch 8 with CFG (16 rows), bf16: seconds per batch eager vs
   ``compile=True`` (compile time apart), ms per decode step next to the weight-read floor (parameter bytes /
   measured read bandwidth) and the fraction of the bandwidth limit that is, equal tokens eager vs compiled;
3. ``train_tokenizer``: one training iteration of the trainer (``train.tokenizer.train_step``: G step, D step with
   LPIPS, both Adam steps, EMA) for ``imagenet_128_L`` and ``imagenet_256_L``, bf16 autocast, batch 8 per GPU as
   the recipes: images/s per GPU, peak memory, fraction of the bf16 GEMM limit; torch.compile off;
4. ``train_generator``: AR-B, AR-L and AR-XL training steps under FSDP2 on one rank (``train/fsdp.py``, a
   1-process group; bf16 autocast, AdamW with the paper's settings, clip 1.0), the recipes' per-GPU batches:
   tokens/s per GPU, peak memory, fraction of the bf16 GEMM limit;
5. ``video``: ``ucf101_128_L`` encode + decode of 17×128² clips, batch 2, fp32 and bf16: clips/s, fraction of the
   GEMM limit;
6. ``train_tokenizer_compiled``: section 3 with the tokenizer's and the discriminator's DDP wrappers compiled
   (compile time apart);
7. ``video_sampling``: a B-size video generator over 5 × 16 × 16 = 1,280 tokens (random weights, batch 4 with CFG,
   bf16): seconds per clip and tokens/s eager and ``compile=True`` and the official-style sampler on the same
   weights, KV-cache memory, the weight-read floor per step (``benchmarks/bench_video_sampling.py::measure``).

Then the "What a run costs" table of ``docs/training.md``, filled in from these figures (GPU-hours = steps × global
batch / (images or tokens per s per GPU) / 3600).

``--dry-run`` runs everything on the CPU with tiny presets in float32 (32² images and crops, 5×32² clips; the
``tiny`` AR model, on a 4×4 grid for sampling; ``compile`` through the "eager" backend, of the 128_L tiny trainer only;
one repeat; the bf16 parts only where the report needs them): a check that the script works, used by the tests.
Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from open_magvit2 import precision
from open_magvit2.generator import GENERATOR_PRESETS, GeneratorTransformer, generate_tokens
from open_magvit2.tokenizer import ImageTokenizer, VideoTokenizer, tokenizer_config

sys.path.insert(0, str(Path(__file__).parent))
import limits  # benchmarks/: the measured limits and the FLOP counter
from bench_tokenizer import smooth_images
from bench_video_sampling import random_weights

# The official runs' GPU counts (the recipes' header comments): the global batch is the recipe's per-GPU batch × these.
OFFICIAL_GPUS = {"imagenet_128_L": 32, "imagenet_256_L": 32, "pretrain_256_262144": 32, "pretrain_256_16384": 32,
                 "ucf101_128_L": 64, "B": 32, "L": 64, "XL": 96}
DATASET_SIZE = {"image": 1_281_167, "video": 9_537}  # ImageNet-1k train images; UCF-101 train split 1 clips
# the measured figure each recipe's cost is derived from (section, entry); None: not measured by this script
COST_SOURCE: dict[str, tuple[str, str] | None] = {
    "imagenet_128_L": ("train_tokenizer", "imagenet_128_L"),
    "imagenet_256_L": ("train_tokenizer", "imagenet_256_L"),
    "pretrain_256_262144": ("train_tokenizer", "imagenet_256_L"),  # the same network as 256_L
    "pretrain_256_16384": ("train_tokenizer", "imagenet_256_L"),  # 14 bits, blur discriminator: an estimate
    "ucf101_128_L": None,  # the video training step is not timed here
    "B": ("train_generator", "B"),
    "L": ("train_generator", "L"),
    "XL": ("train_generator", "XL"),
}
# seconds a section needs at least on an H100 (the budget guard skips it when fewer are left)
NEEDS_S = {"tokenizer": 40, "sampling": 60, "train_tokenizer": 50, "train_generator": 50, "video": 30,
           "train_tokenizer_compiled": 150, "video_sampling": 120}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls after one warm-up, and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


@contextlib.contextmanager
def peak_memory(device: torch.device, record: dict, key: str):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if device.type == "cuda":
        record[key] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


class Budget:
    """The script's time budget: what is left, and a recorded reason to skip what needs more."""

    def __init__(self, seconds: float, dry: bool) -> None:
        self.seconds, self.dry = seconds, dry
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def skip_reason(self, needs_s: float) -> str | None:
        """None when ``needs_s`` seconds fit (always in a dry run), else why the part is skipped."""
        left = self.left()
        if self.dry or left >= needs_s:
            return None
        return f"time budget: {max(left, 0):.0f} s left of {self.seconds:.0f} s, needs about {needs_s:.0f} s"


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def fraction(flops: int, seconds: float, peak: float) -> float:
    return round(flops / seconds / peak, 3)


def limits_section(device: torch.device, dry: bool) -> dict:
    n = 256 if dry else None  # a dry run only checks the plumbing
    return {"fp32_gemm_tflops": round(limits.gemm_flops_per_s(torch.float32, device, n=n) / 1e12, 3),
            "bf16_gemm_tflops": round(limits.gemm_flops_per_s(torch.bfloat16, device, n=n) / 1e12, 3),
            "read_bandwidth_gb_s": round(limits.stream_bytes_per_s(device, mib=64 if dry else 2048) / 1e9, 1)}


def gemm(dtype: torch.dtype, device: torch.device, dry: bool) -> float:
    return limits.gemm_flops_per_s(dtype, device, n=256 if dry else None)


def tokenizer_section(device: torch.device, dry: bool, repeats: int) -> dict:
    preset, batch, size = ("imagenet_256_L_tiny", 2, 32) if dry else ("imagenet_256_L", 32, 256)
    res: dict[str, Any] = {"preset": preset, "batch": batch, "size": size}
    torch.manual_seed(0)
    fp32 = ImageTokenizer(tokenizer_config(preset)).eval()
    state = fp32.state_dict()
    fp32 = ImageTokenizer.from_config_and_weights(fp32.config, state, device=device)
    bf16 = ImageTokenizer.from_config_and_weights(fp32.config, state, device=device, dtype="bf16")
    x = smooth_images(batch, size).to(device)
    with torch.inference_mode():
        enc_flops = limits.count_flops(fp32.encode, x)
        dec_flops = limits.count_flops(fp32.decode, fp32.encode(x))
    out = {}
    for name, tok, cl in (("fp32", fp32, False), ("bf16", bf16, False), ("bf16_channels_last", bf16, True)):
        saved = dict(precision.CHANNELS_LAST)
        precision.CHANNELS_LAST[device.type] = cl
        try:
            with torch.inference_mode(), peak_memory(device, res, f"{name}_peak_gib"):
                t_enc, idx = timed(lambda tok=tok: tok.encode(x), device, repeats)
                t_dec, dec = timed(lambda tok=tok, idx=idx: tok.decode(idx), device, repeats)
        finally:
            precision.CHANNELS_LAST.clear()
            precision.CHANNELS_LAST.update(saved)
        res[f"{name}_encode_img_s"] = round(batch / t_enc, 2)
        res[f"{name}_decode_img_s"] = round(batch / t_dec, 2)
        peak = gemm(torch.float32 if name == "fp32" else torch.bfloat16, device, dry)
        res[f"{name}_encode_of_gemm_limit"] = fraction(enc_flops, t_enc, peak)
        res[f"{name}_decode_of_gemm_limit"] = fraction(dec_flops, t_dec, peak)
        out[name] = (idx, dec.float())
    (i32, d32), (i16, _) = out["fp32"], out["bf16"]
    bits = torch.arange(fp32.config.z_channels, device=device)[:, None, None]
    res["bf16_token_agreement"] = round((i16 == i32).float().mean().item(), 5)
    res["bf16_bit_flip_rate"] = round((((i16[:, None] >> bits) ^ (i32[:, None] >> bits)) & 1).float().mean().item(), 6)
    with torch.inference_mode():
        d16_same = bf16.decode(i32).float()  # bf16 decode of the fp32 indices: decoder error alone
    res["bf16_decode_max_abs_err"] = round((d16_same - d32).abs().max().item(), 4)
    res["bf16_decode_mean_abs_err"] = round((d16_same - d32).abs().mean().item(), 5)
    res["decoded_range"] = [round(d32.min().item(), 2), round(d32.max().item(), 2)]
    return res


def sampling_section(device: torch.device, dry: bool, repeats: int) -> dict:
    preset, batch = ("tiny", 2) if dry else ("B", 8)
    config = GENERATOR_PRESETS[preset]
    if dry:
        config = dataclasses.replace(config, grid_size=4)
    dtype = torch.float32 if dry else torch.bfloat16  # bf16 matmuls of tiny CPU models are only slow
    with torch.device("meta"):
        model = GeneratorTransformer(config=config)
    model = random_weights(model, device, dtype)
    labels = (torch.arange(batch) * 37 % config.num_classes).to(device)
    res: dict[str, Any] = {"preset": preset, "batch": batch, "rows": 2 * batch, "dtype": str(dtype),
                           "params_m": round(model.num_params() / 1e6, 1)}
    compile_opt: Any = {"backend": "eager"} if dry else True

    def run(compile: Any, seed: int = 0):
        g = torch.Generator(device=device).manual_seed(seed)
        return generate_tokens(model, labels, cfg_scale=(1.9, 2.0), generator=g, compile=compile)

    with peak_memory(device, res, "eager_peak_gib"):
        t_eager, a = timed(lambda: run(False), device, repeats)
    sync(device)
    t = time.perf_counter()
    run(compile_opt)
    sync(device)
    res["compile_s"] = round(time.perf_counter() - t, 1)
    with peak_memory(device, res, "compiled_peak_gib"):
        t_comp, b = timed(lambda: run(compile_opt), device, repeats)
    n = config.seq_len
    res["eager_s_per_batch"] = round(t_eager, 3)
    res["compiled_s_per_batch"] = round(t_comp, 3)
    res["eager_ms_per_step"] = round(t_eager / n * 1e3, 2)
    res["compiled_ms_per_step"] = round(t_comp / n * 1e3, 2)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    floor = limits.bandwidth_floor_s(weight_bytes, device)  # every weight read once per decode step
    res["bandwidth_gb_s"] = round(limits.stream_bytes_per_s(device) / 1e9, 1)
    res["floor_ms_per_step"] = round(floor * 1e3, 3)
    res["eager_of_bandwidth_limit"] = round(floor / (t_eager / n), 3)
    res["compiled_of_bandwidth_limit"] = round(floor / (t_comp / n), 3)
    res["compiled_equals_eager"] = bool(torch.equal(a.pre, b.pre) and torch.equal(a.post, b.post))
    # the README's case: a CPU torch.Generator with a model on the GPU (draws on the CPU, same tokens everywhere)
    t = time.perf_counter()
    generate_tokens(model, labels, cfg_scale=(1.9, 2.0), generator=torch.Generator().manual_seed(0))
    sync(device)
    res["cpu_generator_s_per_batch"] = round(time.perf_counter() - t, 3)
    return res


def _each(names: list[str], budget: Budget, needs_s: float, fn: Callable[[str], dict]) -> dict:
    """``{name: fn(name)}``, each one guarded by the budget and recording its own error."""
    res: dict[str, Any] = {}
    for name in names:
        reason = budget.skip_reason(needs_s)
        if reason:
            res[name] = {"skipped": reason}
            continue
        t = time.perf_counter()
        try:
            res[name] = fn(name)
        except Exception as e:  # one failing preset is a finding, not a reason to lose the others
            res[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(limit=3)}
        res[name]["s"] = round(time.perf_counter() - t, 1)
    return res


def train_tokenizer_section(device: torch.device, dry: bool, repeats: int, vgg: str, budget: Budget,
                            compiled: bool) -> dict:
    """The trainer's iteration (``train_step``) under bf16 autocast, batch 8 per GPU, LPIPS on (dry: fp32, batch 2,
    32² crops: bf16 convolutions are only slow on CPUs without bf16 units)."""
    from bench_train_tokenizer import build_parts
    from open_magvit2.train.tokenizer import train_step

    sizes = {"imagenet_128_L": 128, "imagenet_256_L": 256}
    batch = 2 if dry else 8

    def one(name: str) -> dict:
        preset, size = (f"{name}_tiny", 32) if dry else (name, sizes[name])
        ctx, guard, parts = build_parts(preset, vgg, "fp32" if dry else "bf16", device.type)
        try:
            if compiled:
                opts: dict[str, Any] = {"backend": "eager"} if dry else {}
                parts = parts._replace(ddp_tok=torch.compile(parts.ddp_tok, **opts),
                                       ddp_disc=torch.compile(parts.ddp_disc, **opts))
            xs = [smooth_images(batch, size, seed=k).to(device) for k in range(2)]
            step = 0

            def it():
                nonlocal step
                r = train_step(parts, [xs[step % 2]], step, ctx=ctx, guard=guard, grad_clip=None, ema_decay=0.999)
                step += 1
                return r

            res: dict[str, Any] = {"preset": preset, "batch": batch, "size": size, "precision": ctx.precision}
            sync(device)
            t0 = time.perf_counter()
            it()  # the first step: allocation, cuDNN autotuning, compilation
            sync(device)
            res["first_step_s"] = round(time.perf_counter() - t0, 1)
            with peak_memory(device, res, "peak_gib"):
                t, r = timed(it, device, repeats)
            res["step_s"] = round(t, 4)
            res["images_per_s"] = round(batch / t, 2)
            res["losses_finite"] = bool(r.taken and all(math.isfinite(v) for v in r.losses.values()))
            if not compiled:
                flops = limits.count_flops(it)
                res["tflop_per_step"] = round(flops / 1e12, 3)
                res["of_gemm_limit"] = fraction(flops, t, gemm(torch.float32 if dry else torch.bfloat16, device, dry))
            return res
        finally:
            parts = xs = None  # drop the models before the next preset
            if compiled:
                torch._dynamo.reset()
            free(device)

    names = ["imagenet_128_L"] if dry and compiled else list(sizes)  # dry: tracing twice only costs test time
    return _each(names, budget, 150 if compiled and not dry else 25, one)


def train_generator_section(device: torch.device, dry: bool, repeats: int, budget: Budget) -> dict:
    """One training step of the AR model under FSDP2 (one rank): bf16 autocast, AdamW, clip, the recipe's batch."""
    from open_magvit2.generator import generator_loss
    from open_magvit2.quantize import factorize_indices
    from open_magvit2.train import fsdp
    from open_magvit2.train.config import load_recipe, resolve_recipe
    from open_magvit2.train.generator import GeneratorTrainConfig
    from open_magvit2.train.optim import adamw, grad_norm

    def one(name: str) -> dict:
        recipe = load_recipe(GeneratorTrainConfig, resolve_recipe(name, "generator"))
        config = GENERATOR_PRESETS[recipe.model]
        batch = 2 if dry else recipe.data.batch_size
        torch.manual_seed(0)
        with torch.device(device):
            model = GeneratorTransformer(config=config)
        model.train()
        fsdp.shard_generator(model)
        opt = adamw(model, recipe.optim)  # after sharding, as the trainer does
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, 2 ** sum(config.factorized_bits), (batch, config.seq_len), generator=g)
        pre, post = (t.to(device) for t in factorize_indices(tokens, config.factorized_bits))
        labels = torch.randint(0, config.num_classes, (batch,), generator=g).to(device)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=not dry):  # dry: fp32 (see above)
                loss = generator_loss(*model(pre, post, labels), pre, post).loss
            loss.backward()
            fsdp.full(grad_norm(model.parameters(), recipe.optim.grad_clip))
            opt.step()
            return loss.detach()

        try:
            res: dict[str, Any] = {"preset": recipe.model, "batch": batch, "seq_len": config.seq_len,
                                   "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}
            with peak_memory(device, res, "peak_gib"):
                t, loss = timed(step, device, repeats)
            res["step_s"] = round(t, 4)
            res["tokens_per_s"] = round(batch * config.seq_len / t, 1)
            res["loss_finite"] = bool(torch.isfinite(loss).item())
            flops = limits.count_flops(step)
            res["tflop_per_step"] = round(flops / 1e12, 3)
            res["of_gemm_limit"] = fraction(flops, t, gemm(torch.float32 if dry else torch.bfloat16, device, dry))
            return res
        finally:
            model = opt = None
            free(device)

    return _each(["tiny"] if dry else ["B", "L", "XL"], budget, 20, one)


def video_section(device: torch.device, dry: bool, repeats: int) -> dict:
    """Video tokenizer encode + decode of whole clips (17×128², batch 2 as the recipe), fp32 and bf16."""
    preset, batch, frames, size = ("ucf101_128_L_tiny", 1, 5, 32) if dry else ("ucf101_128_L", 2, 17, 128)
    torch.manual_seed(0)
    tok = VideoTokenizer(tokenizer_config(preset)).eval()
    state = tok.state_dict()
    x = smooth_images(batch * frames, size).view(batch, frames, 3, size, size).transpose(1, 2).contiguous()
    x = x.to(device)
    res: dict[str, Any] = {"preset": preset, "batch": batch, "frames": frames, "size": size}
    for dtype in ("fp32",) if dry else ("fp32", "bf16"):
        model = VideoTokenizer.from_config_and_weights(tok.config, state, device=device, dtype=dtype)
        with torch.inference_mode(), peak_memory(device, res, f"{dtype}_peak_gib"):
            t_enc, idx = timed(lambda model=model: model.encode(x), device, repeats)
            t_dec, _ = timed(lambda model=model, idx=idx: model.decode(idx), device, repeats)
            if dtype == "fp32":
                enc_flops, dec_flops = limits.count_flops(model.encode, x), limits.count_flops(model.decode, idx)
        peak = gemm(torch.float32 if dtype == "fp32" else torch.bfloat16, device, dry)
        res[f"{dtype}_encode_clips_s"] = round(batch / t_enc, 3)
        res[f"{dtype}_decode_clips_s"] = round(batch / t_dec, 3)
        res[f"{dtype}_encode_of_gemm_limit"] = fraction(enc_flops, t_enc, peak)
        res[f"{dtype}_decode_of_gemm_limit"] = fraction(dec_flops, t_dec, peak)
        del model
        free(device)
    return res


def video_sampling_section(device: torch.device, dry: bool) -> dict:
    """``bench_video_sampling.measure`` on the B-size video transformer (tiny and 2 × 4² tokens for the dry run)."""
    from bench_video_sampling import b_video_transformer, measure

    dim, layers, frames, grid = (64, 1, 2, 4) if dry else (1024, 24, 5, 16)
    model = b_video_transformer(dim, layers, device, frames=frames, grid=grid)
    if not dry:
        model = model.to(torch.bfloat16)
    labels = (torch.arange(1 if dry else 4) * 37 % 101).to(device)
    mem: dict[str, Any] = {}
    with peak_memory(device, mem, "peak_gib"):  # one repeat: a B-size run of 1,280 steps takes tens of seconds
        res = measure(model, labels, (1.9, 2.0), 1, {"backend": "eager"} if dry else True, baseline=True)
    res.update(mem, dtype=str(model.pre_emb.weight.dtype), frames=frames, grid=grid)
    return res


def _recipe_rows() -> list[dict]:
    """The shipped full-size recipes: name, kind, per-GPU and global batch, steps, samples (images or tokens)."""
    from open_magvit2.train.config import load_recipe, recipe_names, resolve_recipe
    from open_magvit2.train.generator import GeneratorTrainConfig
    from open_magvit2.train.optim import steps_from_epochs
    from open_magvit2.train.tokenizer import TokenizerTrainConfig

    rows = []
    for kind, cls in (("tokenizer", TokenizerTrainConfig), ("generator", GeneratorTrainConfig)):
        for name in recipe_names(kind):
            if name not in OFFICIAL_GPUS:  # tiny and demo recipes
                continue
            cfg = load_recipe(cls, resolve_recipe(name, kind))
            global_batch = cfg.data.batch_size * cfg.optim.grad_accum * OFFICIAL_GPUS[name]
            video = kind == "tokenizer" and cfg.tokenizer_config().dims == 3
            per_epoch = DATASET_SIZE["video" if video else "image"] // global_batch
            steps = cfg.run.max_steps or steps_from_epochs(cfg.run.epochs, per_epoch, "run.epochs")
            seq = GENERATOR_PRESETS[cfg.model].seq_len if kind == "generator" else 1
            rows.append({"recipe": name, "kind": kind, "unit": "tokens" if kind == "generator" else
                         ("clips" if video else "images"), "per_gpu": cfg.data.batch_size,
                         "gpus": OFFICIAL_GPUS[name], "global_batch": global_batch, "steps": steps,
                         "epochs": cfg.run.epochs, "samples": steps * global_batch * seq})
    return rows


def cost_table(report: dict) -> str:
    """docs/training.md "What a run costs", filled in: GPU-hours = samples / (samples per s per GPU) / 3600."""
    gpu = report.get("device", "?")
    lines = [f"| recipe | per-GPU batch × official GPUs = global batch | steps | images or tokens seen | "
             f"measured on {gpu} (per GPU) | GPU-hours | hours on the official GPU count |",
             "|---|---|---|---|---|---|---|"]
    for r in _recipe_rows():
        src = COST_SOURCE.get(r["recipe"])
        entry = report.get(src[0], {}).get(src[1], {}) if src else {}
        key = "tokens_per_s" if r["kind"] == "generator" else "images_per_s"
        rate = entry.get(key)
        if rate:
            hours = r["samples"] / rate / 3600
            measured, gpu_h, wall = f"{rate:,.1f} {r['unit'] if r['unit'] != 'clips' else 'images'}/s", \
                f"{hours:,.0f}", f"{hours / r['gpus']:,.1f}"
        else:
            why = "not measured here" if src is None else entry.get("skipped") or entry.get("error") or "missing"
            measured, gpu_h, wall = f"– ({why[:60]})", "–", "–"
        if src and src[1] != r["recipe"] and rate:
            measured += f" ({src[1]} figure)"
        epochs = f" ({r['epochs']:g} epochs)" if r["epochs"] else ""
        lines.append(f"| {r['recipe']} | {r['per_gpu']} × {r['gpus']} = {r['global_batch']} | {r['steps']:,}{epochs} "
                     f"| {r['samples']:,.0f} {r['unit']} | {measured} | {gpu_h} | {wall} |")
    if report.get("dry_run"):
        lines.append("\n(dry run: CPU, tiny presets — these figures mean nothing for the real recipes)")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    rows = ["| section | metric | value |", "|---|---|---|"]
    for section, values in report.items():
        if not isinstance(values, dict):
            continue
        for k, v in values.items():
            if isinstance(v, dict):
                for k2, v2 in v.items():
                    if k2 != "trace":
                        rows.append(f"| {section} | {k}.{k2} | {v2} |")
            elif k != "trace":
                rows.append(f"| {section} | {k} | {v} |")
    return "\n".join(rows)


SECTIONS = ("limits", "tokenizer", "sampling", "train_tokenizer", "train_generator", "video",
            "train_tokenizer_compiled", "video_sampling")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny presets: check that the script runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the JSON here (rewritten after every section)")
    ap.add_argument("--skip", nargs="*", default=[], choices=SECTIONS)
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="seconds for all sections; a section that no longer fits is skipped (gpu_check.sh kills "
                         "the script at 480 s)")
    args = ap.parse_args()
    dry = args.dry_run
    if dry:
        args.repeats = 1
        torch.set_num_threads(1)  # tiny models: many small ops, which a shared machine's second core only slows
    if not dry and not torch.cuda.is_available():
        ap.error("no CUDA device: run on a GPU machine, or pass --dry-run for the CPU smoke check")
    from open_magvit2.distributed import init_distributed, shutdown
    from open_magvit2.eval.backbones import write_random_backbones

    device = torch.device("cpu" if dry else "cuda")
    precision.set_tf32(False)  # the inference policy: exact float32
    budget = Budget(args.budget_s, dry)
    report: dict[str, Any] = {
        "device": "cpu (dry run)" if dry else torch.cuda.get_device_name(device),
        "dry_run": dry,
        "torch": torch.__version__,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "budget_s": args.budget_s,
    }
    start = time.perf_counter()
    ctx = init_distributed(device.type, always=True)  # the training sections' DDP / FSDP2 need a (1-process) group
    hub = tempfile.mkdtemp()
    vgg = str(write_random_backbones(hub, only=("vgg",))["vgg"])  # LPIPS: the real layout, random weights
    sections = {
        "limits": lambda: limits_section(device, dry),
        "tokenizer": lambda: tokenizer_section(device, dry, args.repeats),
        "sampling": lambda: sampling_section(device, dry, args.repeats),
        "train_tokenizer": lambda: train_tokenizer_section(device, dry, args.repeats, vgg, budget, False),
        "train_generator": lambda: train_generator_section(device, dry, args.repeats, budget),
        "video": lambda: video_section(device, dry, args.repeats),
        "train_tokenizer_compiled": lambda: train_tokenizer_section(device, dry, args.repeats, vgg, budget, True),
        "video_sampling": lambda: video_sampling_section(device, dry),
    }
    try:
        for name, fn in sections.items():
            if name in args.skip:
                continue
            reason = budget.skip_reason(NEEDS_S.get(name, 0))
            if reason:
                report[name] = {"skipped": reason}
                continue
            t = time.perf_counter()
            try:
                report[name] = fn()
            except KeyboardInterrupt:  # gpu_check.sh's timeout: keep what was measured
                report[name] = {"error": "interrupted by the time limit"}
                raise
            except Exception as e:  # a broken section is a finding, not a reason to lose the others
                report[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(limit=3)}
            finally:
                report[name]["section_s"] = round(time.perf_counter() - t, 1)
                free(device)
                if args.out:
                    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    except KeyboardInterrupt:
        pass
    finally:
        shutdown(ctx)
    report["total_s"] = round(time.perf_counter() - start, 1)
    text = json.dumps(report, indent=1)
    print(text)
    print()
    print(markdown(report))
    print()
    print('## What a run costs (docs/training.md; GPU-hours = steps × global batch / per-GPU rate / 3600)')
    print()
    print(cost_table(report))
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
