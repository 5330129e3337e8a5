"""Helpers shared by the CLI subcommands: device choice, checkpoint arguments, progress bars."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

from open_magvit2.device import pick_device

T = TypeVar("T")
__all__ = ["add_checkpoint_args", "add_device_arg", "pick_device", "progress", "require_checkpoint"]

NO_CHECKPOINT = (
    "--checkpoint is required: pass an official .ckpt file, a save_pretrained directory, or a Hugging Face repo id "
    "(no bundled demo model exists yet)"
)


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
