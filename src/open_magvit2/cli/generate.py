"""``generate`` and ``sample-fid``: class-conditional sampling from an AR checkpoint (spec §5.8, §5.10)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from open_magvit2.checkpoints.auto import load_pretrained
from open_magvit2.cli.common import add_checkpoint_args, add_device_arg, pick_device, require_checkpoint
from open_magvit2.generator import ImageGenerator
from open_magvit2.generator.fid import sample_class, sample_shard
from open_magvit2.imaging import image_grid, save_image

SAMPLING_HELP = "one value for both sub-tokens, or PRE,POST"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="sample class-conditional images from an AR checkpoint; write PNGs and a grid",
        description="Sample images of the given ImageNet classes. Writes OUT/<class>/<i>.png and OUT/grid.png "
        "(one row per class). Each class has its own seed derived from (--seed, class), so a class's images do "
        "not depend on which other classes are requested.",
    )
    p.add_argument("--classes", type=int, nargs="+", required=True, help="class ids, e.g. 207 360")
    p.add_argument("--num-per-class", type=int, default=4, help="images per class (default 4)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    _add_sampling(p, seed=0)
    p.set_defaults(func=run_generate)

    p = sub.add_parser(
        "sample-fid",
        help="FID-50k sample protocol: N images per class into one .npz (arr_0 uint8 NHWC)",
        description="Sample --num-per-class images for every class (or --classes) and write an .npz whose "
        "arr_0 is uint8 (N, H, W, 3), in class order, for the ADM FID/IS evaluator. Under torchrun the classes are "
        "dealt to ranks round-robin; per-class seeds make the result independent of the number of ranks.",
    )
    p.add_argument("--num-per-class", type=int, default=50, help="images per class (default 50 = FID-50k)")
    p.add_argument("--classes", type=int, nargs="+", default=None, help="subset of classes (default: all)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .npz file")
    _add_sampling(p, seed=42)
    p.set_defaults(func=run_sample_fid)


def _add_sampling(p: argparse.ArgumentParser, seed: int) -> None:
    add_checkpoint_args(p, weights=False)
    add_device_arg(p)
    p.add_argument("--cfg", default=None, help=f"CFG scale, {SAMPLING_HELP}; <= 1 = no guidance (default: the model's)")
    p.add_argument("--temperature", default=None, help=f"sampling temperature, {SAMPLING_HELP} (default: the model's)")
    p.add_argument("--top-k", default="0", help=f"top-k filter, {SAMPLING_HELP}; 0 = off, 1 = greedy (default 0)")
    p.add_argument("--top-p", default="1.0", help=f"nucleus filter, {SAMPLING_HELP}; 1.0 = off (default)")
    p.add_argument("--seed", type=int, default=seed, help=f"global seed (default {seed})")
    p.add_argument("--batch-size", type=int, default=50, help="images per forward batch (default 50)")


def _pair(text: str | None, kind: type, name: str) -> tuple | None:
    if text is None:
        return None
    try:
        values = tuple(kind(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"--{name} {text!r}: expected a number or PRE,POST") from None
    if len(values) not in (1, 2):
        raise ValueError(f"--{name} {text!r}: expected a number or PRE,POST")
    return values if len(values) == 2 else values * 2


def _sampling(args: argparse.Namespace) -> dict:
    return dict(
        cfg_scale=_pair(args.cfg, float, "cfg"),
        temperature=_pair(args.temperature, float, "temperature"),
        top_k=_pair(args.top_k, int, "top-k"),
        top_p=_pair(args.top_p, float, "top-p"),
    )


def _load(args: argparse.Namespace, device: torch.device) -> ImageGenerator:
    gen = load_pretrained(require_checkpoint(args))
    if not isinstance(gen, ImageGenerator):
        raise ValueError(f"{args.checkpoint} is not an AR generator checkpoint ({type(gen).__name__})")
    if gen.tokenizer is None:
        raise ValueError(f"{args.checkpoint} holds no tokenizer (first stage) to decode samples with")
    return gen.to(device).eval()


def _check_classes(classes: list[int], gen: ImageGenerator) -> None:
    bad = [c for c in classes if not 0 <= c < gen.config.num_classes]
    if bad:
        raise ValueError(f"class ids must lie in [0, {gen.config.num_classes}); got {bad}")


def run_generate(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    gen, sampling = _load(args, device), _sampling(args)
    _check_classes(args.classes, gen)
    args.output.mkdir(parents=True, exist_ok=True)
    tiles = []
    for cls in args.classes:
        images = sample_class(
            gen, cls, args.num_per_class, seed=args.seed, batch_size=args.batch_size, progress=True, **sampling
        )
        for i, im in enumerate(images):
            save_image(im, args.output / str(cls) / f"{i}.png")
        tiles.extend(images)
        print(f"class {cls}: {len(images)} images → {args.output / str(cls)}")
    save_image(image_grid(tiles, columns=args.num_per_class), args.output / "grid.png")
    print(f"grid → {args.output / 'grid.png'}")
    return 0


def _dist_setup() -> tuple[int, int]:
    """(rank, world_size) from torchrun's environment; initialises a process group when world_size > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return rank, world


def run_sample_fid(args: argparse.Namespace) -> int:
    rank, world = _dist_setup()
    device = pick_device(args.device)
    if device.type == "cuda" and device.index is None and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    gen, sampling = _load(args, device), _sampling(args)
    classes = list(range(gen.config.num_classes)) if args.classes is None else args.classes
    _check_classes(classes, gen)
    share = len(classes[rank::world])
    with tqdm(total=share, desc=f"rank {rank}/{world}: classes", unit="class", disable=share <= 1) as bar:
        samples = sample_shard(
            gen,
            classes,
            args.num_per_class,
            seed=args.seed,
            rank=rank,
            world_size=world,
            batch_size=args.batch_size,
            on_class=lambda _c: bar.update(1),
            **sampling,
        )
    out = args.output if args.output.suffix == ".npz" else args.output.with_name(args.output.name + ".npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    if world == 1:
        _write(out, classes, samples)
        return 0
    part = out.with_name(f"{out.stem}.rank{rank}-of-{world}.npz")
    np.savez(part, classes=np.array(list(samples), dtype=np.int64), arr_0=_stack(list(samples), samples))
    torch.distributed.barrier()
    if rank == 0:
        merged: dict[int, np.ndarray] = {}
        for r in range(world):
            p = out.with_name(f"{out.stem}.rank{r}-of-{world}.npz")
            with np.load(p) as f:
                per = f["arr_0"].reshape(len(f["classes"]), args.num_per_class, *f["arr_0"].shape[1:])
                merged.update(zip(f["classes"].tolist(), per))
            p.unlink()
        _write(out, classes, merged)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return 0


def _stack(order: list[int], samples: dict[int, np.ndarray]) -> np.ndarray:
    return np.concatenate([samples[c] for c in order]) if order else np.zeros((0, 0, 0, 3), np.uint8)


def _write(out: Path, classes: list[int], samples: dict[int, np.ndarray]) -> None:
    arr = _stack(classes, samples)
    labels = np.repeat(np.array(classes, dtype=np.int64), [len(samples[c]) for c in classes])
    np.savez(out, arr_0=arr, labels=labels)
    print(f"{arr.shape[0]} samples {tuple(arr.shape[1:])} → {out}")
