"""LPIPS for training: frozen, always eval, never in a state dict, per frame for clips, a helpful missing-file
error, and the official key layout."""

from __future__ import annotations

import json

import pytest
import torch

from open_magvit2.losses import PerceptualLoss

from official import FIXTURES


@pytest.fixture(scope="module")
def perceptual(vgg_file, lpips_sd) -> PerceptualLoss:
    p = PerceptualLoss(path=vgg_file)
    p.load_official_weights(lpips_sd)
    return p


def test_frozen_eval_and_stateless(perceptual):
    assert list(perceptual.parameters()) == []  # nothing for an optimiser, DDP or autograd to track
    assert perceptual.state_dict() == {}
    assert all(not b.requires_grad for b in perceptual.buffers())
    perceptual.train()
    assert not perceptual.training and not any(m.training for m in perceptual.modules())


def test_dropout_off_gives_deterministic_values(perceptual):
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    a, b = perceptual(x, y), perceptual(x, y)
    assert a.shape == (2,) and torch.equal(a, b) and (a > 0).all()
    assert perceptual(x, x).abs().max() < 1e-6


def test_gradients_reach_the_input_only(perceptual):
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    y = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_()
    perceptual(x, y).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_clips_are_scored_per_frame(perceptual):
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 3, 32, 32) * 2 - 1
    per_frame = torch.stack([perceptual(x[:, :, t], y[:, :, t]) for t in range(3)], 1).flatten()  # (b, t) order
    torch.testing.assert_close(perceptual(x, y), per_frame)
    with pytest.raises(ValueError, match="same shape"):
        perceptual(x, y[:, :, :2])


def test_official_key_layout(perceptual):
    data = json.loads((FIXTURES / "manifests" / "imagenet_lfqgan_128_L.json").read_text())
    prefix = "loss.perceptual_loss."
    official = {k[len(prefix) :]: tuple(s) for k, s, _ in data["keys_only_in_training_checkpoints"]["keys"]
                if k.startswith(prefix)}  # fmt: skip
    ours = dict(perceptual.lpips.named_buffers())
    assert perceptual.official_keys() == list(official)
    assert {k: tuple(v.shape) for k, v in ours.items()} == official
    with pytest.raises(ValueError, match="lin4"):
        perceptual.load_official_weights({k: v for k, v in ours.items() if not k.startswith("lin4")})


def test_missing_vgg_file_error_names_file_url_and_place(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    with pytest.raises(FileNotFoundError) as e:
        PerceptualLoss()
    msg = str(e.value)
    for part in ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
                 str(tmp_path / "empty_hub" / "checkpoints"), "lpips_path", "perceptual_weight"):  # fmt: skip
        assert part in msg
    with pytest.raises(FileNotFoundError, match="lpips_path"):
        PerceptualLoss(path=tmp_path / "nowhere.pth")


def test_found_in_the_hub_cache(vgg_file, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(vgg_file.parent.parent))
    assert PerceptualLoss().weights_path == vgg_file
