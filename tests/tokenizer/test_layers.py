"""Closed-form checks of the quirky layers (docs/design.md O-05, O-25, O-26)."""

import torch
import torch.nn.functional as F

from open_magvit2.tokenizer.layers import AdaptiveGroupNorm, CausalConv3d, Upsampler, depth_to_space


def test_depth_to_space_is_dcr_not_pixel_shuffle():
    c = 3
    x = torch.randn(2, 4 * c, 5, 7)
    out = depth_to_space(x, (2, 2))
    for i in range(2):
        for j in range(2):
            for k in range(c):
                assert torch.equal(out[:, k, i::2, j::2], x[:, (2 * i + j) * c + k])
    perm = torch.tensor([(2 * i + j) * c + k for k in range(c) for i in range(2) for j in range(2)])
    assert torch.equal(out, F.pixel_shuffle(x[:, perm], 2))
    assert not torch.equal(out, F.pixel_shuffle(x, 2))


def test_depth_to_space_3d_order():
    c = 2
    x = torch.randn(1, 8 * c, 3, 2, 2)
    out = depth_to_space(x, (2, 2, 2))
    for a in range(2):
        for i in range(2):
            for j in range(2):
                for k in range(c):
                    assert torch.equal(out[:, k, a::2, i::2, j::2], x[:, ((a * 2 + i) * 2 + j) * c + k])


def test_temporal_upsampler_emits_2t_minus_1_frames():
    up = Upsampler(3, 4, (2, 2, 2))
    for t, expected in [(1, 1), (2, 3), (3, 5), (5, 9)]:
        assert up(torch.randn(1, 4, t, 2, 2)).shape == (1, 4, expected, 4, 4)
    x = torch.randn(1, 4, 3, 2, 2)
    full = depth_to_space(up.conv1(x), (2, 2, 2))
    assert torch.equal(up(x), torch.cat([full[:, :, :1], full[:, :, 2:]], 2))  # frame 1 (duplicate of 0) dropped


def test_agn_uses_unbiased_variance():
    agn = AdaptiveGroupNorm(5, 32)
    x, q = torch.randn(2, 32, 4, 4), torch.randn(2, 5, 3, 3)
    flat = q.flatten(2)
    n = flat.shape[-1]
    var_unbiased = ((flat - flat.mean(-1, keepdim=True)) ** 2).sum(-1) / (n - 1)
    expect = F.group_norm(x, 32, eps=1e-6) * agn.gamma(torch.sqrt(var_unbiased + 1e-6))[..., None, None]
    expect = expect + agn.beta(flat.mean(-1))[..., None, None]
    torch.testing.assert_close(agn(x, q), expect)
    assert torch.isnan(agn(x, torch.randn(2, 5, 1, 1))).all()  # 1×1 latent: NaN, as the official model


def test_causal_conv_only_sees_the_past():
    conv = CausalConv3d(2, 3, 3, bias=True)
    x = torch.randn(1, 2, 5, 6, 6)
    y = conv(x)
    assert y.shape == (1, 3, 5, 6, 6)
    x2 = x.clone()
    x2[:, :, 3:] += 1.0
    y2 = conv(x2)
    assert torch.equal(y[:, :, :3], y2[:, :, :3]) and not torch.equal(y[:, :, 3:], y2[:, :, 3:])


def test_one_frame_equals_the_zero_padded_conv3d_values_and_gradients():
    """A one-frame clip takes the 2-D path (only the last temporal tap meets data); it must give the zero-padded
    Conv3d's values and gradients, for 3×3×3 and 1×1×1 kernels, with and without a temporal stride."""
    torch.manual_seed(0)
    for kernel, stride, bias in ((3, 1, True), (3, (2, 2, 2), False), (1, 1, False), (3, (2, 1, 1), True)):
        conv = CausalConv3d(4, 5, kernel, stride=stride, bias=bias).double()
        x = torch.randn(2, 4, 1, 8, 6, dtype=torch.float64, requires_grad=True)
        y = conv(x)
        ref = conv.conv_1(F.pad(x, conv.pad))  # the general path, written out
        assert y.shape == ref.shape and torch.allclose(y, ref, rtol=0, atol=1e-12), (kernel, stride)
        g = torch.randn_like(ref)
        gx, gw = torch.autograd.grad(y, (x, conv.conv_1.weight), g)
        rx, rw = torch.autograd.grad(ref, (x, conv.conv_1.weight), g)
        assert torch.allclose(gx, rx, atol=1e-12) and torch.allclose(gw, rw, atol=1e-12)
        if conv.conv_1.kernel_size[0] > 1:
            assert gw[:, :, :-1].abs().max() == 0 and gw[:, :, -1].abs().max() > 0  # the taps over the padding
