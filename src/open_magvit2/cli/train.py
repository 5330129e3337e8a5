"""``train-tokenizer``, ``export`` and ``plot-run``: training from the command line (single process or torchrun).

The training modules are imported when a subcommand runs, so inference-only installs never need the train extra.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TRAIN_EPILOG = """\
examples:
  open-magvit2 train-tokenizer --config configs/tokenizer/tiny.yaml --data photos/ --output runs/tiny
  open-magvit2 train-tokenizer --config configs/tokenizer/tiny.yaml --data photos/ --output runs/tiny --resume auto
  torchrun --nproc-per-node 8 -m open_magvit2.cli train-tokenizer --config configs/tokenizer/imagenet_128_L.yaml \\
      --data /data/imagenet/train --output runs/128_L
"""


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="recipe YAML (configs/...)")
    p.add_argument("--data", required=True, help="training data (see docs/training.md)")
    p.add_argument("--output", required=True, type=Path, help="run directory (must be empty unless --resume)")
    p.add_argument("--max-steps", type=int, default=None, help="optimiser steps (overrides run.max_steps/epochs)")
    p.add_argument("--save-every", type=int, default=None, help="checkpoint every N steps (run.save_every)")
    p.add_argument("--seed", type=int, default=None, help="global seed (run.seed)")
    p.add_argument("--resume", default=None, metavar="auto|CKPT",
                   help="auto: continue the newest checkpoint in --output (or start fresh if none); or a checkpoint "
                        "or run directory")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one recipe value, e.g. --set optim.lr=3e-4 (repeatable)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-tokenizer",
        help="train or fine-tune an image or video tokenizer (G + D steps, EMA, exact resume, torchrun DDP)",
        description="Train a tokenizer from a recipe. Writes RUN_DIR/config.yaml, checkpoints/step_*/, "
        "metrics.jsonl and samples/*.png. Launch with torchrun for several GPUs or nodes.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_args(p)
    p.set_defaults(func=run_train_tokenizer)

    p = sub.add_parser(
        "export",
        help="write a run's newest checkpoint as a save_pretrained directory (from_pretrained loads it)",
        description="Export the EMA (default) or raw weights of RUN_DIR's newest checkpoint, or of a given "
        "checkpoint directory, into OUT_DIR.",
    )
    p.add_argument("run", type=Path, metavar="RUN_DIR", help="run directory or checkpoint directory")
    p.add_argument("out", type=Path, metavar="OUT_DIR", help="output directory (new or empty)")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="which weights (default: ema)")
    p.set_defaults(func=run_export)

    p = sub.add_parser("plot-run", help="draw a run's metrics.jsonl as PNG curves",
                       description="Plot every logged metric of RUN_DIR into one PNG (default RUN_DIR/curves.png).")
    p.add_argument("run", type=Path, metavar="RUN_DIR")
    p.add_argument("-o", "--output", type=Path, default=None, help="PNG path (default RUN_DIR/curves.png)")
    p.set_defaults(func=run_plot)


def _run_section(args: argparse.Namespace) -> dict:
    run = {"max_steps": args.max_steps, "save_every": args.save_every, "seed": args.seed}
    return {k: v for k, v in run.items() if v is not None}  # max_steps wins over a recipe's epochs


def run_train_tokenizer(args: argparse.Namespace) -> int:
    from open_magvit2.train.config import load_recipe
    from open_magvit2.train.run import NonFiniteError
    from open_magvit2.train.tokenizer import TokenizerTrainConfig, train_tokenizer

    cfg = load_recipe(TokenizerTrainConfig, args.config, args.overrides, run=_run_section(args))
    try:
        out = train_tokenizer(cfg, args.data, args.output, resume=args.resume)
    except NonFiniteError as e:
        print(f"open-magvit2 train-tokenizer: error: {e}", file=sys.stderr)
        return 1
    print(f"run → {out}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from open_magvit2.train.export import export_run

    out = export_run(args.run, args.out, weights=args.weights)
    print(f"exported → {out}")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from open_magvit2.train.plots import plot_run

    print(f"curves → {plot_run(args.run, args.output)}")
    return 0
