"""KV-cache sampling: official greedy sequences, cache logits = teacher forcing, CFG semantics, filters, errors."""

import pytest
import torch

from open_magvit2.generator import filter_logits, generate_tokens

from official import io_tensors

LABELS = torch.tensor([0, 3, 7])  # the labels of the fixture's sampling runs


@pytest.mark.parametrize(
    ("case", "cfg"), [("cfg_off", 0.5), ("cfg_off", 1.0), ("cfg_on", (1.9, 2.0))], ids=["cfg0.5", "cfg1", "cfg1.9-2"]
)
def test_greedy_matches_official_sampler(official_gen, case, cfg):
    """top_k=1 reproduces ``sample_Open_MAGVIT2`` exactly (official cfg 0.5 = off; our 1.0 is off too)."""
    io = io_tensors("ar_tiny")
    idx = official_gen.generate(LABELS, cfg_scale=cfg, temperature=1.0, top_k=1)
    assert idx.shape == (3, 16, 16) and idx.dtype == torch.int64
    assert torch.equal(idx.flatten(1), io[f"{case}/pre"] + 64 * io[f"{case}/post"])


@pytest.mark.parametrize("cfg", [1.0, (1.9, 2.0), (2.0, 0.5)], ids=["off", "on", "mixed"])
def test_cache_logits_equal_teacher_forcing(tiny_transformer, cfg):
    """Logits seen while sampling (random, temperature 1) = the teacher-forced logits of the sampled sequence,
    guided as l_u + s(l_c − l_u) per sub-token with s > 1 (fp32)."""
    model = tiny_transformer
    out = generate_tokens(model, LABELS, cfg_scale=cfg, generator=torch.Generator().manual_seed(3), return_logits=True)
    s = cfg if isinstance(cfg, tuple) else (cfg, cfg)
    with torch.no_grad():
        cond = model(out.pre, out.post, LABELS)
        uncond = model(out.pre, out.post, torch.full_like(LABELS, 10))
    for i, (c, u, got) in enumerate(zip(cond, uncond, (out.logits_pre, out.logits_post))):
        want = u + s[i] * (c - u) if s[i] > 1 else c
        torch.testing.assert_close(got, want, atol=5e-5, rtol=0)


def test_cfg_one_means_no_guidance(make_small):
    """cfg_scale 1.0 works (it crashes the official sampler) and equals any other scale ≤ 1."""
    model = make_small()
    labels = torch.tensor([1, 4])
    a = generate_tokens(model, labels, cfg_scale=1.0, generator=torch.Generator().manual_seed(5))
    b = generate_tokens(model, labels, cfg_scale=(0.5, 0.9), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.pre, b.pre) and torch.equal(a.post, b.post)
    c = generate_tokens(model, labels, cfg_scale=3.0, generator=torch.Generator().manual_seed(5))
    assert not (torch.equal(a.pre, c.pre) and torch.equal(a.post, c.post))


def test_seeded_generator_reproduces_and_global_rng_is_used_otherwise(make_small):
    model = make_small()
    labels = torch.tensor([0, 2, 2])
    a, b = (generate_tokens(model, labels, cfg_scale=2.0, generator=torch.Generator().manual_seed(9)) for _ in range(2))
    assert torch.equal(a.pre, b.pre) and torch.equal(a.post, b.post)
    torch.manual_seed(9)
    c = generate_tokens(model, labels, cfg_scale=2.0)
    assert torch.equal(a.pre, c.pre) and torch.equal(a.post, c.post)
    d = generate_tokens(model, labels, cfg_scale=2.0, generator=torch.Generator().manual_seed(10))
    assert not torch.equal(a.post, d.post)


def test_model_is_usable_after_generate(make_small):
    """No caches are attached (official bug, docs/design.md O-40): forward, state_dict and train mode are unchanged."""
    model = make_small()
    pre, post, labels = torch.randint(0, 64, (2, 16)), torch.randint(0, 4096, (2, 16)), torch.tensor([0, 1])
    keys = list(model.state_dict())
    with torch.no_grad():
        before = model(pre, post, labels)
        model.train()
        generate_tokens(model, labels, cfg_scale=2.0)
        assert model.training
        model.eval()
        after = model(pre, post, labels)
    assert list(model.state_dict()) == keys
    assert all(torch.equal(x, y) for x, y in zip(before, after))


def test_pure_bf16_sampling(make_small):
    model = make_small().to(torch.bfloat16)
    out = generate_tokens(model, torch.tensor([0, 1]), cfg_scale=(1.5, 2.0), return_logits=True)
    assert out.pre.shape == (2, 16) and int(out.post.max()) < 4096 and out.logits_post.dtype == torch.float32


def _brute_force_keep(row, top_k, top_p):
    """Which entries of one row survive top-k then top-p, by plain Python (official semantics)."""
    vals = row.tolist()
    keep = [True] * len(vals)
    if top_k > 0:
        kth = sorted(vals, reverse=True)[min(top_k, len(vals)) - 1]
        keep = [v >= kth for v in vals]
    if top_p < 1.0:
        order = sorted((i for i in range(len(vals)) if keep[i]), key=lambda i: -vals[i])
        z = sum(torch.tensor(vals[i]).exp().item() for i in order)
        mass, kept = 0.0, set()
        for i in order:  # keep tokens until the mass before them reaches top_p
            if mass > top_p:
                break
            kept.add(i)
            mass += torch.tensor(vals[i]).exp().item() / z
        keep = [i in kept for i in range(len(vals))]
    return keep


@pytest.mark.parametrize(("top_k", "top_p"), [(1, 1.0), (5, 1.0), (0, 0.5), (0, 0.9), (7, 0.6), (100, 0.3), (0, 1e-6)])
def test_filter_masks_match_brute_force(top_k, top_p):
    g = torch.Generator().manual_seed(top_k + int(100 * top_p))
    logits = torch.randn(6, 40, generator=g, dtype=torch.float64) * 2
    logits[0, 3] = logits[0, 5]  # a tie
    got = torch.isfinite(filter_logits(logits, top_k, top_p))
    for r in range(logits.shape[0]):
        assert got[r].tolist() == _brute_force_keep(logits[r], top_k, top_p), f"row {r}"
    assert got.any(-1).all()


def test_bad_inputs_raise_value_error(official_gen):
    gen = official_gen
    ok = torch.zeros(1, 256, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        gen.generate(torch.tensor([11]))
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        gen.logits(ok, torch.tensor([-1]))
    with pytest.raises(ValueError, match="integer tensor"):
        gen.logits(ok, torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"2\^18"):
        gen.logits(torch.full((1, 256), 2**18), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"2\^18"):
        gen.logits(torch.full((1, 16, 16), -1), torch.tensor([1]))
    with pytest.raises(ValueError, match="must be"):
        gen.logits(torch.zeros(1, 8, 8, dtype=torch.int64), torch.tensor([1]))
    with pytest.raises(ValueError, match="integer tensor"):
        gen.logits(ok.float(), torch.tensor([1]))
    with pytest.raises(ValueError, match="2 labels for 1"):
        gen.logits(ok, torch.tensor([1, 2]))
    for kwargs, msg in [
        (dict(temperature=0.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(cfg_scale=(1.0, 2.0, 3.0)), "pair"),
    ]:
        with pytest.raises(ValueError, match=msg):
            gen.generate(torch.tensor([1]), **kwargs)
