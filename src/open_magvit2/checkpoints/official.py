"""Reading the released Open-MAGVIT2 ``.ckpt`` files (spec §0): safe loading, the EMA key map, architecture
inference, and strict loading with errors that name the keys.

The released files are ``torch.save`` pickles of ``{"state_dict": OrderedDict}`` that contain only tensors, so
they load with ``weights_only=True``; nothing else is ever unpickled.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # the tokenizer package imports this module
    from open_magvit2.tokenizer.config import TokenizerConfig


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
    is_zip = zipfile.is_zipfile(path)
    try:
        # mmap avoids a second copy of 1–6 GB files; it needs the zip format that torch.save writes since 1.6.
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg and "Unsupported global" in msg:
            raise ValueError(
                f"{path}: refusing to load: the file needs arbitrary pickle code (not only tensors); "
                "nothing in it was executed. Official Open-MAGVIT2 checkpoints contain only tensors."
            ) from None
        raise ValueError(f"{path}: not a PyTorch checkpoint ({_first_line(e)})") from None
    except Exception as e:  # torch raises RuntimeError, EOFError, KeyError, ... on damaged or foreign bytes
        if is_zip or _looks_like_truncated_zip(path):
            raise ValueError(f"{path}: truncated or corrupt checkpoint ({_first_line(e)})") from None
        raise ValueError(f"{path}: not a PyTorch checkpoint ({_first_line(e)})") from None
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not an Open-MAGVIT2 checkpoint (expected a dict with a 'state_dict' of tensors)")
    return dict(obj)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:120] if text else ''}"


def _looks_like_truncated_zip(path: Path) -> bool:
    """A zip whose central directory is cut off still starts with the local-file signature."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def ema_key(name: str) -> str:
    """``encoder.down.0.block.0.conv1.weight`` → ``model_ema.encoderdown0block0conv1weight`` (spec §0.2)."""
    return EMA_PREFIX + name.replace(".", "")


def _is_ignored(key: str) -> bool:
    """Keys a loader must skip: training-only loss modules, the discriminator EMA, and LitEma's scalars."""
    return key.startswith("loss.") or key.startswith(EMA_PREFIX + "loss") or key in EMA_SCALARS


def tokenizer_weights(state_dict: Mapping[str, Tensor], weights: str = "ema", prefix: str = "") -> dict[str, Tensor]:
    """The encoder/decoder tensors of an official tokenizer state dict, under their module names.

    ``weights="ema"`` (default; what every official number uses) un-flattens ``model_ema.*``; ``"raw"`` takes
    ``encoder.*``/``decoder.*``. Keys under ``prefix`` that are neither these nor ignorable raise ``ValueError``.
    """
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
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


def infer_tokenizer_config(weights: Mapping[str, Tensor], **overrides: object) -> TokenizerConfig:
    """Recover ch, ch_mult, num_res_blocks, z_channels and dims from encoder/decoder tensor shapes."""
    from open_magvit2.tokenizer.config import TokenizerConfig

    conv = "conv_1.weight" if "encoder.conv_in.conv_1.weight" in weights else "weight"
    try:
        conv_in = weights[f"encoder.conv_in.{conv}"]
        conv_out = weights[f"encoder.conv_out.{conv}"]
        dec_out = weights[f"decoder.conv_out.{conv}"]
    except KeyError as e:
        raise ValueError(f"cannot infer the tokenizer architecture: key {e} is missing") from None
    levels = sorted({int(k.split(".")[2]) for k in weights if k.startswith("encoder.down.")})
    blocks = {int(k.split(".")[4]) for k in weights if k.startswith("encoder.down.0.block.")}
    ch = conv_in.shape[0]
    ch_mult = tuple(weights[f"encoder.down.{i}.block.0.conv1.{conv}"].shape[0] // ch for i in levels)
    fields: dict[str, object] = dict(
        ch=ch,
        ch_mult=ch_mult,
        num_res_blocks=len(blocks),
        z_channels=conv_out.shape[0],
        dims=conv_in.dim() - 2,
        in_channels=conv_in.shape[1],
        out_channels=dec_out.shape[0],
    )
    fields.update(overrides)
    return TokenizerConfig(**fields)  # type: ignore[arg-type]


def _summarise(keys: list[str], limit: int = 8) -> str:
    if not keys:
        return "none"
    more = f" … and {len(keys) - limit} more" if len(keys) > limit else ""
    return "[" + ", ".join(keys[:limit]) + "]" + more + f" ({len(keys)} keys)"


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], what: str = "model") -> None:
    """``load_state_dict(strict=True)`` with a ``ValueError`` that names missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{what}: the weights do not match the architecture. Missing keys: {_summarise(missing)}. "
            f"Unexpected keys: {_summarise(unexpected)}. Shape mismatches: {_summarise(shapes)}."
        )
    module.load_state_dict(dict(state_dict), strict=True)
