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
