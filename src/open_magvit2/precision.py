"""The precision policy, in one place: TF32 switches, dtype names, and what stays float32 (docs/design.md O-15).

**TF32.** The official code sets ``torch.set_float32_matmul_precision("high")`` at import time in every module it
ships, so on Ampere or newer GPUs its reconstructions, evaluations and samples run TF32 matmuls, and cuDNN runs TF32
convolutions by default. Token indices are signs of encoder outputs, so TF32 flips the bits of elements near 0
(docs/design.md O-15). :func:`set_tf32` is the only function in this package that touches these switches:

* inference entry points (the CLI) call ``set_tf32(False)``: float32 means float32, and indices match an exact
  float32 reference bit for bit (the golden fixtures were made with precision "highest");
* trainers call ``set_tf32(True)`` for speed (what the official training did), or ``False`` for exact runs.

The library functions themselves never change these global settings.

**bf16 / fp16.** ``from_pretrained(..., dtype=torch.bfloat16)`` casts every weight. These parts stay float32
whatever the weights' dtype, because their results are statistics or decisions that half precision would round:

* tokenizer: the adaptive GroupNorm's statistics of the code map and its ``gamma``/``beta`` projections
  (``tokenizer/layers.py``); GroupNorm statistics (torch's kernels accumulate in float32 on CPU and CUDA);
* LFQ: the entropy terms and commitment (``quantize/entropy.py``, ``quantize/lfq.py``); the sign decisions
  themselves are taken on z as the encoder produced it (rounding to bf16 never changes a sign, so every flip
  relative to float32 comes from the half-precision convolutions before it: ``BENCHMARKS.md`` measures the rate);
* generator: RMSNorm statistics, the RoPE table and rotation, attention softmax (inside SDPA), and the sampling
  logits (guidance, temperature, filtering and the multinomial draw run on float32 logits,
  ``generator/sampling.py``).

**Channels-last.** The tokenizer's inference path (no autograd) runs its 2-D convolutions channels-last on the
devices in :data:`CHANNELS_LAST` (measured faster on CPU, ``BENCHMARKS.md``); values are unchanged within float
rounding.
"""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}

# Device types on which the tokenizer's no-grad path runs 2-D convolutions channels-last (``tokenizer/layers.py``).
# CPU: measured (benchmarks/bench_tokenizer.py). CUDA: not measured in this project yet (benchmarks/gpu_check.sh
# times both layouts); off until a measurement says otherwise.
CHANNELS_LAST: dict[str, bool] = {"cpu": True}


def set_tf32(enabled: bool) -> None:
    """Allow (True) or forbid (False) TF32 in float32 matmuls and cuDNN convolutions (docs/design.md O-15).

    ``True`` is what the official code runs with on Ampere+ GPUs; ``False`` gives exact float32 (the golden
    fixtures' setting). Uses torch's legacy switches only, so it never mixes with the per-backend API.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"set_tf32 takes True or False, got {enabled!r}")
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled


def tf32_enabled() -> bool:
    """Whether float32 matmuls may use TF32 (as set by :func:`set_tf32` or torch's own switches)."""
    return torch.get_float32_matmul_precision() != "highest"


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"fp32"``/``"bf16"``/``"fp16"`` (or the long names, or a floating ``torch.dtype``) → ``torch.dtype``;
    None stays None (keep the checkpoint's dtype)."""
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in DTYPES.values()):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be one of fp32, bf16, fp16 (or a float torch.dtype), got {dtype!r}")


def channels_last(device: torch.device) -> bool:
    """Whether the tokenizer's no-grad path runs channels-last on ``device`` (see :data:`CHANNELS_LAST`)."""
    return CHANNELS_LAST.get(device.type, False)
