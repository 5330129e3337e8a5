"""``train-tokenizer``, ``train-generator``, ``tokenize-dataset``, ``export`` and ``plot-run``: training from the
command line (single process or torchrun).

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

GENERATOR_EPILOG = """\
examples:
  open-magvit2 tokenize-dataset --checkpoint AR_256_B --data /data/imagenet/train --size 256 --output tokens/in256
  open-magvit2 train-generator --config configs/generator/tiny.yaml --data tokens/in256 --output runs/tiny
  torchrun --nnodes 4 --nproc-per-node 8 ... -m open_magvit2.cli train-generator --config configs/generator/B.yaml \\
      --data tokens/in256 --output runs/AR_B --resume auto
  open-magvit2 export runs/AR_B exported/AR_B      # ImageGenerator.from_pretrained("exported/AR_B")
"""


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True, metavar="RECIPE",
                   help="a recipe YAML file, or the name of a shipped one (tiny, imagenet_128_L, demo/…; "
                        "docs/training.md lists them)")
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
    p.set_defaults(func=run_trainer, kind="tokenizer")

    p = sub.add_parser(
        "train-generator",
        help="train or fine-tune the class-conditional AR generator on token shards (DDP or FSDP2, exact resume)",
        description="Train a generator from a recipe on a token set made by tokenize-dataset (or on images, "
        "encoded on the fly when the recipe sets data.tokenizer). Writes RUN_DIR/config.yaml, checkpoints/step_*/, "
        "metrics.jsonl, samples/*.png and tokenizer/. Launch with torchrun for several GPUs or nodes.",
        epilog=GENERATOR_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_args(p)
    p.set_defaults(func=run_trainer, kind="generator")

    p = sub.add_parser(
        "tokenize-dataset",
        help="encode an image folder or WebDataset shards (or, with a video tokenizer, a folder of videos) once "
        "into token shards for generator training",
        description="Write the LFQ indices, labels and source keys of every image into memory-mappable shards with "
        "an index.json (and the tokenizer, in TOKENS_DIR/tokenizer/). With a video tokenizer, --data is a folder of "
        "videos (class sub-folders, CLASS/*.avi|mp4) or one video, cut into clips of --frames frames every --stride "
        "frames. Runs under torchrun with the ranks splitting the shards; rerun the same command to resume a partial "
        "output; ends with a verification pass.",
        epilog=GENERATOR_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_tokenize_args(p)
    p.set_defaults(func=run_tokenize_dataset)

    p = sub.add_parser(
        "export",
        help="write a run's newest checkpoint as a save_pretrained directory (from_pretrained loads it)",
        description="Export the weights of RUN_DIR's newest intact checkpoint, or of a given checkpoint directory, "
        "into OUT_DIR: by default the run's own result (its EMA weights when its recipe keeps them, else the "
        "trained ones). A checkpoint whose weights are not finite is never exported.",
    )
    p.add_argument("run", type=Path, metavar="RUN_DIR", help="run directory or checkpoint directory")
    p.add_argument("out", type=Path, metavar="OUT_DIR", help="output directory (new or empty)")
    p.add_argument("--weights", choices=("ema", "raw"), default=None,
                   help="ema or raw (default: EMA when the run keeps one, else the trained weights)")
    p.set_defaults(func=run_export)

    p = sub.add_parser("plot-run", help="draw a run's metrics.jsonl as PNG curves",
                       description="Plot every logged metric of RUN_DIR into one PNG (default RUN_DIR/curves.png).")
    p.add_argument("run", type=Path, metavar="RUN_DIR")
    p.add_argument("-o", "--output", type=Path, default=None, help="PNG path (default RUN_DIR/curves.png)")
    p.set_defaults(func=run_plot)


def _add_tokenize_args(p: argparse.ArgumentParser) -> None:
    from open_magvit2.cli.common import add_device_arg, add_strict_arg, positive_int

    p.add_argument("--checkpoint", "-c", default=None,
                   help="the tokenizer: an official tokenizer or AR .ckpt (an AR file gives its own first stage), a "
                        "save_pretrained folder or a released name (default: the bundled demo image tokenizer)")
    p.add_argument("--data", required=True, help="image folder (class subfolders give the labels) or WebDataset .tar "
                                                 "shards (a .tar, a folder of them, or a brace pattern); for a video "
                                                 "tokenizer a folder of videos (class subfolders) or one video")
    p.add_argument("--size", type=positive_int, default=None, help="resize the shorter side and crop to SIZE (default: "
                   "the tokenizer's own size, 16 × its downsampling factor: 128 for the video model)")
    p.add_argument("--frames", type=positive_int, default=None,
                   help="video tokenizer: frames per clip, 1 + k·4 for the released model (default: 17, its clip)")
    p.add_argument("--stride", type=positive_int, default=None,
                   help="video tokenizer: frames from one clip's start to the next (default: --frames, no overlap)")
    p.add_argument("--output", required=True, type=Path, help="token set folder (new, or a partial one to resume)")
    p.add_argument("--augment", choices=("none", "flip", "tencrop"), default="none",
                   help="views per image: centre crop (none), + its mirror (flip), or ten-crop (default: none)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="images or clips per encoder call (default: 32 images, 4 clips)")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema",
                   help="which weights of an official tokenizer .ckpt (default: ema; AR files hold raw ones)")
    p.add_argument("--shard-size", type=positive_int, default=None,
                   help="images (videos) per token shard for a folder (default: 4096 images, 256 videos; WebDataset: "
                        "one per .tar)")
    p.add_argument("--workers", "--num-workers", dest="num_workers", type=int, default=2,
                   help="image-decoding processes per rank (default: 2; 0 = in the main process)")
    add_strict_arg(p)
    add_device_arg(p)


def _run_section(args: argparse.Namespace) -> dict:
    run = {"max_steps": args.max_steps, "save_every": args.save_every, "seed": args.seed}
    return {k: v for k, v in run.items() if v is not None}  # max_steps wins over a recipe's epochs


def run_trainer(args: argparse.Namespace) -> int:
    """``train-tokenizer`` / ``train-generator`` (``args.kind``): load the recipe, train, say where the run is."""
    from open_magvit2.train.config import load_recipe, resolve_recipe
    from open_magvit2.train.guard import NonFiniteError

    kind = args.kind
    if kind == "tokenizer":
        from open_magvit2.train.tokenizer import TokenizerTrainConfig as Config
        from open_magvit2.train.tokenizer import train_tokenizer as train
    else:
        from open_magvit2.train.generator import GeneratorTrainConfig as Config
        from open_magvit2.train.generator import train_generator as train
    cfg = load_recipe(Config, resolve_recipe(args.config, kind), args.overrides, run=_run_section(args))
    try:
        out = train(cfg, args.data, args.output, resume=args.resume)
    except NonFiniteError as e:  # the guard's verdict: exit 1, a training failure rather than a usage error
        print(f"open-magvit2 train-{kind}: error: {e}", file=sys.stderr)
        return 1
    print(f"run → {out}")
    return 0


def run_tokenize_dataset(args: argparse.Namespace) -> int:
    from open_magvit2.cli.common import Unreadable, default_to_demo
    from open_magvit2.data.pretokenize import tokenize_dataset

    default_to_demo(args, "image tokenizer")
    index = tokenize_dataset(args.checkpoint, args.data, args.size, args.output, augment=args.augment,
                             batch_size=args.batch_size, shard_size=args.shard_size, weights=args.weights,
                             device=args.device, num_workers=args.num_workers, strict=args.strict,
                             frames=args.frames, stride=args.stride)
    grid = "×".join(str(g) for g in index["grid"])
    if "frames" in index:  # a video token set
        videos = index["num_videos"]
        print(f"{index['num_samples']} clips of {index['frames']} frames (stride {index['stride']}) from "
              f"{videos - len(index['skipped'])} videos, {grid} tokens each → {args.output}")
        unreadable = Unreadable(videos, "videos")
    else:
        print(f"{index['num_samples']} images × {index['views']} view(s) of {grid} tokens → {args.output}")
        unreadable = Unreadable(index["num_samples"] + len(index["skipped"]), "images")
    for key, reason in index["skipped"]:  # the batch rule: the set is finished without them, exit 2
        unreadable.skip(key, reason)
    unreadable.check()
    return 0


def run_export(args: argparse.Namespace) -> int:
    import json

    from open_magvit2.checkpoints.hub import CONFIG_NAME
    from open_magvit2.train.export import export_run

    out = export_run(args.run, args.out, weights=args.weights)
    meta = json.loads((out / CONFIG_NAME).read_text()).get("metadata", {})
    print(f"exported the {meta.get('weights')} weights of step {meta.get('step')} → {out}")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from open_magvit2.train.plots import plot_run

    print(f"curves → {plot_run(args.run, args.output)}")
    return 0
