"""Helpers shared by the CLI subcommands: device choice, checkpoint arguments, progress bars."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch
from tqdm import tqdm

T = TypeVar("T")

NO_CHECKPOINT = (
    "--checkpoint is required: pass an official .ckpt file, a save_pretrained directory, or a Hugging Face repo id "
    "(no bundled demo model exists yet)"
)


def pick_device(name: str | None = None) -> torch.device:
    """``--device`` if given, else CUDA when available, else CPU."""
    if name:
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def add_checkpoint_args(parser: argparse.ArgumentParser, weights: bool = True) -> None:
    parser.add_argument(
        "--checkpoint",
        "-c",
        default=None,
        help="official .ckpt file, save_pretrained directory, or Hugging Face repo id (required)",
    )
    if weights:
        parser.add_argument(
            "--weights",
            choices=("ema", "raw"),
            default="ema",
            help="which weights of an official .ckpt to use (default: ema, as every official number)",
        )


def require_checkpoint(args: argparse.Namespace) -> str:
    if not args.checkpoint:
        raise ValueError(NO_CHECKPOINT)
    return str(args.checkpoint)


def progress(items: Iterable[T], total: int, desc: str) -> Iterator[T]:
    """A tqdm bar on stderr, shown only when there is more than one item."""
    return iter(tqdm(items, total=total, desc=desc, disable=total <= 1, unit="it", dynamic_ncols=True))
