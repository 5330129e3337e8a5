"""Batched image input and token files for the image subcommands: a DataLoader over files/folders/globs, one
validator for token files, and the ``tokenize --shards`` writer (the token-set format of ``data/tokens.py``)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from open_magvit2.checkpoints.hub import native_size
from open_magvit2.cli.common import Unreadable, add_strict_arg, positive_int
from open_magvit2.fileio import InputFile, atomic_write
from open_magvit2.imaging import load_image, pad_to_multiple
from open_magvit2.progress import progress
from open_magvit2.tokenizer import Tokenizer

Box = tuple[int, int, int, int]
INPUTS_HELP = "image files, folders (searched recursively) and quoted globs such as 'photos/**/*.jpg'"


def add_batch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="image-decoding processes (default: min(4, CPUs); 0 = in the main process)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_strict_arg(p)


def image_size(args: argparse.Namespace, factor: int) -> int | None:
    """``--size``, defaulting to the tokenizer's native size (16 × factor); None with --original-resolution."""
    if args.original_resolution:
        return None
    size = args.size or native_size(factor)
    if size % factor or size // factor < 2:
        raise ValueError(f"--size {size} must be a multiple of the tokenizer's downsampling factor {factor} and at "
                         f"least {2 * factor}; e.g. --size {max(2, round(size / factor)) * factor}")
    return size


# Peak memory of encode + decode, in full-resolution activations of the widest level: measured on CPU, about 8
# of them are alive at once (a residual block's input, its norm and conv outputs, the skip sum). The check below
# counts 4, so it refuses only what could not fit even then.
LIVE_ACTIVATIONS = 4


def activation_bytes(tok: Tokenizer, height: int, width: int, batch: int) -> int:
    """A lower bound of the memory ``tok`` needs to encode and decode ``batch`` images of height × width: the
    widest level's activations (channels × pixels, every level but the last halves H and W) and the images."""
    c = tok.config
    level = max(c.ch * m * (height >> i) * (width >> i) for i, m in enumerate(c.ch_mult))
    item = next(tok.parameters()).element_size()
    return batch * (LIVE_ACTIVATIONS * level * item + 2 * 3 * height * width * 4)


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device``: the GPU's (``torch.cuda.mem_get_info``), or the host's ``MemAvailable``; None when
    unknown (another platform)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_fits(tok: Tokenizer, device: torch.device, height: int, width: int, batch: int, what: str,
               lower: str) -> None:
    """``ValueError`` naming the need and what to lower when ``batch`` images of height × width cannot fit in the
    free memory of ``device`` (:func:`activation_bytes`): ``what`` is the input, ``lower`` the options to lower."""
    need, free = activation_bytes(tok, height, width, batch), available_bytes(device)
    if free is not None and need > free:
        where = "GPU" if device.type == "cuda" else "host"
        images = f"{batch} images" if batch > 1 else "one image"
        raise ValueError(f"{what} would need at least {need / 2**30:,.1f} GiB of {where} memory for the tokenizer's "
                         f"activations ({images} of {height}×{width} pixels), more than the {free / 2**30:,.1f} GiB "
                         f"free; lower {lower}")


class _Images(Dataset):
    """(position, image (3, H, W) in [−1, 1] or None, padding box or None, error message or "")."""

    def __init__(self, files: list[InputFile], size: int | None, factor: int) -> None:
        self.files, self.size, self.factor = files, size, factor

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, Tensor | None, Box | None, str]:
        try:  # errors travel as values: a worker's exception would reach the user wrapped in its traceback
            x = load_image(self.files[i].path, self.size)
        except (ValueError, OSError) as e:
            return i, None, None, str(e)
        if self.size is not None:
            return i, x[0], None, ""
        padded, box = pad_to_multiple(x, self.factor)  # docs/design.md O-49: zero padding, centred, cropped back later
        return i, padded[0], box, ""


def image_batches(
    args: argparse.Namespace, files: list[InputFile], size: int | None, factor: int, desc: str,
    unreadable: Unreadable,
) -> Iterator[tuple[list[int], Tensor, list[Box | None]]]:
    """(positions, images (B, 3, H, W) in [−1, 1], boxes) with at most ``--batch-size`` images of one shape each,
    decoded by ``--workers`` processes. A file that cannot be read goes to ``unreadable`` (the batch rule: skipped
    and reported at the end, or with ``--strict`` where the run stops)."""
    loader = DataLoader(_Images(files, size, factor), batch_size=args.batch_size, num_workers=max(0, args.workers),
                        collate_fn=list)
    for batch in progress(loader, len(loader), desc, enabled=not args.no_progress, unit="batch"):
        items = []
        for item in batch:
            if item[3]:
                unreadable.skip(files[item[0]].name, item[3], files[item[0]].path)
            else:
                items.append(item)
        start = 0
        for end in range(1, len(items) + 1):  # runs of equal shape (original resolution mixes sizes)
            if end == len(items) or items[end][1].shape != items[start][1].shape:
                run = items[start:end]
                yield [r[0] for r in run], torch.stack([r[1] for r in run]), [r[2] for r in run]
                start = end


# ---- per-image token files ---------------------------------------------------------------------------------------


def digest(tokens: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(tokens, dtype=np.int64).tobytes()).hexdigest()[:16]


def write_sidecar(path: Path, tokens: np.ndarray, box: Box | None) -> None:
    """``<name>.json`` next to ``<name>.npy``: the crop box of an --original-resolution run and the digest of the
    tokens it belongs to. Without padding an older sidecar is removed, so it cannot crop a later decode."""
    if box is None:
        path.unlink(missing_ok=True)
        return
    doc = {"crop_box": list(box), "tokens_sha256": digest(tokens)}
    atomic_write(path, lambda p: p.write_text(json.dumps(doc) + "\n"))


def read_sidecar(path: Path, tokens: np.ndarray) -> Box | None:
    """The crop box for these tokens, or None (no sidecar, or one that belongs to other tokens: said on stderr)."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        box = tuple(int(v) for v in doc["crop_box"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: not a tokenize sidecar (expected {{'crop_box': [top, left, h, w]}})") from None
    if doc.get("tokens_sha256") != digest(tokens) or len(box) != 4:
        print(f"note: ignoring {path}: it was written for other tokens", file=sys.stderr)
        return None
    return box  # type: ignore[return-value]


def load_token_file(path: Path) -> np.ndarray:
    """One validator for token files: a plain ``.npy`` (no pickle) of integer indices (h, w) or (B, h, w), non-empty.
    The value range is checked against the model when decoding."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npy token file ({' '.join(str(e).split()) or type(e).__name__})") \
            from None
    if not isinstance(arr, np.ndarray):  # np.load returns an NpzFile for an .npz archive, whatever its name
        arr.close()
        raise ValueError(f"{path}: an .npz archive, not an .npy array; pass the files written by `tokenize`")
    if arr.ndim not in (2, 3) or not np.issubdtype(arr.dtype, np.integer) or arr.size == 0:
        raise ValueError(f"{path}: expected a non-empty integer array (h, w) or (B, h, w), got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64, copy=False)
