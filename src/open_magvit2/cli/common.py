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
    "Unreadable",
    "add_checkpoint_args",
    "add_device_arg",
    "add_strict_arg",
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
    from open_magvit2.registry import load_pretrained

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
    from open_magvit2.registry import model_kind
    from open_magvit2.tokenizer import ImageTokenizer, Tokenizer

    demo_cls = ImageTokenizer if cls is Tokenizer else cls
    default_to_demo(args, model_kind(demo_cls.model_type).label)  # type: ignore[attr-defined]
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


def output_file(path: str | Path, what: str = "output file", *, overwrite: bool = True) -> Path:
    """Check ``path`` can be written as a file (with ``overwrite=False``: that there is none yet), then create its
    folder."""
    path = Path(path)
    check_output_file(path, what)
    if not overwrite and path.exists():
        raise FileExistsError(f"{what} {path} already exists; choose a new name or delete it first")
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


# ---- batch jobs: the one rule for an input file that cannot be read -------------------------------------------

STRICT_HELP = "stop at the first input file that cannot be read (default: skip it, go on, list it at the end, exit 2)"


def add_strict_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strict", action="store_true", help=STRICT_HELP)


class Unreadable:
    """The rule of every batch command (README, "Batch jobs"): an input file that cannot be read is skipped and
    counted and the others are processed; :meth:`check` then raises one ``ValueError`` naming them ("3 of 40 images
    could not be read: a.png (reason), …"), so the command exits 2 with its finished outputs kept. With ``strict``
    (``--strict``) the first such file stops the command with its own message."""

    SHOWN = 5  # files named in the final line; the rest are counted

    def __init__(self, total: int, what: str = "files", strict: bool = False) -> None:
        self.total, self.what, self.strict = total, what, strict
        self.failed: list[tuple[str, str]] = []  # (name, reason)

    def skip(self, name: str, reason: str, path: str | Path | None = None) -> None:
        """File ``name`` (at ``path``) could not be read because of ``reason``: raise under ``strict``, else count
        it. A reason that starts with the file's path (as the readers' messages do) is shortened to the reason."""
        prefix = next((f"{p}: " for p in (path, name) if p is not None and reason.startswith(f"{p}: ")), "")
        if self.strict:
            raise ValueError(reason if prefix else f"{name}: {reason}")
        self.failed.append((name, " ".join(reason[len(prefix) :].split())))

    def check(self) -> None:
        """``ValueError`` listing the skipped files, if any (the error boundary prints it and exits 2)."""
        if not self.failed:
            return
        n = len(self.failed)
        listed = ", ".join(f"{name} ({reason})" for name, reason in self.failed[: self.SHOWN])
        more = f", and {n - self.SHOWN} more" if n > self.SHOWN else ""
        raise ValueError(f"{n} of {self.total} {self.what} could not be read: {listed}{more}")
