"""The AR objective: CE(pre) + CE(post), pinned to the official shared_step's numbers on the ar_tiny fixture."""

from __future__ import annotations

import math

import pytest
import torch

from open_magvit2.generator import GENERATOR_PRESETS, GeneratorTransformer, generator_loss

from official import io_tensors, official_state_dict


def test_matches_the_official_losses():
    io = io_tensors("ar_tiny")
    model = GeneratorTransformer(config=GENERATOR_PRESETS["tiny"])
    sd = official_state_dict("ar_tiny")
    model.load_state_dict({k.removeprefix("transformer."): v for k, v in sd.items() if k.startswith("transformer.")})
    with torch.no_grad():
        out = generator_loss(*model.eval()(io["tf/pre"], io["tf/post"], io["tf/labels"]), io["tf/pre"], io["tf/post"])
    torch.testing.assert_close(out.pre, io["tf/loss_pre"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.post, io["tf/loss_post"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.loss, out.pre + out.post, atol=0, rtol=0)


def test_closed_forms_and_gradient():
    pre, post = torch.randint(0, 64, (2, 5)), torch.randint(0, 4096, (2, 5))
    uniform = generator_loss(torch.zeros(2, 5, 64), torch.zeros(2, 5, 4096), pre, post)
    assert uniform.pre.item() == pytest.approx(math.log(64)) and uniform.post.item() == pytest.approx(math.log(4096))
    lp = torch.zeros(2, 5, 64, dtype=torch.bfloat16, requires_grad=True)  # bf16 logits: the loss is float32
    out = generator_loss(lp, torch.zeros(2, 5, 4096), pre, post)
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    expected = (torch.full((2, 5, 64), 1 / 64) - torch.nn.functional.one_hot(pre, 64)) / 10  # (softmax − onehot)/BN
    torch.testing.assert_close(lp.grad.float(), expected, atol=5e-4, rtol=0)  # bf16 ulp at 0.1: 4.9e-4


def test_shape_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match="do not match sub-tokens"):
        generator_loss(torch.zeros(2, 5, 64), torch.zeros(2, 5, 4096), torch.zeros(2, 4, dtype=torch.long),
                       torch.zeros(2, 5, dtype=torch.long))


def test_position_weights_are_a_weighted_mean_per_sample():
    torch.manual_seed(0)
    lp, lq = torch.randn(3, 6, 8), torch.randn(3, 6, 16)
    pre, post = torch.randint(0, 8, (3, 6)), torch.randint(0, 16, (3, 6))
    w = torch.tensor([4.0, 4.0, 1.0, 1.0, 1.0, 1.0])  # a first "frame" of 2 positions weighing 4
    out = generator_loss(lp, lq, pre, post, weight=w)
    for logits, target, part in ((lp, pre, out.pre), (lq, post, out.post)):
        ce = -logits.log_softmax(-1).gather(-1, target[..., None])[..., 0]  # (B, N) brute force
        assert part.item() == pytest.approx(((ce * w).sum(1) / w.sum()).mean().item(), rel=1e-6)
    plain = generator_loss(lp, lq, pre, post)
    same = generator_loss(lp, lq, pre, post, weight=torch.full((6,), 2.5))  # equal weights: the plain mean
    torch.testing.assert_close(same.loss, plain.loss, atol=1e-6, rtol=0)
    assert abs(out.loss.item() - plain.loss.item()) > 1e-3
    with pytest.raises(ValueError, match="weight must be"):
        generator_loss(lp, lq, pre, post, weight=torch.ones(5))
    with pytest.raises(ValueError, match="weight must be"):
        generator_loss(lp, lq, pre, post, weight=torch.zeros(6))
