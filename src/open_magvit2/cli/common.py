"""Helpers shared by the CLI subcommands: argument types, checkpoint and device arguments, model loading, and the
output folders a failed command removes again (``cli/__init__.py`` is the one error boundary)."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path
from typing import TypeVar

import torch

from open_magvit2.device import pick_device
from open_magvit2.fileio import check_output_dir, check_output_file
from open_magvit2.precision import set_tf32

T = TypeVar("T")
__all__ = [
    "add_checkpoint_args",
    "add_device_arg",
    "begin_command",
    "checkpoint_first",
    "default_to_demo",
    "load_checkpoint",
    "output_dir",
    "output_file",
    "positive_float",
    "positive_int",
    "remove_created_outputs",
]

CHECKPOINT_HELP = (
    "a released name (imagenet_128_L, imagenet_256_L, pretrain256_262144, pretrain256_16384, video_128_262144, "
    "AR_256_B/L/XL: downloaded once into the Hugging Face cache), demo (the bundled demo model), an official .ckpt "
    "file, a save_pretrained folder or a hub repo id owner/name"
)

# ---- argument types: argparse turns their ValueError/ArgumentTypeError into a one-line usage error -------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def device_name(text: str) -> str:
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"not a torch device: {text!r} (examples: cpu, cuda, cuda:1)") from None
    return text


def add_device_arg(parser: argparse.ArgumentParser, *, dtype: bool = False) -> None:
    """``--device``; with ``dtype=True`` (inference subcommands) also ``--dtype``, which :func:`load_checkpoint`
    loads the weights in (precision.py says what stays float32)."""
    parser.add_argument("--device", type=device_name, default=None,
                        help="torch device (default: cuda if available, else cpu)")
    if dtype:
        parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                            help="weights and activations (default fp32: exact, TF32 off; bf16/fp16: faster on GPUs, "
                                 "a few token indices differ)")


def add_checkpoint_args(parser: argparse.ArgumentParser, weights: bool = True) -> None:
    parser.add_argument("--checkpoint", "-c", default=None,
                        help=f"{CHECKPOINT_HELP} (default: the bundled demo model)")
    if weights:
        parser.add_argument(
            "--weights",
            choices=("ema", "raw"),
            default="ema",
            help="which weights of an official tokenizer .ckpt to use (default: ema, as every official number)",
        )


def checkpoint_first(args: argparse.Namespace, name: str = "inputs") -> None:
    """Without ``--checkpoint``, the first positional argument is the checkpoint: ``reconstruct imagenet_128_L
    photos/`` reads like ``reconstruct photos/ -c imagenet_128_L``."""
    values = getattr(args, name)
    if args.checkpoint:
        return
    if len(values) < 2 or not looks_like_checkpoint(values[0]):
        return  # no checkpoint given: load_checkpoint uses the bundled demo model
    args.checkpoint, args.checkpoint_positional = values[0], True
    setattr(args, name, values[1:])


def looks_like_checkpoint(text: str) -> bool:
    """A released or demo name, a checkpoint file, a save_pretrained folder or a hub id ``owner/name`` — not an
    image, a video, a folder of them or a glob."""
    from open_magvit2.checkpoints.hub import CONFIG_NAME, DEMO_NAME, RELEASES, looks_like_path

    p = Path(text).expanduser()
    if text in RELEASES or text == DEMO_NAME or (p / CONFIG_NAME).is_file():
        return True
    if p.suffix.lower() in (".ckpt", ".pt", ".pth", ".safetensors"):
        return True
    return not p.exists() and not looks_like_path(text) and text.count("/") == 1 and "*" not in text


def load_checkpoint(args: argparse.Namespace, cls: type[T], hint: str) -> tuple[T, torch.device]:
    """``--checkpoint`` as a ``cls`` instance on ``--device`` in eval mode; ``ValueError`` with ``hint`` (what to
    use instead) when the file holds another kind of model."""
    from open_magvit2.checkpoints.auto import load_pretrained

    device = pick_device(args.device)
    set_tf32(False)  # the inference precision policy (precision.py): float32 means float32
    if not args.checkpoint or args.checkpoint == "demo":
        return _load_demo(args, cls, device), device
    try:
        model = load_pretrained(args.checkpoint, weights=getattr(args, "weights", "ema"), device=device,
                                dtype=getattr(args, "dtype", None))
    except (FileNotFoundError, ValueError) as e:
        if getattr(args, "checkpoint_positional", False):  # the user may have forgotten the checkpoint
            raise type(e)(f"{e} (without --checkpoint, the first argument is read as the checkpoint)") from None
        raise
    if not isinstance(model, cls):
        raise ValueError(f"{args.checkpoint} holds a {type(model).__name__}, not a {cls.__name__}; {hint}")
    return model.to(device).eval(), device  # type: ignore[attr-defined]


def default_to_demo(args: argparse.Namespace, kind: str) -> None:
    """No --checkpoint: use the bundled demo model (``args.checkpoint = "demo"``), with a one-line notice naming
    it. ``kind``: "image tokenizer", "video tokenizer" or "generator"."""
    if not args.checkpoint:
        args.checkpoint = "demo"
        print(f"no --checkpoint: using the bundled demo {kind} (demo quality, not the paper's models; "
              "docs/model_zoo.md)", file=sys.stderr)


def _load_demo(args: argparse.Namespace, cls: type[T], device: torch.device) -> T:
    from open_magvit2.tokenizer import ImageTokenizer, Tokenizer

    demo_cls = ImageTokenizer if cls is Tokenizer else cls
    kind = {"image_tokenizer": "image tokenizer", "video_tokenizer": "video tokenizer",
            "image_generator": "generator"}.get(demo_cls.model_type, demo_cls.__name__)  # type: ignore[attr-defined]
    default_to_demo(args, kind)
    model = demo_cls.from_pretrained("demo", device=device, dtype=getattr(args, "dtype", None))  # type: ignore
    return model.eval()


# ---- outputs: checked before any work; folders this command created are removed again if it fails ------------

_created: list[Path] = []


def begin_command() -> None:
    """Start recording the folders this command creates (forget an earlier in-process command's)."""
    _created.clear()


def _first_missing(path: Path) -> Path | None:
    missing = None
    p = path.absolute()
    while not p.exists():
        missing, p = p, p.parent
    return missing


def output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Check ``path`` can be written (:func:`~open_magvit2.fileio.check_output_dir`), then create it."""
    path = Path(path)
    check_output_dir(path, what)
    top = _first_missing(path)
    path.mkdir(parents=True, exist_ok=True)
    if top is not None:
        _created.append(top)
    return path


def output_file(path: str | Path, what: str = "output file") -> Path:
    """Check ``path`` can be written as a file, then create its folder."""
    path = Path(path)
    check_output_file(path, what)
    output_dir(path.parent, "output folder")
    return path


def remove_created_outputs() -> None:
    """Remove the folders :func:`output_dir` created in this command that are still empty (never a file)."""
    for top in reversed(_created):
        if not top.is_dir():
            continue
        for d, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):  # deepest first
            with contextlib.suppress(OSError):  # not empty: it holds a finished output, keep it
                os.rmdir(d)
    _created.clear()
