"""One tokenizer training iteration (G step + D step, LPIPS on): ours vs the official iteration, same run.

* **ours**: ``open_magvit2.train.tokenizer.train_step`` as the trainer runs it (DDP wrappers on a 1-process group,
  the G step with the discriminator's parameters frozen, the D step without LPIPS, one guarded update, EMA of the
  tokenizer only).
* **official**: the official ``lfqgan.VQModel.training_step`` (docs/design.md O-16, O-17, O-19, O-23), rebuilt from the
  same loss modules: the G step back-propagates into the discriminator's parameters too (their gradients are then thrown
  away), the D step recomputes L1 and LPIPS of the reconstruction and discards them (docs/design.md O-24), and the EMA
  (``LitEma``: a Python loop over named parameters) also tracks the discriminator (docs/design.md O-23).

Both start from the same weights and see the same batches; the script checks that every iteration's G and D
losses agree (equal work, not only equal speed). LPIPS uses a randomly initialised VGG16 with the real layout (the
real weights cannot be downloaded here: same compute). Each (config, variant) runs in a fresh subprocess; time is
the median wall clock of the measured iterations after warm-up; peak = the rise of the process's high-water
RSS over the RSS right after building the models and the batches (``benchmarks/peak_memory.py``). Variants
alternate over ``--rounds``.

Usage: ``.venv/bin/python benchmarks/bench_train_tokenizer.py [--configs tiny imagenet_128_L] [--batch 2]
[--size 128] [--iters 4] [--rounds 2] [--threads N]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import peak_memory

PRESETS = {"tiny": "imagenet_128_L_tiny", "imagenet_128_L": "imagenet_128_L"}



def _build(preset: str, vgg: str, out: str):
    import torch

    from open_magvit2.distributed import init_distributed
    from open_magvit2.losses import TokenizerLoss, TokenizerLossConfig
    from open_magvit2.train.config import OptimConfig, RunConfig
    from open_magvit2.train.guard import NonFiniteGuard
    from open_magvit2.train.step import StepContext
    from open_magvit2.train.tokenizer import TokenizerTrainConfig, make_parts

    cfg = TokenizerTrainConfig(model=preset, loss=TokenizerLossConfig(lpips_path=vgg),
                               optim=OptimConfig(lr=1e-4), run=RunConfig(max_steps=100))
    ctx = StepContext("fp32", init_distributed("cpu", always=True))  # the step's DDP wrappers need a group
    torch.manual_seed(0)
    from open_magvit2.tokenizer import ImageTokenizer

    tok = ImageTokenizer(cfg.tokenizer_config())
    loss = TokenizerLoss(cfg.loss, dims=2)
    parts = make_parts(tok, loss, cfg.optim, ema=True, scaler=ctx.grad_scaler(), device=ctx.device)
    return ctx, NonFiniteGuard(), parts


def _official_iteration(parts, shadows: dict, x, step: int) -> tuple[float, float]:
    """The official training_step + LitEma update, on our modules (see the module docstring)."""
    from open_magvit2.losses.gan import non_saturating_g_loss

    tok, loss, c = parts.tokenizer, parts.loss, parts.loss.config
    xrec, q = tok(x)
    # G step (optimizer_idx 0): D's parameters require grad, so its weight gradients are computed too
    _, _, nll = loss._reconstruction_terms(x, xrec)
    g = non_saturating_g_loss(loss.discriminator(xrec))
    g_total = nll + c.gen_loss_weight * 1.0 * g + c.entropy_weight * q.entropy_loss + c.commit_weight * q.commitment
    parts.opt_g.zero_grad()
    g_total.backward()
    parts.opt_g.step()
    # D step (optimizer_idx 1): the official branch first recomputes L1 + LPIPS (unused), then the D loss
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
    return float(g_total), float(d.loss)


def worker(config: str, variant: str, batch: int, size: int, iters: int, warmup: int, vgg: str, out: str,
           threads: int) -> None:
    import torch

    from open_magvit2.distributed import shutdown
    from open_magvit2.train.tokenizer import train_step

    torch.set_num_threads(threads)
    ctx, guard, parts = _build(PRESETS[config], vgg, out)
    shadows = {f"{p}{n}": t.detach().clone() for m, p in ((parts.tokenizer, "tok."), (parts.loss.discriminator,
               "disc.")) for n, t in m.named_parameters()} if variant == "official" else {}  # fmt: skip
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(batch, 3, size, size, generator=g) * 2 - 1 for _ in range(warmup + iters)]
    base = peak_memory.reset()
    times, losses = [], []
    for k, x in enumerate(batches):
        t0 = time.perf_counter()
        if variant == "ours":
            r = train_step(parts, [x], k, ctx=ctx, guard=guard, grad_clip=None, ema_decay=0.999)
            losses.append((r.losses["g"], r.losses["d"]))
        else:
            losses.append(_official_iteration(parts, shadows, x, k))
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    peak = peak_memory.peak_since(base)
    shutdown(ctx.dist)
    Path(out, "result.json").write_text(json.dumps({"times": times, "peak_mib": peak, "losses": losses}))


def _run(args, config: str, variant: str, vgg: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, __file__, "--worker", config, variant, "--batch", str(args.batch), "--size",
               str(args.size), "--iters", str(args.iters), "--warmup", str(args.warmup), "--vgg", vgg, "--out", out,
               "--threads", str(args.threads)]
        subprocess.run(cmd, check=True)
        return json.loads(Path(out, "result.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    ap.add_argument("--worker", nargs=2, metavar=("CONFIG", "VARIANT"))
    ap.add_argument("--vgg")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker, args.batch, args.size, args.iters, args.warmup, args.vgg, args.out, args.threads)
        return
    from open_magvit2.eval.backbones import write_random_backbones

    hub = tempfile.mkdtemp()
    vgg = str(write_random_backbones(hub, only=("vgg",))["vgg"])
    cpu = platform.processor() or platform.machine()
    print(f"# tokenizer training iteration, batch {args.batch}, {args.size}², fp32, CPU {cpu}, {os.cpu_count()} cores, "
          f"{args.threads} torch thread(s), "
          f"load {os.getloadavg()[0]:.1f}")
    print("| config | variant | s / iteration (median) | peak MiB | official/ours time | losses equal |")
    print("|---|---|---|---|---|---|")
    for config in args.configs:
        runs: dict[str, list[dict]] = {"ours": [], "official": []}
        for _ in range(args.rounds):
            for variant in ("ours", "official"):
                runs[variant].append(_run(args, config, variant, vgg))
        med = {v: statistics.median(t for r in runs[v] for t in r["times"]) for v in runs}
        peak = {v: max(r["peak_mib"] for r in runs[v]) for v in runs}
        diff = max(abs(a - b) / max(abs(b), 1e-12) for ro, rf in zip(runs["ours"], runs["official"])
                   for la, lb in zip(ro["losses"], rf["losses"]) for a, b in zip(la, lb))
        for v in ("ours", "official"):
            ratio = f"{med['official'] / med['ours']:.2f}×" if v == "ours" else ""
            same = f"max rel. diff {diff:.1e}" if v == "ours" else ""
            print(f"| {config} | {v} | {med[v]:.3f} | {peak[v]:.0f} | {ratio} | {same} |")
    print(f"# load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
