"""Reading the released Open-MAGVIT2 ``.ckpt`` files (docs/design.md O-01–O-04): safe loading, the EMA key map,
and strict key checks with errors that name the keys.

The released files are ``torch.save`` pickles of ``{"state_dict": OrderedDict}`` that contain only tensors, so
they load with ``weights_only=True``; nothing else is ever unpickled. This module knows nothing about the models:
their architectures are read off the tensor shapes by ``tokenizer/config.py`` and ``generator/api.py``.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

EMA_PREFIX = "model_ema."
EMA_SCALARS = ("model_ema.decay", "model_ema.num_updates")


def load_official_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The ``state_dict`` of an official checkpoint, loaded with ``weights_only=True`` (nothing is executed).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` with one line for a file that is not a
    PyTorch checkpoint, is truncated, or needs arbitrary pickle code to load.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    is_zip = loads_mapped(path)
    try:
        # mmap avoids a second copy of 1–6 GB files; it needs the zip format that torch.save writes since 1.6.
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        msg = str(e).lower()  # torch's wording varies: "Unsupported global: ...", "unsupported GLOBAL posix.system"
        if "weights only load failed" in msg and "unsupported global" in msg:
            raise ValueError(
                f"{path}: refusing to load: the file needs arbitrary pickle code (not only tensors); "
                "nothing in it was executed. Official Open-MAGVIT2 checkpoints contain only tensors."
            ) from None
        raise ValueError(f"{path}: not a PyTorch checkpoint (torch: {first_sentence(e)})") from None
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError, ... on damaged or foreign bytes
        if is_zip:
            raise damaged_file(path, f"torch: {first_sentence(e)}") from None
        if _looks_like_truncated_zip(path):  # torch's own message says nothing useful here (e.g. EINVAL from mmap)
            raise damaged_file(path, "the zip archive that torch.save writes has no end") from None
        raise ValueError(f"{path}: not a PyTorch checkpoint (torch: {first_sentence(e)})") from None
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not an Open-MAGVIT2 checkpoint (expected a dict with a 'state_dict' of tensors)")
    return dict(obj)


def loads_mapped(path: str | Path) -> bool:
    """Whether :func:`load_official_state_dict` memory-maps ``path``: its tensors are then views of a private,
    read-only mapping of the file, so their pages can be dropped once copied (``checkpoints/loading.py``)."""
    return zipfile.is_zipfile(path)


def first_sentence(e: BaseException) -> str:
    """The first sentence of an exception's message, whole (a reader's message may go on with generic advice)."""
    text = " ".join(str(e).split())
    return re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".") or type(e).__name__


def damaged_file(path: Path, reason: str) -> ValueError:
    """The one line for a checkpoint or weights file that is cut short or damaged: its size, why, what to do."""
    size = path.stat().st_size
    return ValueError(f"{path}: truncated or corrupt checkpoint ({size:,} bytes; {reason}); download or copy it "
                      "again")


def _looks_like_truncated_zip(path: Path) -> bool:
    """A zip whose central directory is cut off still starts with the local-file signature."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def ema_key(name: str) -> str:
    """``encoder.down.0.block.0.conv1.weight`` → ``model_ema.encoderdown0block0conv1weight`` (docs/design.md O-02)."""
    return EMA_PREFIX + name.replace(".", "")


def _is_ignored(key: str) -> bool:
    """Keys a loader must skip: training-only loss modules, the discriminator EMA, and LitEma's scalars."""
    return key.startswith("loss.") or key.startswith(EMA_PREFIX + "loss") or key in EMA_SCALARS


WEIGHTS = ("ema", "raw")


def check_weights(weights: object) -> None:
    """``ValueError`` unless ``weights`` names one set of weights of an official tokenizer file: ema or raw."""
    if not isinstance(weights, str) or weights not in WEIGHTS:
        raise ValueError(f"weights must be 'ema' or 'raw' (the averaged weights every official number uses, or the "
                         f"trained ones), got {weights!r}")


def tokenizer_weights(state_dict: Mapping[str, Tensor], weights: str = "ema", prefix: str = "") -> dict[str, Tensor]:
    """The encoder/decoder tensors of an official tokenizer state dict, under their module names.

    ``weights="ema"`` (default; what every official number uses) un-flattens ``model_ema.*``; ``"raw"`` takes
    ``encoder.*``/``decoder.*``. Keys under ``prefix`` that are neither these nor ignorable raise ``ValueError``.
    """
    check_weights(weights)
    sd = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    names = [k for k in sd if k.startswith(("encoder.", "decoder."))]
    if not names:
        found = sorted({k.split(".")[0] for k in state_dict})
        raise ValueError(
            f"no '{prefix}encoder.*' / '{prefix}decoder.*' keys: not a tokenizer checkpoint (top-level names: {found})"
        )
    ema = {k for k in sd if k.startswith(EMA_PREFIX) and not _is_ignored(k)}
    other = sorted(k for k in sd if not k.startswith(("encoder.", "decoder.", EMA_PREFIX)) and not _is_ignored(k))
    if other:
        raise ValueError(f"unexpected keys in the tokenizer checkpoint: {_summarise(other)}")
    if weights == "raw":
        return {k: sd[k] for k in names}
    if not ema:
        raise ValueError("this checkpoint has no EMA weights (no model_ema.* tensors); load it with weights='raw'")
    missing = [k for k in names if ema_key(k) not in ema]
    unexpected = sorted(ema - {ema_key(k) for k in names})
    if missing or unexpected:
        raise ValueError(
            f"EMA weights do not match the model: missing EMA twins of {_summarise(missing)}; "
            f"unexpected EMA keys {_summarise(unexpected)}"
        )
    return {k: sd[ema_key(k)] for k in names}


def _summarise(keys: list[str], limit: int = 8) -> str:
    if not keys:
        return "none"
    more = f" … and {len(keys) - limit} more" if len(keys) > limit else ""
    return "[" + ", ".join(keys[:limit]) + "]" + more + f" ({len(keys)} keys)"


def check_state_dict(
    own: Mapping[str, tuple[int, ...]], given: Mapping[str, tuple[int, ...]], what: str = "model"
) -> None:
    """``ValueError`` naming every missing, unexpected and mis-shaped key of ``given`` against ``own`` (both map
    key → shape), so that nothing is allocated or copied for weights that cannot load."""
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(given[k])} vs model {tuple(own[k])}"
        for k in own
        if k in given and tuple(given[k]) != tuple(own[k])
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{what}: the weights do not match the architecture. Missing keys: {_summarise(missing)}. "
            f"Unexpected keys: {_summarise(unexpected)}. Shape mismatches: {_summarise(shapes)}."
        )


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], what: str = "model") -> None:
    """``load_state_dict(strict=True)`` with a ``ValueError`` that names missing, unexpected and mis-shaped keys."""
    own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    check_state_dict(own, {k: tuple(v.shape) for k, v in state_dict.items()}, what)
    module.load_state_dict(dict(state_dict), strict=True)
