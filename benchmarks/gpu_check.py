"""The prepared GPU check (run through ``benchmarks/gpu_check.sh``): one JSON object and a markdown table.

Sections (each one times itself and records an error instead of stopping the others):

1. tokenizer ``imagenet_256_L`` (random weights), batch 32 at 256²: encode and decode images/s in fp32 (TF32 off,
   as ``precision.set_tf32(False)``) and bf16, the bf16 index agreement (tokens and bits) and decode error
   against fp32, peak GPU memory of each; also bf16 with channels-last on, to decide ``precision.CHANNELS_LAST``;
2. AR-B (random weights) sampling, batch 8 with CFG (16 rows), bf16: seconds per batch eager vs
   ``compile=True`` (compile time apart), ms per decode step next to the weight-read floor (parameter bytes /
   measured device copy bandwidth), equal tokens eager vs compiled, peak GPU memory;
3. FSDP2 on one GPU (``train/fsdp.py``, one rank): one AdamW step of AR-B under bf16 autocast, time and memory.

``--dry-run`` runs everything on the CPU with tiny presets (64² images; the ``tiny`` AR model on a 4×4 grid in
float32, ``compile`` through the "eager" backend; one repeat): a check that the script works, used by the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
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
from open_magvit2.tokenizer import ImageTokenizer, tokenizer_config

sys.path.insert(0, str(Path(__file__).parent))
from bench_tokenizer import smooth_images


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


def tokenizer_section(device: torch.device, dry: bool, repeats: int) -> dict:
    preset, batch, size = ("imagenet_256_L_tiny", 2, 64) if dry else ("imagenet_256_L", 32, 256)
    res: dict[str, Any] = {"preset": preset, "batch": batch, "size": size}
    torch.manual_seed(0)
    fp32 = ImageTokenizer(tokenizer_config(preset)).eval()
    state = fp32.state_dict()
    fp32 = ImageTokenizer.from_config_and_weights(fp32.config, state, device=device)
    bf16 = ImageTokenizer.from_config_and_weights(fp32.config, state, device=device, dtype="bf16")
    x = smooth_images(batch, size).to(device)
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


def device_bandwidth(device: torch.device) -> float:
    """Bytes/s of a 1 GiB device-to-device copy (read + write), or a 256 MiB CPU ``sum`` in a dry run."""
    n = (2**30 if device.type == "cuda" else 2**28) // 4
    a = torch.empty(n, device=device)
    if device.type == "cuda":
        b = torch.empty_like(a)
        t, _ = timed(lambda: b.copy_(a), device, 5)
        return 2 * n * 4 / t
    t, _ = timed(lambda: a.sum(), device, 3)
    return n * 4 / t


def sampling_section(device: torch.device, dry: bool, repeats: int) -> dict:
    preset, batch = ("tiny", 2) if dry else ("B", 8)
    config = GENERATOR_PRESETS[preset]
    if dry:
        config = dataclasses.replace(config, grid_size=4)
    dtype = torch.float32 if dry else torch.bfloat16  # bf16 matmuls of tiny CPU models are only slow
    with torch.device("meta"):
        model = GeneratorTransformer(config=config)
    model = model.to(dtype).to_empty(device=device).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.02)
            else:
                p.fill_(1.0)
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
    bw = device_bandwidth(device)
    res["bandwidth_gb_s"] = round(bw / 1e9, 1)
    res["floor_ms_per_step"] = round(weight_bytes / bw * 1e3, 3)
    res["compiled_equals_eager"] = bool(torch.equal(a.pre, b.pre) and torch.equal(a.post, b.post))
    # the README's case: a CPU torch.Generator with a model on the GPU (draws on the CPU, same tokens everywhere)
    t = time.perf_counter()
    generate_tokens(model, labels, cfg_scale=(1.9, 2.0), generator=torch.Generator().manual_seed(0))
    sync(device)
    res["cpu_generator_s_per_batch"] = round(time.perf_counter() - t, 3)
    return res


def fsdp_section(device: torch.device, dry: bool) -> dict:
    """One FSDP2 (fully_shard, one rank) AdamW step of the AR model under bf16 autocast."""
    try:
        from open_magvit2.generator import generator_loss
        from open_magvit2.train.fsdp import shard_generator
    except ImportError as e:
        return {"skipped": f"train/fsdp.py not available ({e})"}
    import torch.distributed as dist

    preset = "tiny" if dry else "B"
    backend = "nccl" if device.type == "cuda" else "gloo"
    with tempfile.TemporaryDirectory() as d:
        dist.init_process_group(backend, init_method=f"file://{d}/pg", rank=0, world_size=1)
        try:
            torch.manual_seed(0)
            with torch.device(device):
                model = GeneratorTransformer(config=GENERATOR_PRESETS[preset])
            shard_generator(model)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            B, N = (2, model.config.seq_len) if dry else (16, model.config.seq_len)
            pre = torch.randint(0, 64, (B, N), device=device)
            post = torch.randint(0, 4096, (B, N), device=device)
            labels = torch.randint(0, model.config.num_classes, (B,), device=device)

            def step():
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = generator_loss(*model(pre, post, labels), pre, post).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                return loss.detach()

            res: dict[str, Any] = {"preset": preset, "batch": B}
            with peak_memory(device, res, "peak_gib"):
                t, loss = timed(step, device, 2)
            res["step_s"] = round(t, 3)
            res["loss_finite"] = bool(torch.isfinite(loss).item())
            return res
        finally:
            dist.destroy_process_group()


def markdown(report: dict) -> str:
    rows = ["| section | metric | value |", "|---|---|---|"]
    for section in ("tokenizer", "sampling", "fsdp2"):
        for k, v in report.get(section, {}).items():
            rows.append(f"| {section} | {k} | {v} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny presets: check that the script runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--skip", nargs="*", default=[], choices=("tokenizer", "sampling", "fsdp2"))
    args = ap.parse_args()
    dry = args.dry_run
    if dry:
        args.repeats = 1
        torch.set_num_threads(1)  # tiny models: many small ops, which a shared machine's second core only slows
    if not dry and not torch.cuda.is_available():
        ap.error("no CUDA device: run on a GPU machine, or pass --dry-run for the CPU smoke check")
    device = torch.device("cpu" if dry else "cuda")
    precision.set_tf32(False)  # the inference policy: exact float32
    report: dict[str, Any] = {
        "device": "cpu (dry run)" if dry else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "host": platform.node(),
        "cpus": os.cpu_count(),
    }
    start = time.perf_counter()
    sections = {
        "tokenizer": lambda: tokenizer_section(device, dry, args.repeats),
        "sampling": lambda: sampling_section(device, dry, args.repeats),
        "fsdp2": lambda: fsdp_section(device, dry),
    }
    for name, fn in sections.items():
        if name in args.skip:
            continue
        t = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as e:  # a broken section is a finding, not a reason to lose the others
            report[name] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc(limit=3)}
        report[name]["section_s"] = round(time.perf_counter() - t, 1)
    report["total_s"] = round(time.perf_counter() - start, 1)
    text = json.dumps(report, indent=1)
    print(text)
    print()
    print(markdown(report))
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
