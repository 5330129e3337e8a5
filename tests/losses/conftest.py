"""Fixtures of the loss tests: the ``tokenizer_train_step`` state dict (official training layout, every tensor
rebuilt from its record), and a VGG16 file holding its LPIPS trunk under torchvision's names."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import Tensor

from official import fixture_json, sha256, tensor_from_record

TRAIN_STEP = "tokenizer_train_step"
LPIPS_PREFIX = "loss.perceptual_loss."


def _default_value(key: str, shape: list[int]) -> Tensor:
    """Records stored without a formula or a value (``"value": None``) are the modules' own initial buffers."""
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


def _tensor(rec: dict) -> Tensor:
    if "value" not in rec:
        return tensor_from_record(rec)
    if rec["value"] is None:
        t = _default_value(rec["key"], rec["shape"])
    elif rec["dtype"] == "int64":
        t = torch.tensor(rec["value"], dtype=torch.int64).reshape(rec["shape"])
    else:
        t = tensor_from_record(rec)
    assert sha256(t) == rec["sha256"], f"fixture record {rec['key']} rebuilt wrongly"
    return t


@pytest.fixture(scope="session")
def train_step_sd() -> OrderedDict[str, Tensor]:
    """All 192 tensors of the fixture's training-layout state dict (encoder, decoder, loss.*, model_ema.*)."""
    return OrderedDict((r["key"], _tensor(r)) for r in fixture_json(TRAIN_STEP)["checkpoint"]["keys"])


@pytest.fixture(scope="session")
def lpips_sd(train_step_sd) -> dict[str, Tensor]:
    """The fixture's ``loss.perceptual_loss.*`` tensors, prefix stripped."""
    return {k[len(LPIPS_PREFIX) :]: v for k, v in train_step_sd.items() if k.startswith(LPIPS_PREFIX)}


@pytest.fixture(scope="session")
def vgg_file(tmp_path_factory, lpips_sd) -> Path:
    """``vgg16-397923af.pth`` with torchvision's ``features.{i}.*`` names, holding the fixture's VGG trunk (the
    classifier, which LPIPS never reads, is left out)."""
    path = tmp_path_factory.mktemp("hub") / "checkpoints" / "vgg16-397923af.pth"
    path.parent.mkdir()
    features = {f"features.{k.split('.', 2)[2]}": v for k, v in lpips_sd.items() if k.startswith("net.")}
    torch.save(features, path)
    return path
