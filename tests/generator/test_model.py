"""The AR transformer: official sizes and keys, the 2D RoPE table, teacher-forcing parity, dtypes, training mode."""

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from open_magvit2.generator import GENERATOR_PRESETS, GeneratorConfig, GeneratorTransformer
from open_magvit2.generator.model import apply_rope, rope_2d_table

from official import FIXTURES, io_tensors

PARAMS = {"B": 343_570_432, "L": 804_362_240, "XL": 1_486_679_040}


@pytest.mark.parametrize("name", ["B", "L", "XL"])
def test_official_sizes_keys_and_order_on_meta(name):
    """Parameter count (docs/design.md O-31) and every transformer.* key/shape of the released file, in official
    order."""
    with torch.device("meta"):
        model = GeneratorTransformer(config=GENERATOR_PRESETS[name])
    manifest = json.loads((FIXTURES / "manifests" / f"imagenet_conditional_llama_{name}.json").read_text())
    ref = [(k.removeprefix("transformer."), s) for k, s, _ in manifest["keys"] if k.startswith("transformer.")]
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == ref
    assert model.num_params() == PARAMS[name] == manifest["param_counts"]["transformer"]
    assert set(model.state_dict()) == {n for n, _ in model.named_parameters()}  # no persistent buffers


def test_rope_table_closed_form():
    """Row 0 zero; row 1 + p rotates pair j by y·f_j (j < 16) or x·f_{j−16}, f_i = 10000^(−2i/32)
    (docs/design.md O-34)."""
    t = rope_2d_table(16, 64).double()
    assert t.shape == (257, 32, 2) and t.dtype == torch.float64
    assert torch.equal(t[0], torch.zeros(32, 2))  # class token: cos and sin both 0 → q, k exactly 0
    assert torch.equal(t[1], torch.stack([torch.ones(32), torch.zeros(32)], -1))  # cell (0, 0): identity
    f = 10000.0 ** (-2 * torch.arange(16, dtype=torch.float64) / 32)
    for y, x in [(0, 5), (3, 0), (7, 11), (15, 15)]:
        angle = torch.cat([y * f, x * f])
        expect = torch.stack([angle.cos(), angle.sin()], -1)
        torch.testing.assert_close(t[1 + 16 * y + x], expect, atol=2e-6, rtol=0)


def test_apply_rope_rotates_interleaved_pairs():
    """Pairs are adjacent elements (2j, 2j+1): the rotation equals complex multiplication by e^{iθ}."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 8, generator=g, dtype=torch.float64)
    theta = torch.randn(5, 4, generator=g, dtype=torch.float64)
    rope = torch.stack([theta.cos(), theta.sin()], -1)
    rotation = torch.polar(torch.ones_like(theta), theta)[None, :, None]  # (1, L, 1, 4) e^{iθ}
    z = torch.view_as_complex(x.unflatten(-1, (4, 2)).contiguous()) * rotation
    torch.testing.assert_close(apply_rope(x, rope), torch.view_as_real(z).flatten(-2))


def test_teacher_forcing_matches_official(tiny_transformer):
    io = io_tensors("ar_tiny")
    with torch.no_grad():
        lp, lq = tiny_transformer(io["tf/pre"], io["tf/post"], io["tf/labels"])
    assert lp.shape == (3, 256, 64) and lq.shape == (3, 256, 4096)
    torch.testing.assert_close(lp, io["tf/logits_pre"], atol=2e-5, rtol=0)
    torch.testing.assert_close(lq[:, io["tf/logits_post_row_positions"]], io["tf/logits_post_rows"], atol=2e-5, rtol=0)
    torch.testing.assert_close(lq @ io["tf/projection"], io["tf/logits_post_projected"], atol=5e-5, rtol=0)
    torch.testing.assert_close(lq.logsumexp(-1), io["tf/logits_post_logsumexp"], atol=2e-5, rtol=0)
    torch.testing.assert_close(lq.amax(-1), io["tf/logits_post_max"], atol=2e-5, rtol=0)
    assert torch.equal(lq.argmax(-1), io["tf/logits_post_argmax"])
    loss_pre = F.cross_entropy(lp.flatten(0, 1), io["tf/pre"].flatten())
    loss_post = F.cross_entropy(lq.flatten(0, 1), io["tf/post"].flatten())
    torch.testing.assert_close(loss_pre, io["tf/loss_pre"], atol=1e-5, rtol=0)
    torch.testing.assert_close(loss_post, io["tf/loss_post"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_pure_half_precision_forward(dtype, make_small):
    """A model cast to bf16/fp16 (no autocast) runs — the official RoPE returns fp32 and fails (docs/design.md O-35)."""
    model = make_small()
    pre, post = torch.randint(0, 64, (2, 16)), torch.randint(0, 4096, (2, 16))
    labels = torch.tensor([0, 5])
    with torch.no_grad():
        ref = model(pre, post, labels)
        half = model.to(dtype)
        out = half(pre, post, labels)
    assert half.rope.dtype == torch.float32 and torch.equal(half.rope, rope_2d_table(4, 64))
    for o, r in zip(out, ref):
        assert o.dtype == dtype
        rel = (o.float() - r).norm() / r.norm()
        assert rel < 0.05, f"{dtype}: relative error {rel:.3f}"


def test_eval_is_deterministic_and_training_applies_dropouts(make_small):
    model = make_small()
    pre, post, labels = torch.randint(0, 64, (2, 16)), torch.randint(0, 4096, (2, 16)), torch.tensor([1, 2])
    with torch.no_grad():
        a, b = model(pre, post, labels), model(pre, post, labels)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
        model.train()
        c = model(pre, post, labels)
        model.eval()
    assert not torch.allclose(a[0], c[0])


def test_label_dropout_goes_to_the_null_class(make_small):
    """With label dropout 1 and no other dropout, training-mode logits are the null class's eval logits."""
    model = make_small(label_dropout=1.0, token_dropout=0.0, resid_dropout=0.0, ffn_dropout=0.0)
    pre, post = torch.randint(0, 64, (2, 16)), torch.randint(0, 4096, (2, 16))
    with torch.no_grad():
        null = model(pre, post, torch.tensor([5, 5]))
        model.train()
        dropped = model(pre, post, torch.tensor([0, 3]))
        model.eval()
        kept = model(pre, post, torch.tensor([0, 3]))
    torch.testing.assert_close(dropped, null)
    assert not torch.allclose(kept[0], null[0])


def test_init_follows_official_rules():
    torch.manual_seed(0)
    cfg = dataclasses.replace(GENERATOR_PRESETS["tiny"], dim=256, n_heads=4)
    model = GeneratorTransformer(config=cfg)
    assert all(torch.equal(h.weight, torch.zeros_like(h.weight)) for h in model.head)
    w = model.spatial_blocks[0].feed_forward.w1.weight
    assert abs(w.std().item() - 0.02) < 1e-3 and abs(model.post_emb.weight.std().item() - 0.02) < 1e-3
    assert torch.equal(model.norm.weight, torch.ones(256))
    assert model.config.ffn_dim == 768  # find_multiple(int(8·256/3) = 682, 256)


def test_other_bit_splits_and_grids(make_small):
    """Any (k1, k2) split and grid size: sub-token vocabularies 2^k1 / 2^k2, N = grid²."""
    model = make_small(factorized_bits=(8, 6), grid_size=3)
    pre, post = torch.randint(0, 256, (2, 9)), torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        lp, lq = model(pre, post, torch.tensor([0, 1]))
    assert lp.shape == (2, 9, 256) and lq.shape == (2, 9, 64) and model.rope.shape == (10, 32, 2)


def test_causality(make_small):
    """Changing token n leaves pre logits at positions ≤ n and post logits at < n exactly unchanged."""
    model = make_small()
    pre, post, labels = torch.randint(0, 64, (1, 16)), torch.randint(0, 4096, (1, 16)), torch.tensor([2])
    pre2, post2 = pre.clone(), post.clone()
    pre2[0, 6], post2[0, 6] = (pre[0, 6] + 1) % 64, (post[0, 6] + 1) % 4096
    with torch.no_grad():
        (a, b), (c, d) = model(pre, post, labels), model(pre2, post2, labels)
    torch.testing.assert_close(a[:, :7], c[:, :7], atol=0, rtol=0)  # pre_n depends on tokens < n only
    torch.testing.assert_close(b[:, :6], d[:, :6], atol=0, rtol=0)  # post_n also on pre_n
    assert not torch.allclose(b[:, 6], d[:, 6]) and not torch.allclose(a[:, 7], c[:, 7])


def test_config_round_trip_and_errors():
    cfg = GENERATOR_PRESETS["L"]
    assert GeneratorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert (cfg.head_dim, cfg.ffn_dim, cfg.seq_len, cfg.vocab_sizes) == (64, 3584, 256, (64, 4096))
    assert GENERATOR_PRESETS["XL"].ffn_dim == 4096 and GENERATOR_PRESETS["B"].ffn_dim == 2816
    with pytest.raises(ValueError, match="unknown GeneratorConfig keys"):
        GeneratorConfig.from_dict({**cfg.to_dict(), "vocab_size": 512})
    with pytest.raises(ValueError, match="divisible"):
        GeneratorConfig(dim=100, n_heads=3)
    with pytest.raises(ValueError, match="factorized_bits"):
        GeneratorConfig(factorized_bits=(6, 0, 12))  # more bad splits: test_multi_subtoken.py
    assert math.isclose(GENERATOR_PRESETS["XL"].sample_cfg_scale[0], 1.75)


@pytest.mark.parametrize("length", [2, 3, 4])
def test_short_causal_attention_equals_sdpa(length):
    """The intra transformer's written-out attention (a few positions) gives SDPA's causal values and gradients
    (float64, so only rounding could differ)."""
    from open_magvit2.generator.model import short_causal_attention

    torch.manual_seed(length)
    q, k, v = (torch.randn(5, 3, length, 16, dtype=torch.float64, requires_grad=True) for _ in range(3))
    y = short_causal_attention(q, k, v)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert y.dtype == q.dtype and torch.allclose(y, ref, rtol=0, atol=1e-12)
    assert torch.allclose(y[:, :, 0], v[:, :, 0], atol=1e-12)  # the first position sees only itself
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(y, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    bf = short_causal_attention(*(t.detach().bfloat16() for t in (q, k, v)))
    assert bf.dtype == torch.bfloat16 and torch.allclose(bf.double(), ref, atol=0.05)


def test_only_the_intra_block_takes_the_short_attention(make_small, monkeypatch):
    """Teacher forcing routes the intra transformer's 2-position sequences (one call per intra layer) through
    short_causal_attention and the spatial ones through SDPA; the logits equal those of SDPA everywhere."""
    import open_magvit2.generator.model as gm

    model = make_small()
    pre, post, labels = torch.randint(0, 64, (2, 16)), torch.randint(0, 4096, (2, 16)), torch.tensor([1, 3])
    calls = []
    real = gm.short_causal_attention
    monkeypatch.setattr(gm, "short_causal_attention", lambda q, k, v: calls.append(q.shape) or real(q, k, v))
    with torch.no_grad():
        ours = model(pre, post, labels)
        assert [s[-2] for s in calls] == [2] * model.config.n_intra_layers
        monkeypatch.setattr(gm, "SHORT_CAUSAL", 1)  # SDPA for every sequence
        ref = model(pre, post, labels)
    assert len(calls) == model.config.n_intra_layers
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
