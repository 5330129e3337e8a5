"""Access to the golden fixtures produced by the official Open-MAGVIT2 code.

The fixtures (``tests/fixtures/official``, copied from ``shared/fixtures/official``) store inputs and outputs in
``io.safetensors`` and define every checkpoint by a small integer-hash formula (see the fixtures' README). This
module rebuilds those checkpoints bit-for-bit, so the suite never needs the official code or a stored ``.ckpt``
other than the one reference file.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from functools import cache
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).parent / "fixtures" / "official"
M32 = (1 << 32) - 1


def hash_uniform(seed: int, n: int) -> np.ndarray:
    """n float64 values in [-1, 1), multiples of 2^-23 (the fixtures' weight formula)."""
    x = (np.arange(n, dtype=np.uint64) + np.uint64((seed * 0x9E3779B9) & M32)) & np.uint64(M32)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & np.uint64(M32)
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & np.uint64(M32)
    x ^= x >> np.uint64(16)
    return ((x >> np.uint64(8)).astype(np.float64) - 2.0**23) / 2.0**23


def _default_value(key: str, shape: list[int]) -> torch.Tensor:
    """Records stored with ``"value": None`` are the modules' own initial buffers (tokenizer_train_step: LPIPS's
    scaling layer, BatchNorm running statistics)."""
    from lpips.lpips import ScalingLayer

    if key.endswith("scaling_layer.shift"):
        return ScalingLayer().shift.clone()
    if key.endswith("scaling_layer.scale"):
        return ScalingLayer().scale.clone()
    if key.endswith("running_mean"):
        return torch.zeros(shape)
    if key.endswith("running_var"):
        return torch.ones(shape)
    raise KeyError(f"no default for fixture record {key}")


def sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def tensor_from_record(rec: dict) -> torch.Tensor:
    """Rebuild one state-dict tensor from its fixture record (formula weights, a stored value, or a module's own
    initial buffer), checked against the record's sha256 when it is not a formula tensor."""
    if "value" in rec:
        if rec["value"] is None:
            t = _default_value(rec["key"], rec["shape"])
        else:
            dtype = {"float32": torch.float32, "int32": torch.int32, "int64": torch.int64}[rec["dtype"]]
            t = torch.tensor(rec["value"], dtype=dtype).reshape(rec["shape"])
        assert sha256(t) == rec["sha256"], f"fixture record {rec['key']} rebuilt wrongly"
        return t
    v = rec["offset"] + 2.0 ** rec["scale_exp"] * hash_uniform(rec["seed"], int(np.prod(rec["shape"])))
    return torch.from_numpy(v.astype(np.float32).reshape(rec["shape"]))


@cache
def fixture_json(name: str) -> dict:
    return json.loads((FIXTURES / name / "fixture.json").read_text())


def io_tensors(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / name / "io.safetensors"))


def official_state_dict(name: str, section: str = "checkpoint") -> OrderedDict[str, torch.Tensor]:
    """The official state dict of fixture ``name`` in official key order, rebuilt from its records.

    ``section`` selects the record list: ``"checkpoint"`` for most fixtures, ``"image_checkpoint"`` for the
    input of ``video_inflation_tiny``.
    """
    records = fixture_json(name)[section]["keys"]
    return OrderedDict((r["key"], tensor_from_record(r)) for r in records)


def write_official_ckpt(name: str, path: Path, section: str = "checkpoint") -> Path:
    """Write fixture ``name`` as a released-format checkpoint: ``{"state_dict": OrderedDict}``."""
    torch.save({"state_dict": official_state_dict(name, section)}, path)
    return path


LPIPS_PREFIX = "loss.perceptual_loss."


def lpips_state_dict(train_step_sd: dict) -> dict[str, torch.Tensor]:
    """The ``loss.perceptual_loss.*`` tensors of the tokenizer_train_step fixture, prefix stripped."""
    return {k[len(LPIPS_PREFIX) :]: v for k, v in train_step_sd.items() if k.startswith(LPIPS_PREFIX)}


def write_vgg_file(directory: Path, train_step_sd: dict) -> Path:
    """``directory/vgg16-397923af.pth`` with torchvision's ``features.{i}.*`` names, holding the fixture's LPIPS
    VGG trunk (the classifier, which LPIPS never reads, is left out)."""
    path = Path(directory) / "vgg16-397923af.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = lpips_state_dict(train_step_sd)
    torch.save({f"features.{k.split('.', 2)[2]}": v for k, v in sd.items() if k.startswith("net.")}, path)
    return path
