"""Schedules against the official formulas (docs/design.md O-21, O-37), parameter groups, grad norm, EMA."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from open_magvit2.train.config import OptimConfig, ScheduleConfig
from open_magvit2.train.ema import make_ema, update_ema
from open_magvit2.train.optim import adamw, decay_groups, grad_norm, lr_factor


def test_constant_and_drops():
    assert lr_factor(ScheduleConfig(), 123, 1000) == 1.0
    s = ScheduleConfig(kind="drops", drop_epochs=(2, 3))  # 128_L style: after epochs 2 and 3 (10 steps/epoch)
    got = [lr_factor(s, k, 100, steps_per_epoch=10) for k in (0, 19, 20, 29, 30, 99)]
    assert got == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    s = ScheduleConfig(kind="drops", drop_steps=(5,))  # pretrain style: iterations
    assert [lr_factor(s, k, 10) for k in (4, 5)] == pytest.approx([1, 0.1])
    with pytest.raises(ValueError, match="in steps"):
        lr_factor(ScheduleConfig(kind="drops", drop_epochs=(1,)), 0, 10, steps_per_epoch=None)


def official_cosine(it: int, wp_it: int, max_it: int, wp0: float, wpe: float) -> float:
    """The official per-iteration annealing (docs/design.md O-21), written out."""
    if it < wp_it:
        return wp0 + (1 - wp0) * it / wp_it
    pasd = (it - wp_it) / (max_it - 1 - wp_it)
    return wpe + (1 - wpe) * (0.5 + 0.5 * math.cos(math.pi * pasd))


def official_ar(it: int, wp_it: int, max_it: int, wp0: float = 0.005, wpe: float = 0.1) -> float:
    """The official AR lr_wd_annealing factor (docs/design.md O-37), written out."""
    if it < wp_it:
        return wp0 + (1 - wp0) * it / wp_it
    pasd = (it - wp_it) / (max_it - 1 - wp_it)
    return 1.0 if pasd < 0.05 else wpe + (1 - wpe) * (1 - pasd) / 0.95


def test_cosine_matches_official():
    s = ScheduleConfig(kind="cosine", warmup_steps=50, warmup_start=0.0, final=0.01)
    for it in (0, 1, 25, 49, 50, 51, 300, 999):
        assert lr_factor(s, it, 1000) == pytest.approx(official_cosine(it, 50, 1000, 0.0, 0.01), abs=1e-12)
    assert lr_factor(s, 999, 1000) == pytest.approx(0.01)
    s = ScheduleConfig(kind="cosine", warmup_epochs=2, final=0.01)  # video: warm-up in epochs
    assert lr_factor(s, 10, 100, steps_per_epoch=10) == pytest.approx(official_cosine(10, 20, 100, 0.0, 0.01))


def test_warmup_linear_matches_official_ar():
    s = ScheduleConfig(kind="warmup_linear", warmup_steps=60, warmup_start=0.005, final=0.1)
    for it in (0, 30, 59, 60, 100, 200, 500, 999):
        assert lr_factor(s, it, 1000) == pytest.approx(official_ar(it, 60, 1000), abs=1e-12)


def test_decay_groups_ndim_rule():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Embedding(3, 4))
    decay, rest = decay_groups(model, 0.05)
    assert {p.dim() for p in decay["params"]} == {2} and {p.dim() for p in rest["params"]} == {1}
    assert decay["weight_decay"] == 0.05 and rest["weight_decay"] == 0.0
    assert decay_groups(model, 0.05, decay_norms=True)[1]["weight_decay"] == 0.05  # the official behaviour
    opt = adamw(model, OptimConfig(lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]


def test_grad_norm_and_clip():
    p = nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    assert float(grad_norm([p], None)) == pytest.approx(5.0)
    assert p.grad.tolist() == [3.0, 4.0, 0.0]  # no clipping without max_norm: bit-identical
    assert float(grad_norm([p], 1.0)) == pytest.approx(5.0)
    assert float(p.grad.norm()) == pytest.approx(1.0, rel=1e-5)


def test_ema_official_update():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ema = make_ema(model)
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    assert not any(p.requires_grad for p in ema.parameters())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    update_ema(ema, model, 0.999)
    for k, p in model.state_dict().items():  # shadow − (1 − d)(shadow − param), docs/design.md O-23
        expected = start[k] - (1 - 0.999) * (start[k] - p)
        torch.testing.assert_close(ema.state_dict()[k], expected, rtol=0, atol=0)
