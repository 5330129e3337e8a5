"""The compile-ready sampler: random sampling equals a brute-force reference, the decode step keeps one shape,
``compile=True`` gives the eager sequences, and bf16 sampling is checked for values."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounter

from open_magvit2.generator import generate_tokens
from open_magvit2.generator import sampling as sampling_module

LABELS = torch.tensor([0, 3, 7])


def _official_filter(logits, top_k, top_p):
    """The official HF-style ``top_k_top_p_filtering`` (docs/design.md O-39), written out independently of ours."""
    logits = logits.clone()
    if top_k > 0:
        logits[logits < torch.topk(logits, top_k)[0][..., -1, None]] = -float("inf")
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        remove = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1) > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = False
        logits[remove.scatter(1, order, remove)] = -float("inf")
    return logits


@torch.no_grad()
def brute_force_sample(model, labels, scales, temps, top_k, top_p, generator):
    """Sample without any cache: every sub-token re-runs the spatial transformer over the whole prefix
    ``[class, E[0..n−1]]`` and the intra transformer over ``[h_n]`` / ``[h_n, pre_emb(pre_n)]``, guided and filtered
    as the official sampler, drawing pre then post per step from ``generator``."""
    B, N, null = labels.shape[0], model.config.seq_len, model.config.num_classes
    rows = torch.cat([labels, torch.full_like(labels, null)])
    pre = torch.zeros(B, 0, dtype=torch.int64)
    post = torch.zeros(B, 0, dtype=torch.int64)
    for _ in range(N):
        seq = torch.cat([model.class_emb(rows), model.embed_tokens(pre.repeat(2, 1), post.repeat(2, 1))], dim=1)
        h = model.spatial(seq)[:, -1:]  # (2B, 1, D), teacher-forced causal pass
        toks = []
        for i in range(2):
            ctx = h if i == 0 else torch.cat([h, model.pre_emb(toks[0].repeat(2))[:, None]], dim=1)
            logits = model.head[i](model.intra(ctx)[:, i])
            cond, uncond = logits[:B], logits[B:]
            guided = uncond + scales[i] * (cond - uncond) if scales[i] > 1 else cond
            probs = F.softmax(_official_filter(guided / temps[i], top_k, top_p[i]), dim=-1)
            toks.append(torch.multinomial(probs, 1, generator=generator)[:, 0])
        pre, post = torch.cat([pre, toks[0][:, None]], 1), torch.cat([post, toks[1][:, None]], 1)
    return pre, post


@pytest.mark.parametrize("top_k", [0, 50])
def test_temperature_and_top_p_match_brute_force(tiny_transformer, top_k):
    """The official ar_tiny weights, CFG (1.9, 2.0), temperature (1.1, 1.0), top-p 0.9 (pre) / 0.96 (post), with and
    without top-k: the same 256 × 2 draws as a cache-free reference that recomputes the whole prefix."""
    model, scales, temps, top_p = tiny_transformer, (1.9, 2.0), (1.1, 1.0), (0.9, 0.96)
    out = generate_tokens(model, LABELS, cfg_scale=scales, temperature=temps, top_k=top_k, top_p=top_p,
                          generator=torch.Generator().manual_seed(11))
    pre, post = brute_force_sample(model, LABELS, scales, temps, top_k, top_p, torch.Generator().manual_seed(11))
    assert torch.equal(out.pre, pre) and torch.equal(out.post, post)
    assert len(set(out.post.flatten().tolist())) > 100  # really random, not greedy


def test_decode_step_keeps_one_shape(make_small, monkeypatch):
    """Every argument of every decode step (the caches included) has the same shape, dtype and storage."""
    seen = []
    step = sampling_module.decode_one_token

    def recording(model, pre, post, input_pos, state, g):
        cache = state.spatial[0]
        seen.append((pre.shape, post.shape, input_pos.shape, cache.k.shape, cache.k.data_ptr(), int(input_pos)))
        return step(model, pre, post, input_pos, state, g)

    monkeypatch.setattr(sampling_module, "decode_one_token", recording)
    model = make_small()
    generate_tokens(model, torch.tensor([1, 4]), cfg_scale=(1.5, 2.0), generator=torch.Generator().manual_seed(0))
    assert [s[-1] for s in seen] == list(range(1, model.config.seq_len))  # one call per token after the prefill
    assert len({s[:-1] for s in seen}) == 1


def test_compiled_decode_step_compiles_once(make_small):
    """Through torch.compile (a counting backend): two graphs — decode_one_token and post_logits — for all 63
    decode steps of an 8×8 grid, and none more for a second run with other labels."""
    torch._dynamo.reset()
    counter = CompileCounter()
    model = make_small(grid_size=8)
    a = generate_tokens(model, torch.tensor([1, 4]), cfg_scale=(1.5, 2.0), compile={"backend": counter},
                        generator=torch.Generator().manual_seed(0))
    assert counter.frame_count == 2
    generate_tokens(model, torch.tensor([2, 0]), cfg_scale=(1.5, 2.0), compile={"backend": counter})
    assert counter.frame_count == 2
    b = generate_tokens(model, torch.tensor([1, 4]), cfg_scale=(1.5, 2.0), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.pre, b.pre) and torch.equal(a.post, b.post)


def test_compile_true_gives_the_eager_sequences(make_small):
    """``compile=True`` (inductor on CPU) with temperature and top-p: the same tokens as eager from the same seed."""
    torch._dynamo.reset()
    model = make_small()
    kw = dict(cfg_scale=(1.5, 2.5), temperature=(1.1, 1.0), top_p=0.9)
    eager = generate_tokens(model, LABELS % 5, generator=torch.Generator().manual_seed(3), **kw)
    fast = generate_tokens(model, LABELS % 5, generator=torch.Generator().manual_seed(3), compile=True, **kw)
    assert torch.equal(eager.pre, fast.pre) and torch.equal(eager.post, fast.post)


def test_bf16_sampling_logits_close_to_float32(make_small):
    """A pure bf16 model samples with guided logits within 2 % of the logit range (about ±30 here) of the float32
    model's teacher-forced logits of the same sequence, and the same argmax everywhere: values, not only shapes."""
    model = make_small()
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    labels, scales = torch.tensor([0, 1, 3]), (1.5, 2.0)
    g = torch.Generator().manual_seed(1)
    out = generate_tokens(bf16, labels, cfg_scale=scales, return_logits=True, generator=g)
    with torch.no_grad():
        cond = model(out.pre, out.post, labels)
        uncond = model(out.pre, out.post, torch.full_like(labels, model.config.num_classes))
    for s, c, u, got in zip(scales, cond, uncond, (out.logits_pre, out.logits_post)):
        want = u + s * (c - u)
        torch.testing.assert_close(got, want, atol=0.02 * float(want.abs().max()), rtol=0)
        assert torch.equal(got.argmax(-1), want.argmax(-1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_generator_with_cuda_model(make_small):
    """A CPU generator with a CUDA model draws on the CPU: the same tokens as the CPU model from the same seed."""
    model = make_small()
    labels = torch.tensor([1, 2])
    cpu = generate_tokens(model, labels, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    cuda = generate_tokens(model.cuda(), labels, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(cpu.pre, cuda.pre.cpu()) and torch.equal(cpu.post, cuda.post.cpu())
