"""From a checkpoint to a model, in one place: what a path holds (:func:`open_checkpoint`, the one
folder-or-official-file dispatch) and how a model is made from weights (:func:`build_and_load`, the one
build-on-meta-then-strict-load path).

:func:`build_and_load` never holds a full float32 copy of the model on the host: the model is built on the meta
device, cast to the target dtype there (free), allocated once on the target device, and filled one tensor at a
time, each source tensor cast and moved as it is copied. The released files load memory-mapped; once a tensor is
copied its pages of the mapping are dropped (``madvise``), so the file is never resident as a whole either. A
``save_pretrained`` folder's safetensors file is read one tensor at a time.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from open_magvit2.checkpoints.hub import MODEL_TYPES, WEIGHTS_NAME, read_pretrained_config, resolve_checkpoint
from open_magvit2.checkpoints.official import (
    check_state_dict,
    damaged_file,
    first_sentence,
    load_official_state_dict,
    loads_mapped,
)
from open_magvit2.precision import resolve_dtype

M = TypeVar("M", bound=nn.Module)


class SafetensorsWeights(Mapping[str, Tensor]):
    """The tensors of a ``.safetensors`` file as a read-only mapping that reads each tensor when it is asked for."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._file = safe_open(str(self.path), framework="pt", device="cpu")
        except SafetensorError as e:  # a short or damaged file: its header does not describe its bytes
            raise damaged_file(self.path, f"safetensors: {first_sentence(e)}") from None
        self._keys = list(self._file.keys())

    def __getitem__(self, key: str) -> Tensor:
        if key not in self._keys:
            raise KeyError(key)
        return self._file.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._file.get_slice(key).get_shape())


def shapes(weights: Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    """key → shape, without reading a lazily loaded tensor."""
    if isinstance(weights, SafetensorsWeights):
        return {k: weights.shape(k) for k in weights}
    return {k: tuple(v.shape) for k, v in weights.items()}


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint path holds. ``config`` is the saved config of a ``save_pretrained`` folder, None for an
    official ``.ckpt`` (its architecture is read off the shapes). ``file_backed``: the tensors are views of a
    private read-only mapping of the file, whose pages :func:`build_and_load` may drop once copied."""

    path: Path
    model_type: str
    config: dict[str, Any] | None
    state_dict: Mapping[str, Tensor]
    file_backed: bool


def official_model_type(state_dict: Mapping[str, Tensor], path: str | Path = "checkpoint") -> str:
    """Which model an official state dict holds: ``image_generator`` (``transformer.*``), ``video_tokenizer``
    (5-D ``encoder.conv_in``) or ``image_tokenizer``."""
    if any(k.startswith("transformer.") for k in state_dict):
        return "image_generator"
    conv_in = state_dict.get("encoder.conv_in.weight", state_dict.get("encoder.conv_in.conv_1.weight"))
    if conv_in is None:
        raise ValueError(f"{path}: neither a tokenizer (encoder.conv_in) nor an AR model (transformer.*) checkpoint")
    return "video_tokenizer" if conv_in.dim() == 5 else "image_tokenizer"


def open_checkpoint(path_or_id: str | Path, revision: str | None = None, *, model_type: str | None = None
                    ) -> Checkpoint:
    """Resolve ``path_or_id`` (a file, a ``save_pretrained`` folder, a released name, a hub id, or ``"demo"``:
    the bundled demo model of ``model_type``) and say what it holds, reading no weights yet: the official file is
    memory-mapped, a folder's tensors are read on demand."""
    path = resolve_checkpoint(path_or_id, model_type, revision)
    if path.is_dir():
        model_type, config = read_pretrained_config(path)
        if model_type not in MODEL_TYPES:
            raise ValueError(f"{path}: unknown model_type {model_type!r}; expected one of {MODEL_TYPES}")
        return Checkpoint(path, model_type, config, SafetensorsWeights(path / WEIGHTS_NAME), file_backed=False)
    state_dict = load_official_state_dict(path)
    return Checkpoint(path, official_model_type(state_dict, path), None, state_dict, loads_mapped(path))


def check_model_type(checkpoint: Checkpoint, expected: tuple[str, ...], cls_name: str) -> None:
    """``ValueError`` naming the right class when a checkpoint holds another kind of model."""
    if checkpoint.model_type not in expected:
        raise ValueError(
            f"{checkpoint.path} holds a {checkpoint.model_type!r}, not {' or '.join(map(repr, expected))}: load it "
            f"with open_magvit2.load_pretrained, which picks the class, instead of {cls_name}.from_pretrained"
        )


def build_and_load(
    build: Callable[[], M],
    weights: Mapping[str, Tensor],
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    what: str = "model",
    release_source: bool = False,
) -> M:
    """``build()`` on the meta device, loaded strictly from ``weights`` onto ``device`` (default CPU) in ``dtype``
    (default float32; floating weights only), in eval mode.

    Keys and shapes are checked before anything is allocated (``ValueError`` naming them). Non-persistent buffers
    are made by the modules themselves when they are materialised (the generator's float32 RoPE table).
    ``release_source=True`` drops each source tensor's file pages after its copy; pass it only for tensors of a
    private read-only file mapping (:attr:`Checkpoint.file_backed`).
    """
    device = torch.device("cpu" if device is None else device)
    dtype = resolve_dtype(dtype) or torch.float32
    with torch.device("meta"):
        model = build()
    check_state_dict(shapes(model.state_dict()), shapes(weights), what)
    model = model.to(dtype=dtype).to_empty(device=device)  # the cast is free on meta; one allocation, in dtype
    with torch.no_grad():
        for key, target in model.state_dict().items():  # views of the parameters and persistent buffers
            source = weights[key]
            target.copy_(source)  # cast and move one tensor at a time (synchronous from pageable host memory)
            if release_source:
                release_pages(source)
            del source
    return model.eval()


_MADV_DONTNEED = 4  # Linux


def release_pages(t: Tensor) -> None:
    """Drop the resident pages that lie wholly inside ``t`` (Linux ``madvise(MADV_DONTNEED)``; elsewhere a no-op).

    Only for views of a private, read-only file mapping (``torch.load(mmap=True)``): such pages are re-read from
    the file if touched again, so nothing is lost; on anonymous memory this would zero the tensor.
    """
    if not sys.platform.startswith("linux") or t.device.type != "cpu" or t.numel() == 0:
        return
    page = os.sysconf("SC_PAGE_SIZE")
    start, end = t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()
    first, last = -(-start // page) * page, end // page * page
    if last > first:
        _libc().madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
        _LIBC.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return _LIBC


_LIBC: Any = None
