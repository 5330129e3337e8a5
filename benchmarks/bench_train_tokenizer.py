"""One tokenizer training iteration (G step + D step, LPIPS on): where the time goes, what fraction of the machine
it uses, and ours vs the official iteration, in fp32 and under bf16 autocast.

* **ours**: ``open_magvit2.train.tokenizer.train_step`` as the trainer runs it (DDP wrappers on a 1-process group,
  the G step with the discriminator's parameters frozen, the D step without LPIPS, one guarded update, EMA of the
  tokenizer only).
* **official**: the official ``lfqgan.VQModel.training_step`` (docs/design.md O-16, O-17, O-19, O-23), rebuilt from the
  same loss modules: the G step back-propagates into the discriminator's parameters too (their gradients are then thrown
  away), the D step recomputes L1 and LPIPS of the reconstruction and discards them (docs/design.md O-24), and the EMA
  (``LitEma``: a Python loop over named parameters) also tracks the discriminator (docs/design.md O-23).

Both start from the same weights and see the same batches; the script asserts that every iteration's G and D losses are
equal (equal work, not only equal speed). Under ``bf16`` both run the forward passes and the losses in
``torch.autocast("cpu", dtype=torch.bfloat16)`` (ours through the trainer's own ``StepContext("bf16")``). LPIPS uses a
randomly initialised VGG16 with the real layout (the real weights cannot be downloaded here: same compute). Each
(config, precision, variant) runs in a fresh subprocess; time is the median wall clock of the measured iterations after
warm-up, next to the median CPU time of the process (``time.process_time``, all threads: on a machine shared with other
jobs it is disturbed far less than the wall clock); peak = the rise of the process's high-water RSS over the RSS right
after building the models and the batches (``benchmarks/peak_memory.py``). Variants alternate over ``--rounds``.

**Breakdown** (``--breakdown``, fp32, ours): after ``train_step`` is timed (one warm-up step, then the median of
``--iters``), each part of the iteration is run once on its own, forward and backward together, on the same shapes, with
the same ``requires_grad`` as in the step, gradients set to None before each part (as the step does), timed inside the
FLOP counter (its per-op overhead is microseconds against convolutions of milliseconds): encoder (x → z, backward of a
fixed random gradient of z), LFQ (z → codes, entropy and commitment, backward), decoder (codes → x̂, backward of a fixed
random gradient of x̂), LPIPS (backward into x̂), the discriminator on the G side (frozen parameters, non-saturating
loss, backward into x̂), the discriminator update (real and fake, hinge + LeCAM, backward into its parameters), the
optimiser (both gradient norms and both fused Adam steps), the EMA update, and data (decoding and cropping one batch of
JPEGs, one loader worker's work: in training it runs in the loader processes, overlapped with compute, so it is not part
of the iteration's sum). The rest of the measured ``train_step`` (L1 and the loss sums, DDP hooks and the 1-process
all-reduces, autograd bookkeeping) is the residual. FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``
(``limits.count_flops``: convolutions and matrix products, forward and backward; the step's count is the sum of its
parts') and set against a large fp32 GEMM measured at the same thread count (``limits.gemm_flops_per_s``). One more row
times the discriminator forward on x̂ that the D step repeats from the G side (included in "discriminator update").

Usage: ``.venv/bin/python benchmarks/bench_train_tokenizer.py [--configs tiny imagenet_128_L] [--batch 8]
[--size 128] [--iters 2] [--rounds 1] [--precisions [fp32] [bf16]] [--bf16-batch N] [--breakdown] [--threads N]``
(BENCHMARKS.md: ``--configs imagenet_128_L --batch 2 --precisions fp32 --breakdown``, then ``--configs tiny
--batch 2 --size 32``).
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
from collections.abc import Callable
from pathlib import Path

import peak_memory

PRESETS = {"tiny": "imagenet_128_L_tiny", "imagenet_128_L": "imagenet_128_L"}
SECTIONS = ("encoder", "LFQ", "decoder", "LPIPS", "discriminator, G side", "discriminator update", "optimiser", "EMA")
REPEATED = "of which repeated: D(x̂) forward of the D step"  # part of "discriminator update", not added to the sum


def build_parts(preset: str, vgg: str, precision: str, device: str = "cpu"):
    """(StepContext, guard, TokenizerParts) of the trainer for ``preset`` with LPIPS from ``vgg``, seeded."""
    import torch

    from open_magvit2.distributed import init_distributed
    from open_magvit2.losses import TokenizerLoss, TokenizerLossConfig
    from open_magvit2.tokenizer import ImageTokenizer
    from open_magvit2.train.config import OptimConfig, RunConfig
    from open_magvit2.train.guard import NonFiniteGuard
    from open_magvit2.train.step import StepContext
    from open_magvit2.train.tokenizer import TokenizerTrainConfig, make_parts

    cfg = TokenizerTrainConfig(model=preset, loss=TokenizerLossConfig(lpips_path=vgg),
                               optim=OptimConfig(lr=1e-4), run=RunConfig(max_steps=100))
    ctx = StepContext(precision, init_distributed(device, always=True))  # the step's DDP wrappers need a group
    torch.manual_seed(0)
    tok = ImageTokenizer(cfg.tokenizer_config())
    loss = TokenizerLoss(cfg.loss, dims=2)
    parts = make_parts(tok, loss, cfg.optim, ema=True, scaler=ctx.grad_scaler(), device=ctx.device)
    return ctx, NonFiniteGuard(), parts


def _official_iteration(parts, shadows: dict, x, step: int, autocast) -> tuple[float, float]:
    """The official training_step + LitEma update, on our modules (see the module docstring)."""
    from open_magvit2.losses.gan import non_saturating_g_loss

    tok, loss, c = parts.tokenizer, parts.loss, parts.loss.config
    with autocast():
        xrec, q = tok(x)
        # G step (optimizer_idx 0): D's parameters require grad, so its weight gradients are computed too
        _, _, nll = loss._reconstruction_terms(x, xrec)
        g = non_saturating_g_loss(loss.discriminator(xrec))
        g_total = (nll + c.gen_loss_weight * 1.0 * g + c.entropy_weight * q.entropy_loss
                   + c.commit_weight * q.commitment)
    parts.opt_g.zero_grad()
    g_total.backward()
    parts.opt_g.step()
    # D step (optimizer_idx 1): the official branch first recomputes L1 + LPIPS (unused), then the D loss
    with autocast():
        loss._reconstruction_terms(x, xrec)
        d = loss.discriminator_loss(x, xrec, step)
    parts.opt_d.zero_grad()
    d.loss.backward()
    parts.opt_d.step()
    # LitEma over the tokenizer AND the discriminator, one parameter at a time
    for module, prefix in ((tok, "tok."), (loss.discriminator, "disc.")):
        for name, p in module.named_parameters():
            s = shadows[prefix + name]
            s.sub_((1 - 0.999) * (s - p.detach()))
    return float(g_total.detach()), float(d.loss.detach())


def worker(config: str, variant: str, precision: str, batch: int, size: int, iters: int, warmup: int, vgg: str,
           out: str, threads: int) -> None:
    import torch

    from open_magvit2.distributed import shutdown
    from open_magvit2.train.tokenizer import train_step

    torch.set_num_threads(threads)
    ctx, guard, parts = build_parts(PRESETS[config], vgg, precision)
    shadows = {f"{p}{n}": t.detach().clone() for m, p in ((parts.tokenizer, "tok."), (parts.loss.discriminator,
               "disc.")) for n, t in m.named_parameters()} if variant == "official" else {}  # fmt: skip
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(batch, 3, size, size, generator=g) * 2 - 1 for _ in range(warmup + iters)]
    base = peak_memory.reset()
    times, cpu, losses = [], [], []
    for k, x in enumerate(batches):
        t0, c0 = time.perf_counter(), time.process_time()
        if variant == "ours":
            r = train_step(parts, [x], k, ctx=ctx, guard=guard, grad_clip=None, ema_decay=0.999)
            losses.append((r.losses["g"], r.losses["d"]))
        else:
            losses.append(_official_iteration(parts, shadows, x, k, ctx.autocast))
        if k >= warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    peak = peak_memory.peak_since(base)
    shutdown(ctx.dist)
    Path(out, "result.json").write_text(json.dumps({"times": times, "cpu": cpu, "peak_mib": peak, "losses": losses}))


# ------------------------------------------------------------------------------------------------------ breakdown


def _median_time(fn: Callable[[], None], before: Callable[[], None], repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up, ``before()`` untimed ahead of each."""
    times = []
    for k in range(repeats + 1):
        before()
        t0 = time.perf_counter()
        fn()
        if k:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _jpeg_folder(root: Path, n: int, size: int) -> Path:
    """``n`` random JPEGs a little larger than the crop (the loader resizes the shorter side, then crops)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = root / "images" / "class0"
    folder.mkdir(parents=True)
    for i in range(n):
        low = rng.integers(0, 256, (size // 8, size // 8 * 5 // 4, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((size * 5 // 4 + 13, size + 13), Image.BILINEAR)
        img.save(folder / f"{i:04d}.jpg", quality=90)
    return root / "images"


def _data_seconds(batch: int, size: int, repeats: int) -> float:
    """Median seconds for one loader worker to produce one batch (JPEG decode, resize, random crop, to tensor)."""
    from open_magvit2.data import build_image_stream

    with tempfile.TemporaryDirectory() as d:
        src = _jpeg_folder(Path(d), batch * (repeats + 1), size)
        stream = build_image_stream(src, size=size, batch_size=batch, rank=0, world_size=1, seed=0, num_workers=0)
        try:
            it = iter(stream)
            return _median_time(lambda: next(it), lambda: None, repeats)
        finally:
            stream.close()


def breakdown_worker(config: str, batch: int, size: int, iters: int, warmup: int, vgg: str, out: str,
                     threads: int) -> None:
    import torch

    import limits  # another helper's benchmarks/limits.py: the machine's measured limits and the FLOP counter
    from open_magvit2.distributed import all_reduce_mean, shutdown
    from open_magvit2.losses.gan import non_saturating_g_loss, without_parameter_grads
    from open_magvit2.train.ema import update_ema
    from open_magvit2.train.optim import grad_norm
    from open_magvit2.train.tokenizer import train_step

    torch.set_num_threads(threads)
    ctx, guard, parts = build_parts(PRESETS[config], vgg, "fp32")
    tok, loss, disc = parts.tokenizer, parts.loss, parts.loss.discriminator
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(batch, 3, size, size, generator=g) * 2 - 1 for _ in range(warmup + iters + 1)]
    step = 0

    def one_step() -> None:
        nonlocal step
        train_step(parts, [batches[step % len(batches)]], step, ctx=ctx, guard=guard, grad_clip=None,
                   ema_decay=0.999)
        step += 1

    total = _median_time(one_step, lambda: None, iters) if warmup else None
    x = batches[0]
    with torch.no_grad():  # representative inputs of every part, from the current weights
        z0 = tok.encode_latent(x)
        codes0 = tok.quantize(z0).codes
        xrec0 = tok.decoder(codes0)
    gz, gx = torch.randn(z0.shape, generator=g), torch.randn(xrec0.shape, generator=g)

    def encoder() -> None:
        tok.encode_latent(x).backward(gz)

    def lfq() -> None:
        q = tok.quantize(z0.clone().requires_grad_(), sync_codebook=True)
        (q.codes.mean() + 0.1 * q.entropy_loss + 0.25 * q.commitment).backward()

    def decoder() -> None:
        tok.decoder(codes0.clone().requires_grad_()).backward(gx)

    def lpips() -> None:
        loss.perceptual(x, xrec0.clone().requires_grad_()).float().mean().backward()

    def disc_g() -> None:
        with without_parameter_grads(disc):
            non_saturating_g_loss(disc(xrec0.clone().requires_grad_())).backward()

    def disc_d() -> None:
        loss.discriminator_loss(x, xrec0, step, discriminator=parts.ddp_disc,
                                batch_mean=lambda t: all_reduce_mean(t.clone(), ctx.dist)).loss.backward()

    def disc_fake_forward() -> None:  # what the D step recomputes of the G side: D(x̂), same weights, same input
        disc(xrec0)

    def optimiser() -> None:
        norms = (grad_norm(tok.parameters(), None), grad_norm(disc.parameters(), None))
        assert all(bool(torch.isfinite(n)) for n in norms)
        parts.opt_g.step()
        parts.opt_d.step()

    def ema() -> None:
        update_ema(parts.ema, tok, 0.999)

    fns = dict(zip(SECTIONS, (encoder, lfq, decoder, lpips, disc_g, disc_d, optimiser, ema)))

    def no_grads() -> None:
        parts.opt_g.zero_grad(set_to_none=True)
        parts.opt_d.zero_grad(set_to_none=True)

    def fill_grads() -> None:  # the optimiser needs the gradients of a whole step
        no_grads()
        for name in ("encoder", "decoder", "discriminator update"):
            fns[name]()

    fns[REPEATED] = disc_fake_forward
    seconds, flops = {}, {}
    for name, fn in fns.items():  # one timed call each, inside the FLOP counter (the step above warmed them up)
        (fill_grads if name == "optimiser" else (lambda: None) if name == "EMA" else no_grads)()
        t0 = time.perf_counter()
        flops[name] = limits.count_flops(fn)
        seconds[name] = time.perf_counter() - t0
    step_flops = sum(flops[name] for name in SECTIONS)  # the step's FLOPs are its parts' (REPEATED is in one)
    data = _data_seconds(batch, size, iters)
    peak = limits.gemm_flops_per_s(torch.float32, torch.device("cpu"))
    shutdown(ctx.dist)
    Path(out, "result.json").write_text(json.dumps({
        "total": total, "seconds": seconds, "flops": flops, "step_flops": step_flops, "data": data,
        "gemm_flops_per_s": peak, "header": limits.machine_header()}))


# ----------------------------------------------------------------------------------------------------------- main


def _run(args, config: str, variant: str, precision: str, batch: int, vgg: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, __file__, "--worker", config, variant, precision, "--batch", str(batch), "--size",
               str(args.size), "--iters", str(args.iters), "--warmup", str(args.warmup), "--vgg", vgg, "--out", out,
               "--threads", str(args.threads)]
        subprocess.run(cmd, check=True)
        return json.loads(Path(out, "result.json").read_text())


def _compare(args, config: str, precision: str, batch: int, vgg: str) -> None:
    runs: dict[str, list[dict]] = {"ours": [], "official": []}
    for _ in range(args.rounds):
        for variant in ("ours", "official"):
            runs[variant].append(_run(args, config, variant, precision, batch, vgg))
    med = {v: statistics.median(t for r in runs[v] for t in r["times"]) for v in runs}
    cpu = {v: statistics.median(t for r in runs[v] for t in r["cpu"]) for v in runs}
    peak = {v: max(r["peak_mib"] for r in runs[v]) for v in runs}
    diff = max(abs(a - b) / max(abs(b), 1e-12) for ro, rf in zip(runs["ours"], runs["official"])
               for la, lb in zip(ro["losses"], rf["losses"]) for a, b in zip(la, lb))
    assert diff == 0.0, f"{config} {precision}: ours and the official iteration disagree (max rel. diff {diff:.1e})"
    for v in ("ours", "official"):
        ratio = f"**{med['official'] / med['ours']:.2f}×** ({cpu['official'] / cpu['ours']:.2f}×)" if v == "ours" \
            else ""
        same = "equal (every G and D loss)" if v == "ours" else ""
        print(f"| {config} | {precision} | {batch} | {v} | {med[v]:.2f} | {cpu[v]:.2f} | {batch / med[v]:.3f} "
              f"| {peak[v]:,.0f} | {ratio} | {same} |", flush=True)


def _breakdown(args, config: str, vgg: str) -> None:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, __file__, "--worker", config, "breakdown", "fp32", "--batch", str(args.batch),
               "--size", str(args.size), "--iters", "1", "--warmup", str(args.warmup), "--vgg", vgg,
               "--out", out, "--threads", str(args.threads)]
        subprocess.run(cmd, check=True)
        r = json.loads(Path(out, "result.json").read_text())
    peak, total = r["gemm_flops_per_s"], r["total"]
    print(f"\n# breakdown: {config}, batch {args.batch}, {args.size}², fp32, ours; {r['header']}")
    print(f"# fp32 GEMM limit at {args.threads} thread(s): {peak / 1e9:.1f} GFLOP/s")
    print("| part (forward + backward) | s | share of the step | GFLOP | GFLOP/s | of the GEMM limit |")
    print("|---|---|---|---|---|---|")
    for name in SECTIONS:
        s, f = r["seconds"][name], r["flops"][name]
        rate = f"{f / s / 1e9:.1f} | {f / s / peak:.0%}" if f else "– | –"
        print(f"| {name} | {s:.3f} | {s / total:.0%} | {f / 1e9:.1f} | {rate} |")
    s, f = r["seconds"][REPEATED], r["flops"][REPEATED]
    print(f"| {REPEATED} | {s:.3f} | {s / total:.0%} | {f / 1e9:.1f} | {f / s / 1e9:.1f} | {f / s / peak:.0%} |")
    parts_sum = sum(r["seconds"][name] for name in SECTIONS)
    print(f"| residual (L1, loss sums, DDP hooks, all-reduces, autograd) | {total - parts_sum:.3f} | "
          f"{(total - parts_sum) / total:.0%} | | | |")
    f = r["step_flops"]
    print(f"| **train_step** (measured; GFLOP: sum of the parts) | **{total:.3f}** | 100% | {f / 1e9:.1f} | "
          f"{f / total / 1e9:.1f} | "
          f"**{f / total / peak:.0%}** |")
    print(f"| data: one batch of JPEGs, one loader worker (not in the step) | {r['data']:.3f} | | | | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["imagenet_128_L"], choices=list(PRESETS))
    ap.add_argument("--batch", type=int, default=8, help="per device (the recipes: 8)")
    ap.add_argument("--bf16-batch", type=int, default=None, help="batch of the bf16 comparison (default: --batch)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--precisions", nargs="*", default=["fp32", "bf16"], choices=["fp32", "bf16"],
                    help="comparisons against the official iteration (none: only the breakdown)")
    ap.add_argument("--breakdown", action="store_true", help="also time the parts of one iteration (fp32, ours)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    ap.add_argument("--worker", nargs=3, metavar=("CONFIG", "VARIANT", "PRECISION"))
    ap.add_argument("--vgg")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.worker:
        config, variant, precision = args.worker
        if variant == "breakdown":
            breakdown_worker(config, args.batch, args.size, args.iters, args.warmup, args.vgg, args.out, args.threads)
        else:
            worker(config, variant, precision, args.batch, args.size, args.iters, args.warmup, args.vgg, args.out,
                   args.threads)
        return
    from open_magvit2.eval.backbones import write_random_backbones

    start = time.perf_counter()
    hub = tempfile.mkdtemp()
    vgg = str(write_random_backbones(hub, only=("vgg",))["vgg"])
    print(f"# tokenizer training iteration, {args.size}², {args.threads} torch thread(s), warm-up {args.warmup}, "
          f"median of {args.iters} × {args.rounds} round(s), load {os.getloadavg()[0]:.1f}")
    print("| config | precision | batch | variant | wall s / iteration | CPU s / iteration | images/s | peak MiB "
          "| official / ours: wall (CPU) | losses |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for config in args.configs:
        for precision in args.precisions:
            batch = args.bf16_batch or args.batch if precision == "bf16" else args.batch
            _compare(args, config, precision, batch, vgg)
    if args.breakdown:
        for config in args.configs:
            _breakdown(args, config, vgg)
    print(f"# load after: {os.getloadavg()[0]:.1f}; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
