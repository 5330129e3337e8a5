"""The three official discriminators: parameter counts, key names and shapes against the manifests of the
released models' training checkpoints, output shapes, SAME padding and blur, initialisation, strict loading."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from open_magvit2.losses import TokenizerLoss, TokenizerLossConfig, build_discriminator
from open_magvit2.losses.discriminator import BlurDownsample, Conv2dSame, same_padding

from official import FIXTURES

MANIFEST = {  # discriminator kind → a released model trained with it (docs/design.md O-20)
    "patchgan": "imagenet_lfqgan_128_L",
    "blur": "pretrain_lfqgan_256_16384",
    "patchgan3d": "ucf101_lfqgan_128_L",
}
PARAMS = {"patchgan": 2_765_633, "blur": 1_909_889, "patchgan3d": 4_665_729}


def training_only_keys(manifest: str) -> list[tuple[str, list[int], str]]:
    data = json.loads((FIXTURES / "manifests" / f"{manifest}.json").read_text())
    return [tuple(k) for k in data["keys_only_in_training_checkpoints"]["keys"]]


@pytest.mark.parametrize("kind", list(MANIFEST))
def test_parameter_count(kind):
    with torch.device("meta"):
        d = build_discriminator(kind)
    assert sum(p.numel() for p in d.parameters()) == PARAMS[kind]


@pytest.mark.parametrize("kind", list(MANIFEST))
def test_keys_and_shapes_equal_the_official_training_checkpoint(kind):
    keys = training_only_keys(MANIFEST[kind])
    assert len(keys) == (72 if kind == "blur" else 68)
    prefix = "loss.discriminator."
    official = {k[len(prefix) :]: (tuple(s), dt) for k, s, dt in keys if k.startswith(prefix)}
    with torch.device("meta"):
        d = build_discriminator(kind)
    ours = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in d.state_dict().items()}
    assert ours == official
    # the official EMA also tracks the discriminator: one flattened twin per parameter (not per buffer)
    ema = {k.removeprefix("model_ema.lossdiscriminator") for k, _, _ in keys if k.startswith("model_ema.")}
    assert ema == {name.replace(".", "") for name, _ in d.named_parameters()}


@pytest.mark.parametrize(
    ("kind", "shape", "out"),
    [
        ("patchgan", (2, 3, 256, 256), (2, 1, 30, 30)),
        ("patchgan", (2, 3, 128, 128), (2, 1, 14, 14)),
        ("blur", (2, 3, 256, 256), (2, 1, 32, 32)),
        ("patchgan3d", (2, 3, 17, 128, 128), (2, 1, 5, 16, 16)),
    ],
)
def test_output_shapes_of_the_official_sizes(kind, shape, out):
    with torch.device("meta"):  # shapes only: no compute
        assert build_discriminator(kind)(torch.empty(shape)).shape == out


@pytest.mark.parametrize(("kind", "shape"), [("patchgan", (2, 3, 32, 32)), ("blur", (2, 3, 32, 32)),
                                             ("patchgan3d", (1, 3, 5, 32, 32))])  # fmt: skip
def test_tiny_forward_and_backward(kind, shape):
    torch.manual_seed(0)
    d = build_discriminator(kind)
    x = torch.randn(shape, requires_grad=True)
    out = d(x)
    assert out.shape[:2] == (shape[0], 1) and torch.isfinite(out).all()
    out.mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in d.parameters())


def test_official_init():
    torch.manual_seed(0)
    d = build_discriminator("patchgan3d")
    conv_w = torch.cat([m.weight.flatten() for m in d.modules() if isinstance(m, nn.Conv3d)])
    assert conv_w.mean().abs() < 1e-3 and abs(conv_w.std().item() - 0.02) < 1e-3
    for m in d.modules():
        if isinstance(m, nn.BatchNorm3d):
            assert abs(m.weight.mean().item() - 1) < 0.01 and abs(m.weight.std().item() - 0.02) < 0.01
            assert (m.bias == 0).all()


def test_same_padding_rule():
    assert [same_padding(i, 3, 1) for i in (5, 6)] == [2, 2]
    assert [same_padding(i, 4, 2) for i in (32, 33)] == [2, 3]  # stride 2: ceil(i/2) outputs
    assert same_padding(4, 1, 1) == 0
    torch.manual_seed(0)
    same = Conv2dSame(3, 4, 5)
    plain = nn.Conv2d(3, 4, 5, padding=2)
    plain.load_state_dict(same.state_dict())
    x = torch.randn(1, 3, 7, 9)
    torch.testing.assert_close(same(x), plain(x))


def test_blur_downsample():
    blur = BlurDownsample((1, 3, 3, 1))
    expected = torch.tensor([1.0, 3, 3, 1])
    torch.testing.assert_close(blur.kernel, (expected[:, None] * expected[None, :] / 64)[None, None])
    assert "kernel" in blur.state_dict()
    out = blur(torch.ones(2, 5, 33, 32))
    assert out.shape == (2, 5, 17, 16)
    torch.testing.assert_close(out[..., 2:-2, 2:-2], torch.ones_like(out[..., 2:-2, 2:-2]))  # sums to 1 inside
    x = torch.zeros(1, 2, 8, 8)
    x[0, 1, 4, 4] = 64.0  # an impulse stays in its channel (depthwise); stride 2 keeps a quarter of its mass
    out = blur(x)
    assert out[0, 0].abs().max() == 0 and out[0, 1].sum().item() == pytest.approx(16.0)


def test_load_official_discriminator_strictly():
    keys = training_only_keys(MANIFEST["patchgan"])
    gen = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(s, generator=gen) if dt == "float32" else torch.zeros(s, dtype=torch.int64))
          for k, s, dt in keys}  # fmt: skip
    sd["encoder.conv_in.weight"] = torch.zeros(1)  # everything outside loss.discriminator.* is ignored
    loss = TokenizerLoss(TokenizerLossConfig(perceptual_weight=0.0))
    loss.load_official_discriminator(sd)
    torch.testing.assert_close(loss.discriminator.main[0].weight, sd["loss.discriminator.main.0.weight"])
    torch.testing.assert_close(loss.discriminator.main[9].running_var, sd["loss.discriminator.main.9.running_var"])
    del sd["loss.discriminator.main.9.running_var"]
    with pytest.raises(ValueError, match=r"main\.9\.running_var"):
        loss.load_official_discriminator(sd)
    with pytest.raises(ValueError, match=r"no loss\.discriminator"):
        loss.load_official_discriminator({"encoder.conv_in.weight": torch.zeros(1)})
