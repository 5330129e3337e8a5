"""Fixtures of the loss tests: the ``tokenizer_train_step`` state dict (official training layout, every tensor
rebuilt from its record), and a VGG16 file holding its LPIPS trunk under torchvision's names."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
from torch import Tensor

from official import fixture_json, lpips_state_dict, tensor_from_record, write_vgg_file

TRAIN_STEP = "tokenizer_train_step"


@pytest.fixture(scope="session")
def train_step_sd() -> OrderedDict[str, Tensor]:
    """All 192 tensors of the fixture's training-layout state dict (encoder, decoder, loss.*, model_ema.*)."""
    return OrderedDict((r["key"], tensor_from_record(r)) for r in fixture_json(TRAIN_STEP)["checkpoint"]["keys"])


@pytest.fixture(scope="session")
def lpips_sd(train_step_sd) -> dict[str, Tensor]:
    """The fixture's ``loss.perceptual_loss.*`` tensors, prefix stripped."""
    return lpips_state_dict(train_step_sd)


@pytest.fixture(scope="session")
def vgg_file(tmp_path_factory, train_step_sd) -> Path:
    """``vgg16-397923af.pth`` with torchvision's names, holding the fixture's LPIPS VGG trunk."""
    return write_vgg_file(tmp_path_factory.mktemp("hub") / "checkpoints", train_step_sd)
