"""ONNX export of the tokenizers (the ``onnx`` extra): the encoder with LFQ, and the decoder from indices.

Two graphs per tokenizer, each with a dynamic batch and fixed pixel (and frame) sizes, chosen at export:

* ``encoder``: input ``images`` float32 (B, 3, H, W) in [−1, 1] (video: (B, 3, T, H, W)) → output ``indices`` int64
  (B, H/f, W/f) (video: (B, t, h, w)), LSB-first full LFQ indices, as :meth:`Tokenizer.encode`;
* ``decoder``: input ``indices`` int64 of that shape → output ``images`` float32 (B, 3, H, W) (video: (B, 3, T, H, W)),
  **not clamped**, as :meth:`Tokenizer.decode` (clamp to [−1, 1] before turning it into pixels).

The graphs make no input checks: values outside [−1, 1] or indices outside [0, 2^K) give meaningless outputs
instead of an error. The exporter is ``torch.onnx.export(dynamo=True)`` (``torch.export`` plus onnxscript), opset
18 by default, any opset from 18 to the newest the installed ``onnx`` package defines on request
(:func:`supported_opsets`). The bit test of the decoder input is ``I & 2^k`` (``quantize.codes.
unchecked_indices_to_codes``): ONNX has no right shift for signed integers, and ``BitwiseAnd`` is new in opset 18,
which is why no older opset can be written. The video tokenizer's causal 3D convolutions export as ``Pad`` +
``Conv``. A file is written only once ``onnx.checker`` accepts it at the requested opset.

Parity with PyTorch (``tests/test_export_onnx.py``): the decoder agrees within 1e-4; the encoder gives the same
indices except where a latent channel lies within ~1e-5 of zero, where the two runtimes' different summation
orders can put it on either side (:func:`index_parity` counts such cells).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from open_magvit2.fileio import atomic_write
from open_magvit2.quantize.codes import codes_to_indices, unchecked_indices_to_codes
from open_magvit2.tokenizer import Tokenizer
from open_magvit2.tokenizer.video import DEFAULT_WINDOW

if TYPE_CHECKING:
    import onnxruntime

PARTS = ("encoder", "decoder")
INPUT_NAME = {"encoder": "images", "decoder": "indices"}
OUTPUT_NAME = {"encoder": "indices", "decoder": "images"}
OPSET = 18  # the default, and the oldest opset with BitwiseAnd (the decoder's bit test)
INSTALL_HINT = "ONNX export needs the onnx extra: pip install open-magvit2[onnx] (onnx, onnxscript, onnxruntime)"


def _require(*modules: str) -> None:
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError:
            raise ImportError(f"{INSTALL_HINT}; {m} is missing") from None


class EncoderToIndices(nn.Module):
    """images (B, 3, [T,] H, W) float in [−1, 1] → int64 indices (B, *latent): encoder, then the LFQ sign bits."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        super().__init__()
        self.encoder = tokenizer.encoder

    def forward(self, images: Tensor) -> Tensor:
        return codes_to_indices(self.encoder(images))  # (B, K, *latent) → (B, *latent)


class DecoderFromIndices(nn.Module):
    """int64 indices (B, *latent) → images (B, 3, [T,] H, W), not clamped: ±1 codes, then the decoder."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        super().__init__()
        self.decoder = tokenizer.decoder
        self.bits = tokenizer.config.z_channels

    def forward(self, indices: Tensor) -> Tensor:
        return self.decoder(unchecked_indices_to_codes(indices, self.bits))  # (B, K, *latent) → pixels


def supported_opsets() -> range:
    """The opsets :func:`export_onnx` writes: from 18 (``BitwiseAnd``) to the newest the installed ``onnx`` defines
    (a newer number gives a file no runtime can load)."""
    _require("onnx")
    import onnx

    return range(OPSET, onnx.defs.onnx_opset_version() + 1)


def check_opset(opset: int) -> None:
    """``ValueError`` naming the supported range unless :func:`export_onnx` can write ``opset``."""
    ok = supported_opsets()
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in ok:
        raise ValueError(f"opset {opset!r} cannot be written: the exporter writes opsets {ok.start} to {ok.stop - 1} "
                         f"(18 is the first with the decoder's BitwiseAnd; {ok.stop - 1} is the newest the installed "
                         "onnx package knows)")


def input_shape(tokenizer: Tokenizer, part: str, size: int, frames: int | None = None, batch: int = 2
                ) -> tuple[int, ...]:
    """The shape of the ``part`` graph's input for ``size``×``size`` images (video: ``frames`` frames)."""
    c = tokenizer.config
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    if size < 1 or size % c.spatial_factor:
        raise ValueError(f"size must be a multiple of {c.spatial_factor} (the downsampling factor), got {size}")
    if c.dims == 3:
        frames = DEFAULT_WINDOW if frames is None else frames
        tokenizer._check_frames(frames)
    elif frames is not None:
        raise ValueError("frames is for video tokenizers; this is an image tokenizer")
    h = size // c.spatial_factor
    if part == "encoder":
        return (batch, c.in_channels, size, size) if c.dims == 2 else (batch, c.in_channels, frames, size, size)
    if c.dims == 2:
        return (batch, h, h)
    return (batch, tokenizer.latent_frames(frames), h, h)  # type: ignore[attr-defined]


def example_input(tokenizer: Tokenizer, part: str, size: int, frames: int | None = None, batch: int = 2,
                  seed: int = 0) -> Tensor:
    """A deterministic input of the ``part`` graph: smooth images in [−1, 1] (random values at 1/8 resolution,
    upsampled) for the encoder, uniform random indices in [0, 2^K) for the decoder."""
    shape = input_shape(tokenizer, part, size, frames, batch)
    g = torch.Generator().manual_seed(seed)
    if part == "decoder":
        return torch.randint(0, tokenizer.config.codebook_size, shape, generator=g)
    low = torch.rand(*shape[:-2], max(1, size // 8), max(1, size // 8), generator=g) * 2 - 1
    mode = "bilinear" if len(shape) == 4 else "trilinear"
    return nn.functional.interpolate(low, size=shape[2:], mode=mode, align_corners=False).clamp(-1, 1)


def export_onnx(tokenizer: Tokenizer, part: str, path: str | Path, *, size: int, frames: int | None = None,
                opset: int = OPSET) -> Path:
    """Write the ``part`` (``"encoder"`` or ``"decoder"``) graph of ``tokenizer`` for ``size``×``size`` images
    (video: ``frames`` frames, default 17, the released model's window) to ``path`` atomically, float32, with a
    dynamic batch dimension. The tokenizer is moved to the CPU in float32 (the graph's precision).

    The model's config, the part and the sizes are stored in the file's metadata (``open_magvit2.*`` keys).
    """
    _require("onnx", "onnxscript")
    check_opset(opset)

    example = example_input(tokenizer, part, size, frames)
    wrapper = (EncoderToIndices if part == "encoder" else DecoderFromIndices)(tokenizer)
    wrapper = wrapper.to(device="cpu", dtype=torch.float32).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        wrapper, (example,), None, dynamo=True, dynamic_shapes=({0: batch},), input_names=[INPUT_NAME[part]],
        output_names=[OUTPUT_NAME[part]], opset_version=opset, optimize=True, verbose=False,
    )
    meta = {"part": part, "size": str(size), "model_type": type(tokenizer).model_type,
            "config": json.dumps(tokenizer.config.to_dict())}
    if tokenizer.config.dims == 3:
        meta["frames"] = str(example.shape[2] if part == "encoder" else
                             tokenizer.output_frames(example.shape[1]))  # type: ignore[attr-defined]
    for k, v in meta.items():
        program.model.metadata_props[f"open_magvit2.{k}"] = v

    def save_checked(p: Path) -> None:  # inside the atomic write: a file that fails a check is never left behind
        program.save(str(p), external_data=False)
        _check_file(p, opset)

    return atomic_write(path, save_checked)


def _check_file(path: Path, opset: int) -> None:
    """The written graph is valid ONNX (``onnx.checker``, full check) at exactly ``opset`` (the converter may not
    silently write another)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    written = {o.domain or "ai.onnx": o.version for o in model.opset_import}.get("ai.onnx")
    if written != opset:
        raise ValueError(f"the exporter wrote opset {written}, not the requested {opset}; pass --opset {written} or "
                         f"{OPSET}")
    onnx.checker.check_model(str(path), full_check=True)


# ---- running the graphs with onnxruntime, and checking them against PyTorch ------------------------------------


def onnx_session(path: str | Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session for an exported graph; ``threads`` caps its intra-op threads (None: ORT's
    default, one per core)."""
    _require("onnxruntime")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types (InvalidGraph, Fail, ...) derive from Exception only
        if not type(e).__module__.startswith("onnxruntime"):
            raise
        reason = " ".join(str(e).split())
        raise ValueError(f"{path}: onnxruntime {ort.__version__} cannot load the graph ({reason}); an older runtime "
                         f"may not know its opset: export with --opset {OPSET}") from None


def run_onnx(session: onnxruntime.InferenceSession, x: Tensor | np.ndarray) -> np.ndarray:
    """Run a one-input, one-output graph: float32 images or int64 indices in, the numpy output out."""
    arr = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    name = session.get_inputs()[0].name
    arr = arr.astype(np.int64 if name == INPUT_NAME["decoder"] else np.float32, copy=False)
    return session.run(None, {name: arr})[0]


class IndexParity(NamedTuple):
    """Encoder indices of two runtimes compared cell by cell (a cell = one latent position of one image)."""

    cells: int  # latent positions compared
    mismatched: int  # positions whose indices differ
    near_zero: int  # positions with some latent channel |z| < tol (a sign there is a tie between runtimes)
    unexplained: int  # mismatched positions with no channel near zero: these are real disagreements

    def summary(self, tol: float = 1e-4) -> str:
        return (f"{self.cells - self.mismatched}/{self.cells} token positions identical; {self.mismatched} differ, "
                f"{self.unexplained} of them with no latent channel within {tol:g} of zero "
                f"({self.near_zero} positions have one)")


def index_parity(indices: np.ndarray | Tensor, reference: np.ndarray | Tensor, latent: np.ndarray | Tensor,
                 tol: float = 1e-4) -> IndexParity:
    """Compare ``indices`` (B, *latent) with ``reference`` (same shape); ``latent`` is the reference's continuous
    encoder output z (B, K, *latent), whose channels within ``tol`` of zero excuse a mismatch."""
    a, b, z = (np.asarray(v.detach().cpu() if isinstance(v, Tensor) else v) for v in (indices, reference, latent))
    if a.shape != b.shape or z.shape[:1] + z.shape[2:] != a.shape:
        raise ValueError(f"shapes disagree: indices {a.shape}, reference {b.shape}, latent {z.shape}")
    near = (np.abs(z) < tol).any(axis=1)  # (B, *latent)
    diff = a != b
    return IndexParity(int(a.size), int(diff.sum()), int(near.sum()), int((diff & ~near).sum()))


@torch.no_grad()
def check_against_torch(tokenizer: Tokenizer, part: str, path: str | Path, *, size: int,
                        frames: int | None = None, batch: int = 2, tol: float = 1e-4) -> dict[str, Any]:
    """Run the exported ``part`` graph and ``tokenizer`` (float32, CPU) on :func:`example_input` of ``batch``
    items; return the comparison (encoder: :class:`IndexParity` fields; decoder: ``max_abs_diff``) and ``text``."""
    x = example_input(tokenizer, part, size, frames, batch=batch, seed=1)
    out = run_onnx(onnx_session(path), x)
    model = tokenizer.to(device="cpu", dtype=torch.float32)
    if part == "encoder":
        z = model.encode_latent(x)
        p = index_parity(out, codes_to_indices(z), z, tol)
        return {**p._asdict(), "text": p.summary(tol)}
    diff = float(np.abs(out.astype(np.float64) - model.decode(x).double().numpy()).max())
    return {"max_abs_diff": diff, "text": f"decoded images agree within {diff:.2e} (max |Δ|)"}
