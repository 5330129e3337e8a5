"""The compile-ready sampler: random sampling equals a brute-force reference, the decode step keeps one shape,
``compile=True`` gives the eager sequences, and bf16 sampling is checked for values."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounter

from open_magvit2.generator import generate_tokens
from open_magvit2.generator import sampling as sampling_module
from open_magvit2.generator.kv_cache import KVCache
from open_magvit2.generator.model import SAMPLING_DEFAULTS

NO_SAMPLING_DEFAULTS = dict.fromkeys(SAMPLING_DEFAULTS)  # None each: the defaults for the sub-token count

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


def _record_cache_reads(monkeypatch):
    """Patch KVCache.update to record (int position?, keys' shape, keys' storage, cache size, cache) of every
    cache read."""
    seen = []
    update = KVCache.update

    def recording(self, input_pos, k, v):
        keys, values = update(self, input_pos, k, v)
        seen.append((isinstance(input_pos, int), keys.shape, keys.data_ptr(), self.max_len, id(self)))
        return keys, values

    monkeypatch.setattr(KVCache, "update", recording)
    return seen


def test_fixed_shape_decode_step_keeps_one_shape(make_small, monkeypatch):
    """The compiled path's state (fixed_shape=True): every decode step writes through a (1,) position tensor and
    reads the whole cache, same shape and storage from the first token to the last."""
    model = make_small()
    g = sampling_module.Guidance(2, (1.5, 2.0), (True, True))
    labels = torch.tensor([1, 4, 5, 5])
    state = sampling_module.DecodeState.new(model, g.rows, fixed_shape=True)
    seen = _record_cache_reads(monkeypatch)
    with torch.no_grad():
        sampling_module.prefill(model, labels, state, g)
        tokens = (torch.zeros(4, dtype=torch.int64), torch.ones(4, dtype=torch.int64))
        pos = state.position(0)
        for _ in range(1, model.config.seq_len):
            pos += 1
            sampling_module.decode_one_token(model, tokens, pos, state, g)
    assert len(seen) > model.config.seq_len and not any(s[0] for s in seen)
    assert all(s[1][2] == s[3] for s in seen)  # every read returns the whole cache
    for cache in {s[-1] for s in seen}:  # each cache: one shape and one storage at every call
        assert len({s[1:3] for s in seen if s[-1] == cache}) == 1


def test_eager_decode_reads_only_the_filled_prefix(make_small, monkeypatch):
    """Eager sampling: int positions, and the attention at spatial position n reads the n + 1 filled slots of the
    cache (intra position i: i + 1), in the cache's own storage — never the whole fixed-size cache."""
    seen = _record_cache_reads(monkeypatch)
    model = make_small()
    generate_tokens(model, torch.tensor([1, 4]), cfg_scale=(1.5, 2.0), generator=torch.Generator().manual_seed(0))
    n, m, blocks = model.config.seq_len, model.config.sub_tokens, model.config.n_layers
    assert all(s[0] for s in seen)
    spatial = [s[1][2] for s in seen if s[3] == n]
    intra = [s[1][2] for s in seen if s[3] == m]
    assert spatial == [p + 1 for p in range(n) for _ in range(blocks)]
    assert intra == [i + 1 for _ in range(n) for i in range(m) for _ in range(model.config.n_intra_layers)]


@pytest.mark.parametrize("bits", [(6, 12), (4, 4, 4)])
def test_prefix_reads_give_the_masked_logits(make_small, bits):
    """The same tokens decoded through an eager state (filled prefix, no mask) and a fixed-shape one (whole cache
    through the mask): the same guided logits at every step and sub-token, up to float summation order (a few
    float32 ulps of logits of about ±30)."""
    model = make_small(factorized_bits=bits, **NO_SAMPLING_DEFAULTS)
    m, n = model.config.sub_tokens, model.config.seq_len
    g = sampling_module.Guidance(2, (1.5,) * m, (True,) * m)
    labels = torch.tensor([1, 4, 5, 5])
    tokens = [torch.randint(0, v, (n, 2), generator=torch.Generator().manual_seed(i)).repeat(1, 2)
              for i, v in enumerate(model.config.vocab_sizes)]
    runs = []
    with torch.no_grad():
        for fixed in (False, True):
            state = sampling_module.DecodeState.new(model, g.rows, fixed_shape=fixed)
            logits = [sampling_module.prefill(model, labels, state, g)]
            for p in range(n):
                logits += [sampling_module.sub_token_logits(model, tokens[i - 1][p], i, state, g) for i in range(1, m)]
                if p + 1 < n:
                    step = tuple(t[p] for t in tokens)
                    logits.append(sampling_module.decode_one_token(model, step, state.position(p + 1), state, g))
            runs.append(logits)
    for eager, masked in zip(*runs):
        torch.testing.assert_close(eager, masked, atol=1e-4, rtol=1e-5)  # logits of about ±30


def test_an_int_position_prefills_several_tokens_causally(make_small):
    """Several positions at once through an int position (causal mask over the new slots): the teacher-forced
    hidden states, in one chunk or two."""
    model = make_small()
    x = torch.randn(2, model.config.seq_len, model.config.dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model.spatial(x)
        caches, _ = model.new_caches(2, dtype=torch.float32, device=torch.device("cpu"))
        whole = model.spatial(x, 0, caches)
        caches, _ = model.new_caches(2, dtype=torch.float32, device=torch.device("cpu"))
        parts = torch.cat([model.spatial(x[:, :5], 0, caches), model.spatial(x[:, 5:], 5, caches)], dim=1)
    torch.testing.assert_close(whole, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(parts, want, atol=1e-5, rtol=1e-5)


def test_compiled_decode_step_compiles_once(make_small):
    """Through torch.compile (a counting backend): two graphs — decode_one_token and sub_token_logits — for all 63
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
    model's teacher-forced logits of the same sequence, and the same argmax wherever the float32 top two are further
    apart than that tolerance twice over (a near-tie may flip with bf16 rounding): values, not only shapes."""
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
        tol = 0.02 * float(want.abs().max())
        torch.testing.assert_close(got, want, atol=tol, rtol=0)
        top2 = want.topk(2, dim=-1).values
        clear = top2[..., 0] - top2[..., 1] > 2 * tol
        assert clear.any() and torch.equal(got.argmax(-1)[clear], want.argmax(-1)[clear])
        assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.95  # at most 2 of these 48 positions


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_generator_with_cuda_model(make_small):
    """A CPU generator with a CUDA model draws on the CPU: the same tokens as the CPU model from the same seed."""
    model = make_small()
    labels = torch.tensor([1, 2])
    cpu = generate_tokens(model, labels, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    cuda = generate_tokens(model.cuda(), labels, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(cpu.pre, cuda.pre.cpu()) and torch.equal(cpu.post, cuda.post.cpu())
