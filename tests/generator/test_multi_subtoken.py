"""Generators with any number M >= 1 of sub-tokens (paper eq. 5–6 for general M): parameter names, cache logits =
teacher forcing for M = 1…4, per-sub-token settings, compile, 32-bit tokens, checkpoints, and the one-line errors.
The M = 2 official parity stays pinned by the other files of this folder."""

import dataclasses
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounter

from open_magvit2.generator import (
    GENERATOR_PRESETS,
    GeneratorConfig,
    GeneratorTransformer,
    ImageGenerator,
    generate_tokens,
    generator_loss,
)
from open_magvit2.generator.api import infer_generator_config
from open_magvit2.generator.model import SAMPLING_DEFAULTS
from open_magvit2.quantize import factorize_indices, unfactorize_indices
from open_magvit2.tokenizer import TokenizerConfig

NO_SAMPLING_DEFAULTS = dict.fromkeys(SAMPLING_DEFAULTS)  # None each: the defaults for the sub-token count

SPLITS = {1: (9,), 2: (4, 7), 3: (3, 5, 4), 4: (2, 3, 4, 3)}
LABELS = torch.tensor([0, 3, 4])


def _transformer(seed: int = 0, **changes) -> GeneratorTransformer:
    """The tiny preset on a 4×4 grid, 5 classes, random weights with non-zero heads (the official init zeroes them)."""
    torch.manual_seed(seed)
    changes = {"grid_size": 4, "num_classes": 5, **changes}
    model = GeneratorTransformer(config=dataclasses.replace(GENERATOR_PRESETS["tiny"], **changes))
    for h in model.head:
        torch.nn.init.normal_(h.weight, std=0.5)
    return model.eval()


def _model(m: int, seed: int = 0) -> GeneratorTransformer:
    """A random model of M sub-tokens (the bit split SPLITS[m]) with sampling defaults, one per sub-token."""
    return _transformer(seed, factorized_bits=SPLITS[m], **{**NO_SAMPLING_DEFAULTS, "sample_cfg_scale": (1.5,) * m,
                                                           "sample_temperature": (1.0,) * m})


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_parameter_names(m):
    """pre_emb = sub-token 1, mid_emb.j = sub-token j + 2, post_emb = sub-token M, head.i = sub-token i + 1; M = 2 has
    exactly the official names."""
    model = _model(m)
    names = {k.removesuffix(".weight") for k in model.state_dict() if re.match(r"(pre|mid|post)_emb|head\.", k)}
    expected = {"pre_emb", *(f"mid_emb.{j}" for j in range(m - 2)), *(["post_emb"] if m > 1 else []),
                *(f"head.{i}" for i in range(m))}
    assert names == expected
    for i, k in enumerate(SPLITS[m]):
        assert model.sub_emb(i).num_embeddings == 2**k and model.head[i].out_features == 2**k
    assert model.config.sub_tokens == m and model.config.vocab_sizes == tuple(2**k for k in SPLITS[m])


@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("guided", [False, True], ids=["no-cfg", "cfg"])
def test_cache_logits_equal_teacher_forcing(m, guided):
    """The guided logits seen while sampling step by step (KV caches, intra positions 0..M−1) equal the teacher-forced
    logits of the sampled sequence, l_u + s_i(l_c − l_u) per sub-token with s_i > 1 (mixed scales when guided)."""
    model = _model(m, seed=m)
    scales = tuple(2.0 if i % 2 == 0 else 0.5 for i in range(m)) if guided else (1.0,) * m
    out = generate_tokens(model, LABELS, cfg_scale=scales, temperature=1.3,
                          generator=torch.Generator().manual_seed(m), return_logits=True)
    assert len(out.tokens) == len(out.logits) == m
    with torch.no_grad():
        cond = model(*out.tokens, LABELS)
        uncond = model(*out.tokens, torch.full_like(LABELS, model.config.num_classes))
    assert len(cond) == m
    for i, (c, u, got) in enumerate(zip(cond, uncond, out.logits)):
        assert got.shape == (3, 16, 2 ** SPLITS[m][i]) and out.tokens[i].shape == (3, 16)
        want = u + scales[i] * (c - u) if scales[i] > 1 else c
        torch.testing.assert_close(got, want, atol=5e-5, rtol=0)
    assert out.pre is out.tokens[0] and out.post is out.tokens[-1] and out.logits_post is out.logits[-1]


def test_per_sub_token_top_k_and_temperature():
    """top_k=(1, 0, 0): the first sub-token is greedy, the others are drawn; a scalar applies to every sub-token."""
    model = _model(3)
    out = generate_tokens(model, LABELS, cfg_scale=1.0, top_k=(1, 0, 0), generator=torch.Generator().manual_seed(0),
                          return_logits=True)
    assert torch.equal(out.tokens[0], out.logits[0].argmax(-1))
    assert not torch.equal(out.tokens[2], out.logits[2].argmax(-1))
    greedy = generate_tokens(model, LABELS, cfg_scale=1.0, top_k=1, return_logits=True)
    assert all(torch.equal(t, lg.argmax(-1)) for t, lg in zip(greedy.tokens, greedy.logits))


def test_compiled_steps_for_three_sub_tokens():
    """Through torch.compile (a counting backend): decode_one_token plus sub_token_logits at intra positions 1 and 2
    — three graphs for all steps, none more on a second run — and the eager tokens."""
    torch._dynamo.reset()
    counter = CompileCounter()
    model = _model(3)
    kw = dict(cfg_scale=(1.5, 2.0, 0.5), temperature=(1.1, 1.0, 0.9))
    a = generate_tokens(model, LABELS, compile={"backend": counter}, generator=torch.Generator().manual_seed(5), **kw)
    assert counter.frame_count == 3
    generate_tokens(model, LABELS.flip(0), compile={"backend": counter}, **kw)  # other labels, same shapes
    assert counter.frame_count == 3
    b = generate_tokens(model, LABELS, generator=torch.Generator().manual_seed(5), **kw)
    assert all(torch.equal(x, y) for x, y in zip(a.tokens, b.tokens))


@pytest.mark.slow
def test_compile_true_gives_the_eager_sequences_for_three_sub_tokens():
    """``compile=True`` (inductor on CPU) for M = 3, with guidance, temperature and top-p: the eager tokens."""
    torch._dynamo.reset()
    model = _model(3)
    kw = dict(cfg_scale=(1.5, 2.5, 2.0), temperature=(1.1, 1.0, 1.0), top_p=0.9)
    eager = generate_tokens(model, LABELS, generator=torch.Generator().manual_seed(3), **kw)
    fast = generate_tokens(model, LABELS, generator=torch.Generator().manual_seed(3), compile=True, **kw)
    assert all(torch.equal(x, y) for x, y in zip(eager.tokens, fast.tokens))


def test_32_bit_tokens_as_four_bytes():
    """The tokens-only generator of four 8-bit sub-tokens samples full int64 indices over the whole [0, 2^32)."""
    torch.manual_seed(0)
    gen = ImageGenerator(config=GeneratorConfig(dim=64, n_layers=1, n_intra_layers=1, n_heads=2, grid_size=4,
                                                num_classes=10, factorized_bits=(8, 8, 8, 8)))
    assert gen.tokenizer is None and gen.config.bits == 32
    assert gen.config.sample_cfg_scale == (1.9, 2.0, 2.0, 2.0) and gen.config.sample_temperature == (1.0,) * 4
    labels = torch.arange(8) % 10
    idx = gen.generate(labels, generator=torch.Generator().manual_seed(0))
    assert idx.shape == (8, 4, 4) and idx.dtype == torch.int64
    assert int(idx.min()) >= 0 and int(idx.max()) < 2**32
    assert int(idx.max()) >= 2**31 and len(set((idx >> 24).flatten().tolist())) > 32  # the high byte is used
    subs = factorize_indices(idx.flatten(1), (8, 8, 8, 8))
    assert torch.equal(unfactorize_indices(subs, (8, 8, 8, 8)), idx.flatten(1))
    logits = gen.eval().logits(idx, labels)
    assert [tuple(lg.shape) for lg in logits] == [(8, 16, 256)] * 4


def test_save_load_and_infer_the_architecture(tmp_path):
    """A 3-sub-token generator round-trips through save_pretrained, and its weights alone give its bit split."""
    gen = ImageGenerator(config=_model(3).config)
    gen.transformer.load_state_dict(_model(3).state_dict())
    back = ImageGenerator.from_pretrained(gen.save_pretrained(tmp_path / "g"))
    assert back.config == gen.config
    assert all(torch.equal(a, b) for a, b in zip(gen.state_dict().values(), back.state_dict().values()))
    for m in (1, 3, 4):
        inferred = infer_generator_config(_model(m).state_dict(), head_dim=64, grid_size=4)
        assert inferred.factorized_bits == SPLITS[m] and inferred.sample_cfg_scale == (1.9, *(2.0,) * (m - 1))[:m]


def test_loss_sums_the_sub_token_cross_entropies():
    """generator_loss(logits_1..M, s_1..M): the sum of the M cross-entropies; uniform logits give K·ln 2 nats."""
    model = _model(3)
    subs = tuple(torch.randint(0, 2**k, (2, 16)) for k in SPLITS[3])
    with torch.no_grad():
        logits = model(*subs, torch.tensor([0, 1]))
        out = generator_loss(*logits, *subs)
    parts = [F.cross_entropy(lg.flatten(0, 1), s.flatten()) for lg, s in zip(logits, subs)]
    assert all(torch.equal(a, b) for a, b in zip(out.parts, parts))
    assert torch.equal(out.loss, parts[0] + parts[1] + parts[2]) and out.pre is out.parts[0]
    uniform = generator_loss(*(torch.zeros(2, 16, 2**k) for k in SPLITS[3]), *subs)
    assert uniform.loss.item() == pytest.approx(sum(SPLITS[3]) * math.log(2))
    with pytest.raises(ValueError, match="expected M logits then M sub-token tensors"):
        generator_loss(*logits, *subs[:2])


@pytest.mark.parametrize(
    ("bits", "pattern"),
    [
        ((), r"factorized_bits must be positive ints such as \(6, 12\), got \(\)"),
        ((6, 0, 12), r"factorized_bits must be positive ints"),
        ((6.0, 12), r"factorized_bits must be positive ints"),
        ((True, 12), r"factorized_bits must be positive ints"),
        ((31, 32), r"at most 62 bits fit an int64 index, factorized_bits \(31, 32\) has 63"),
    ],
)
def test_bad_factorized_bits(bits, pattern):
    with pytest.raises(ValueError, match=pattern) as e:
        GeneratorConfig(factorized_bits=bits)
    assert "\n" not in str(e.value)


def test_bad_settings_for_m_sub_tokens():
    with pytest.raises(ValueError, match=r"sample_cfg_scale has 2 values but factorized_bits \(6, 6, 6\) makes 3 "
                                         r"sub-tokens; give one value per sub-token"):
        GeneratorConfig(factorized_bits=(6, 6, 6), sample_cfg_scale=(1.9, 2.0))
    with pytest.raises(ValueError, match=r"makes 6 sub-tokens but the intra transformer reads RoPE rows 0..M−1 of a "
                                         r"5-row table"):
        _transformer(factorized_bits=(1,) * 6, grid_size=2, **NO_SAMPLING_DEFAULTS)
    model = _model(3)
    for setting in ("cfg_scale", "temperature", "top_k", "top_p"):
        with pytest.raises(ValueError, match=rf"{setting} must be a number or 3 values, one per sub-token"):
            generate_tokens(model, LABELS, **{"cfg_scale": 1.0, setting: (1, 1)})
    with pytest.raises(ValueError, match=r"cfg_scale must be a number or a \(pre, post\) pair"):
        generate_tokens(_model(2), LABELS, cfg_scale=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"expected 3 sub-token tensors then the labels, got 3 tensors"):
        model(torch.zeros(1, 16, dtype=torch.long), torch.zeros(1, 16, dtype=torch.long), torch.tensor([0]))


def test_tokenizer_with_other_bits_is_refused():
    tok = TokenizerConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1)  # 18 bits
    with pytest.raises(ValueError, match=r"the tokenizer has 18 bits but factorized_bits \(8, 8, 8, 8\) sum to 32"):
        ImageGenerator(config=GeneratorConfig(grid_size=4, factorized_bits=(8, 8, 8, 8)), tokenizer_config=tok)
    gen = ImageGenerator(config=GeneratorConfig(dim=64, n_layers=1, n_intra_layers=1, n_heads=2, grid_size=4,
                                                factorized_bits=(4, 5, 9)), tokenizer_config=tok)
    assert gen.config.bits == gen.tokenizer.config.z_channels == 18


@pytest.mark.slow
def test_compile_keeps_a_graph_per_intra_position_beyond_the_recompile_limit():
    """M = 10 needs 9 graphs of sub_token_logits, more than torch.compile's default limit of 8 per function: the run
    raises the limit while it compiles, so every step is compiled (10 graphs) and gives the eager tokens."""
    torch._dynamo.reset()
    counter = CompileCounter()
    model = _transformer(factorized_bits=(1,) * 10, grid_size=3, **NO_SAMPLING_DEFAULTS)
    a = generate_tokens(model, LABELS, cfg_scale=2.0, compile={"backend": counter},
                        generator=torch.Generator().manual_seed(0))
    assert counter.frame_count == 10 and torch._dynamo.config.recompile_limit == 8  # restored afterwards
    b = generate_tokens(model, LABELS, cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(x, y) for x, y in zip(a.tokens, b.tokens))


def test_generate_cli_with_four_sub_tokens(tmp_path, capsys):
    """``generate`` on a saved 4-sub-token generator with its 32-bit tokenizer: one value per sub-token works, a
    (pre, post) pair is one line naming the model's M, and nothing is left behind."""
    from open_magvit2.cli import main

    torch.manual_seed(0)
    tok = TokenizerConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=32, entropy_group_bits=8)
    gen = ImageGenerator(config=GeneratorConfig(dim=64, n_layers=1, n_intra_layers=1, n_heads=2, grid_size=4,
                                                num_classes=3, factorized_bits=(8, 8, 8, 8)), tokenizer_config=tok)
    ckpt = str(gen.save_pretrained(tmp_path / "gen"))
    out = tmp_path / "out"
    args = ["generate", "-c", ckpt, "--classes", "2", "--num-per-class", "2", "--top-k", "0,0,5,0"]
    assert main([*args, "--cfg", "1.5,2,2,2", "-o", str(out)]) == 0
    assert sorted(p.name for p in (out / "2").iterdir()) == ["0.png", "1.png"] and (out / "grid.png").is_file()
    capsys.readouterr()
    assert main([*args, "--cfg", "1.5,2", "-o", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("--cfg 1.5,2: the model has 4 sub-tokens; give one number for all or 4 "
                                             "comma-separated ones")
    assert not (tmp_path / "bad").exists()
