"""Two shortcuts that skip work whose result is known, against the general path they replace, on the demo video
build's CPU training steps:

* ``one_frame``: a training step (L1 reconstruction loss, forward and backward, the recipe's Adam) of the moving-digits
  video tokenizer on single frames, as its first stage trains it (``configs/demo/video_digits_tokenizer_frames.yaml``:
  16 one-frame 64 × 64 clips, float32). Baseline: every causal convolution pads k_t − 1 zero frames in front and runs
  the Conv3d (the official ``ConvBlock3D``); ours runs a one-frame input as the 2-D convolution of the last temporal
  tap (``tokenizer.layers.CausalConv3d``, docs/design.md "One-frame clips").
* ``intra``: a training step of the demo video generator's recipe (``configs/demo/video_generator.yaml``: 8 clips
  of 576 tokens, bf16 autocast where bf16 is fast, else float32; eager, and compiled with ``--compile`` as the
  recipe does). Baseline: the intra transformer's two-position causal attention through SDPA (the official
  ``F.scaled_dot_product_attention``); ours writes it out (``generator.model.short_causal_attention``).

Both variants run in this process from the same initial weights on the same batches, alternating ``--rounds``
times, each round from a fresh model (and a fresh compilation) and two warm-up steps; each figure is the median
over rounds of the mean over ``--steps`` steps. Time: wall clock at torch's default thread
count first, then process CPU time (all threads). Peak: the rise of the process's high-water RSS over the RSS before
the variant's measured steps (``benchmarks/peak_memory.py``). The script also checks that both variants give the
same loss on the first step (within float rounding).

Usage: ``.venv/bin/python benchmarks/bench_short_paths.py [--steps 10] [--rounds 3] [--compile] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import peak_memory  # noqa: E402
from limits import machine_header  # noqa: E402
from open_magvit2.demo.build import fast_bf16  # noqa: E402
from open_magvit2.generator import model as gen_model  # noqa: E402
from open_magvit2.tokenizer import layers  # noqa: E402

CONFIGS = ROOT / "src" / "open_magvit2" / "configs" / "demo"
NEW_CONV = layers.CausalConv3d.forward
SHORT_CAUSAL = gen_model.SHORT_CAUSAL  # the package's own threshold, restored for "ours"


def padded_conv3d(self: layers.CausalConv3d, x: torch.Tensor) -> torch.Tensor:
    """The general path: zero frames in front, then the Conv3d."""
    return self.conv_1(F.pad(x, self.pad))


def use(variant: str) -> None:
    layers.CausalConv3d.forward = padded_conv3d if variant == "baseline" else NEW_CONV
    gen_model.SHORT_CAUSAL = 1 if variant == "baseline" else SHORT_CAUSAL


def tokenizer_step() -> tuple[Callable[[], float], str]:
    from open_magvit2.demo.data import moving_digits
    from open_magvit2.tokenizer import VideoTokenizer
    from open_magvit2.train.config import load_recipe
    from open_magvit2.train.optim import adam
    from open_magvit2.train.tokenizer import TokenizerTrainConfig

    cfg = load_recipe(TokenizerTrainConfig, CONFIGS / "video_digits_tokenizer_frames.yaml")
    torch.manual_seed(0)
    model = VideoTokenizer(cfg.tokenizer_config()).train()
    opt = adam(model.parameters(), cfg.optim, cfg.optim.lr)  # the trainer's optimiser for the recipe
    clips, _ = moving_digits("train", 16, seed=0)  # (16, T, 64, 64, 3) uint8
    x = torch.from_numpy(clips[:, :1]).permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # one frame each

    def step() -> float:
        loss = (model(x).reconstruction - x).abs().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step, "16 one-frame clips of 64 × 64, float32"


def generator_step(compile: bool) -> tuple[Callable[[], float], str]:
    from types import SimpleNamespace

    from open_magvit2.generator import generator_loss
    from open_magvit2.generator.model import transformer_for
    from open_magvit2.quantize import factorize_indices
    from open_magvit2.train.config import load_recipe
    from open_magvit2.train.generator import GeneratorTrainConfig
    from open_magvit2.train.generator_arch import resolve_generator_config
    from open_magvit2.train.optim import adamw

    cfg = load_recipe(GeneratorTrainConfig, CONFIGS / "video_generator.yaml")
    grid = SimpleNamespace(grid=(9, 8, 8), bits=10, split=None, num_classes=10)  # the demo token set's shape
    g = resolve_generator_config(cfg.model, cfg.model_args, grid)  # type: ignore[arg-type]
    torch.manual_seed(0)
    model = transformer_for(g).train()
    opt = adamw(model, cfg.optim)  # the recipe's (weight decay on the matrices only)
    tokens = torch.randint(0, 2 ** sum(g.factorized_bits), (cfg.data.batch_size, g.seq_len))
    labels = torch.randint(0, 10, (cfg.data.batch_size,))
    subs = factorize_indices(tokens, g.factorized_bits)
    fwd = torch.compile(model) if compile else model
    bf16 = fast_bf16()

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = generator_loss(*fwd(*subs, labels), *subs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    what = f"{cfg.data.batch_size} clips × {g.seq_len} tokens, {'bf16' if bf16 else 'float32'}"
    return step, what + (", compiled" if compile else ", eager")


def measure(make: Callable[[], tuple[Callable[[], float], str]], steps: int, rounds: int) -> dict:
    res: dict = {}
    losses = {}
    for variant in ("baseline", "ours"):  # first-step losses from the same initial weights
        use(variant)
        step, what = make()
        losses[variant] = step()
    res["what"] = what
    res["first_loss"] = losses
    runs: dict[str, list] = {"baseline": [], "ours": []}
    for _ in range(rounds):
        for variant in ("baseline", "ours"):
            use(variant)
            torch._dynamo.reset()  # the switch is a module global that compiled code guards on: compile afresh
            step = make()[0]
            for _ in range(2):
                step()  # warm-up (and compilation)
            base = peak_memory.reset()
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                step()
            runs[variant].append(((time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps,
                                  peak_memory.peak_since(base)))
    for variant, rows in runs.items():
        res[variant] = {"wall_s_per_step": round(statistics.median(r[0] for r in rows), 4),
                        "cpu_s_per_step": round(statistics.median(r[1] for r in rows), 4),
                        "peak_mib": round(max(r[2] for r in rows), 1)}
    res["speedup_wall"] = round(res["baseline"]["wall_s_per_step"] / res["ours"]["wall_s_per_step"], 2)
    res["speedup_cpu"] = round(res["baseline"]["cpu_s_per_step"] / res["ours"]["cpu_s_per_step"], 2)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="compile the generator step, as the recipe does")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    report = {"threads": torch.get_num_threads(),
              "one_frame": measure(tokenizer_step, args.steps, args.rounds),
              "intra": measure(lambda: generator_step(args.compile), args.steps, args.rounds)}
    use("ours")
    if args.json:
        print(json.dumps(report))
        return 0
    print(machine_header())
    print("| section | what | baseline s/step | ours s/step | speed-up (wall) | CPU s/step base / ours | "
          "peak MiB base / ours | first loss base / ours |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("one_frame", "intra"):
        r = report[name]
        b, o = r["baseline"], r["ours"]
        print(f"| {name} | {r['what']} | {b['wall_s_per_step']} | {o['wall_s_per_step']} | {r['speedup_wall']}× | "
              f"{b['cpu_s_per_step']} / {o['cpu_s_per_step']} | {b['peak_mib']} / {o['peak_mib']} | "
              f"{r['first_loss']['baseline']:.6f} / {r['first_loss']['ours']:.6f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
