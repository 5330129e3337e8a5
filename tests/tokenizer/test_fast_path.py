"""The tokenizer's inference fast path (channels-last, in-place SiLU/adds without autograd) keeps the official
outputs, the autograd path stays differentiable and unchanged, and bf16 is checked for values."""

import pytest
import torch

from open_magvit2 import ImageTokenizer, precision
from open_magvit2.tokenizer.layers import AdaptiveGroupNorm

from official import FIXTURES, io_tensors, write_official_ckpt


@pytest.fixture(scope="module")
def fixture_ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("fast")
    return {
        "image_tokenizer_tiny": FIXTURES / "image_tokenizer_tiny" / "tokenizer.ckpt",
        "image_tokenizer_tiny_z14": write_official_ckpt("image_tokenizer_tiny_z14", d / "z14.ckpt"),
    }


@pytest.mark.parametrize("name", ["image_tokenizer_tiny", "image_tokenizer_tiny_z14"])
def test_fast_and_autograd_paths_both_match_the_official_outputs(name, fixture_ckpts):
    """No-grad (channels-last, in place) and autograd (plain ops) encode/decode both reproduce the fixture, and the
    fast path really ran channels-last."""
    assert precision.CHANNELS_LAST["cpu"]
    io = io_tensors(name)
    tok = ImageTokenizer.from_pretrained(fixture_ckpts[name])
    x, idx_ref, dec_ref = io["images"], io["ema/images/indices"], io["ema/images/decoded"]
    seen = []
    hook = tok.decoder.conv_in.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    with torch.inference_mode():
        idx_fast, dec_fast = tok.encode(x), tok.decode(idx_ref)
    with torch.enable_grad():
        idx_grad, dec_grad = tok.encode(x), tok.decode(idx_ref)
    hook.remove()
    assert seen == [True, False]  # inference: channels-last; autograd: the input's own layout
    assert torch.equal(idx_fast, idx_ref) and torch.equal(idx_grad, idx_ref)
    torch.testing.assert_close(dec_fast, dec_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(dec_grad.detach(), dec_ref, atol=1e-5, rtol=0)
    assert dec_fast.is_contiguous() and dec_grad.requires_grad


def test_training_forward_is_differentiable_and_leaves_inputs_alone(fixture_ckpts):
    tok = ImageTokenizer.from_pretrained(fixture_ckpts["image_tokenizer_tiny"]).train()
    x = io_tensors("image_tokenizer_tiny")["images"].clone().requires_grad_(True)
    x_before = x.detach().clone()
    out = tok(x)
    loss = (out.reconstruction - x.detach()).square().mean() + out.quantizer.entropy_loss
    loss.backward()
    grads = [p.grad for p in tok.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and x.grad.abs().sum() > 0
    assert torch.equal(x.detach(), x_before)
    with torch.inference_mode():
        codes = tok.quantize(tok.encode_latent(x_before)).codes.clone()
        codes_before = codes.clone()
        fast = tok.decode_codes(codes)
    assert torch.equal(codes, codes_before)  # the in-place ops only touch fresh intermediate tensors
    torch.testing.assert_close(out.reconstruction.detach(), fast, atol=1e-5, rtol=0)


def test_bf16_decode_within_stated_tolerance_and_flip_rate(fixture_ckpts):
    """bf16 weights (loaded straight to bf16): the decoded fixture indices stay within 0.04 max / 0.008 mean of the
    official float32 output (its range is about ±1.5), and encoding flips under 1 % of the index bits (0.36 % here;
    ``benchmarks/bench_bf16.py`` reports the rate on full-size models)."""
    io = io_tensors("image_tokenizer_tiny")
    tok = ImageTokenizer.from_pretrained(fixture_ckpts["image_tokenizer_tiny"], dtype="bf16")
    assert {p.dtype for p in tok.parameters()} == {torch.bfloat16}
    with torch.inference_mode():
        decoded = tok.decode(io["ema/images/indices"])
        idx = tok.encode(io["images"])
    assert decoded.dtype == torch.bfloat16
    err = (decoded.float() - io["ema/images/decoded"]).abs()
    assert err.max() < 0.04 and err.mean() < 0.008
    bits = torch.arange(18)[:, None, None]
    flips = ((idx[:, None] >> bits) & 1) != ((io["ema/images/indices"][:, None] >> bits) & 1)
    assert flips.float().mean() < 0.01


def test_agn_statistics_are_float32_under_bf16():
    """bf16 weights: the AGN takes the code map's mean (k/N: not a bf16 number) and its beta projection in float32.
    With x = 0 the output is that modulation alone: it equals the float32 layer's up to one bf16 rounding, which
    statistics and projection in bf16 do not."""
    torch.manual_seed(0)
    agn = AdaptiveGroupNorm(6, 32).eval().bfloat16().float()  # weights that bf16 holds exactly
    x = torch.zeros(2, 32, 4, 4)
    q = torch.where(torch.rand(2, 6, 7, 7) < 0.37, 1.0, -1.0)  # 49 positions
    with torch.no_grad():
        ref = agn(x, q)  # = beta(mean of q), broadcast
        agn16 = agn.to(torch.bfloat16)
        ours = agn16(x.bfloat16(), q.bfloat16()).float()
        naive = agn16.beta(q.bfloat16().flatten(2).mean(-1)).float()[..., None, None].expand_as(ref)
    one_rounding = ref.abs() * 2.0**-8
    assert ((ours - ref).abs() <= one_rounding).all()
    assert ((naive - ref).abs() > one_rounding).any()
