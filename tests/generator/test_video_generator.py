"""VideoGenerator: the image generator's transformer over (t, h, w) grids with a (t, h, w) RoPE, first-frame
prefill, save/load. Small random models; the image generator's own parity tests stay in test_sampling.py."""

import math

import pytest
import torch

from open_magvit2 import ImageGenerator, VideoGenerator, load_pretrained
from open_magvit2.generator import VideoGeneratorConfig, VideoGeneratorTransformer
from open_magvit2.generator.model import apply_rope, rope_2d_table, rope_3d_table, rope_axis_pairs
from open_magvit2.generator.sampling import generate_tokens
from open_magvit2.quantize import factorize_indices
from open_magvit2.tokenizer import TOKENIZER_PRESETS

LABELS = torch.tensor([0, 3, 4])


def video_config(**changes):
    base = dict(dim=64, n_layers=2, n_intra_layers=1, n_heads=2, grid_size=2, frames=3, num_classes=5,
                factorized_bits=(4, 6), sample_cfg_scale=(1.5, 2.5), sample_temperature=(1.0, 0.9))
    return VideoGeneratorConfig(**{**base, **changes})


def random_video_transformer(seed=0, **changes):
    torch.manual_seed(seed)
    model = VideoGeneratorTransformer(config=video_config(**changes))
    for h in model.head:
        torch.nn.init.normal_(h.weight, std=0.5)
    return model.eval()


def tiny_video_tokenizer_config():
    """A small causal video tokenizer: 4× in time, 4× in space (5 × 8² frames → 2 × 2² tokens), 10 bits."""
    return TOKENIZER_PRESETS["ucf101_128_L_tiny"].replace(ch=32, ch_mult=(2, 2, 1), z_channels=10)


def random_video_generator(seed=0):
    torch.manual_seed(seed)
    gen = VideoGenerator(config=video_config(frames=2), tokenizer_config=tiny_video_tokenizer_config())
    for h in gen.transformer.head:
        torch.nn.init.normal_(h.weight, std=0.5)
    return gen.eval()


def test_rope_3d_rotates_each_axis_by_its_own_position():
    """Brute force: a query/key pair's rotated dot product depends on (Δt, Δy, Δx) only, and each axis's pairs turn
    by that axis's position alone (closed form cos/sin of position × base^(−j/a))."""
    hd, t, g = 16, 3, 4
    table = rope_3d_table(t, g, hd)
    assert table.shape == (1 + t * g * g, hd // 2, 2) and not table[0].any()  # class row: zeros, as in 2D
    a_t, a_h, a_w = rope_axis_pairs(hd)
    assert (a_t, a_h, a_w) == (2, 3, 3) and rope_axis_pairs(64) == (8, 12, 12)
    for p in range(t * g * g):
        ti, y, x = p // (g * g), (p // g) % g, p % g
        for j, (pos, a, k) in enumerate([(ti, a_t, j) for j in range(a_t)] + [(y, a_h, j) for j in range(a_h)]
                                        + [(x, a_w, j) for j in range(a_w)]):
            ang = pos * 10000.0 ** (-k / a)
            assert math.isclose(table[1 + p, j, 0].item(), math.cos(ang), abs_tol=1e-5)
            assert math.isclose(table[1 + p, j, 1].item(), math.sin(ang), abs_tol=1e-5)
    q, k = torch.randn(2, hd)

    def score(p1, p2):
        rq = apply_rope(q.view(1, 1, hd), table[1 + p1].unsqueeze(0))
        rk = apply_rope(k.view(1, 1, hd), table[1 + p2].unsqueeze(0))
        return float((rq * rk).sum())

    pos = lambda ti, y, x: (ti * g + y) * g + x  # noqa: E731
    assert math.isclose(score(pos(0, 0, 0), pos(1, 2, 1)), score(pos(1, 1, 2), pos(2, 3, 3)), abs_tol=1e-4)
    assert not math.isclose(score(pos(0, 0, 0), pos(1, 0, 0)), score(pos(0, 0, 0), pos(0, 1, 0)), abs_tol=1e-4)


def test_image_model_keeps_the_2d_table():
    img = ImageGenerator(config=video_config().__class__.__bases__[0](
        dim=64, n_layers=1, n_intra_layers=1, n_heads=2, grid_size=4, num_classes=5, factorized_bits=(4, 6)))
    assert torch.equal(img.transformer.rope, rope_2d_table(4, 32))
    with pytest.raises(TypeError, match="VideoGenerator"):
        ImageGenerator(config=video_config())


@pytest.mark.parametrize("cfg", [1.0, (1.9, 2.0)], ids=["off", "on"])
def test_sampling_logits_equal_teacher_forcing(cfg):
    """Logits seen while sampling a video token sequence = the teacher-forced logits of the sampled sequence."""
    model = random_video_transformer()
    out = generate_tokens(model, LABELS, cfg_scale=cfg, generator=torch.Generator().manual_seed(1), return_logits=True)
    s = cfg if isinstance(cfg, tuple) else (cfg, cfg)
    with torch.no_grad():
        cond = model(*out.tokens, LABELS)
        uncond = model(*out.tokens, torch.full_like(LABELS, 5))
    for i, (c, u, got) in enumerate(zip(cond, uncond, out.logits)):
        want = u + s[i] * (c - u) if s[i] > 1 else c
        torch.testing.assert_close(got, want, atol=5e-5, rtol=0)


@pytest.mark.parametrize("compile_", [False, True], ids=["eager", "compiled"])
def test_prefix_is_kept_and_later_logits_equal_teacher_forcing(compile_):
    """A prefix of P tokens (one latent frame) is prefilled in one pass and returned as given; the logits of every
    later token equal teacher forcing on the whole sequence (so the prefill's causal mask is right)."""
    if compile_:
        pytest.importorskip("torch._inductor")
    model = random_video_transformer(seed=2)
    c = model.config
    P = c.grid_size**2
    torch.manual_seed(5)
    given = tuple(torch.randint(0, v, (3, P)) for v in c.vocab_sizes)
    out = generate_tokens(model, LABELS, cfg_scale=(1.9, 2.0), generator=torch.Generator().manual_seed(4),
                          return_logits=True, prefix=given, compile=compile_)
    for t, g in zip(out.tokens, given):
        assert torch.equal(t[:, :P], g)
    with torch.no_grad():
        cond = model(*out.tokens, LABELS)
        uncond = model(*out.tokens, torch.full_like(LABELS, 5))
    for i, (cl, u, got) in enumerate(zip(cond, uncond, out.logits)):
        s = (1.9, 2.0)[i]
        torch.testing.assert_close(got[:, P:], (u + s * (cl - u))[:, P:], atol=1e-4, rtol=0)
        assert not got[:, :P].any()


def test_prefix_bad_inputs():
    model = random_video_transformer()
    v = model.config.vocab_sizes
    for bad, match in [((torch.zeros(3, 4, dtype=torch.long),), "2 tensors"),
                       ((torch.zeros(3, 12, dtype=torch.long),) * 2, "1 <= P < 12"),
                       ((torch.zeros(2, 4, dtype=torch.long),) * 2, "B = 3"),
                       ((torch.zeros(3, 4, dtype=torch.long), torch.full((3, 4), v[1])), "sub-token 2 must lie")]:
        with pytest.raises(ValueError, match=match):
            generate_tokens(model, LABELS, cfg_scale=1.0, prefix=bad)


def test_generate_first_frame_prefills_its_tokens_and_decodes_it_as_frame_0(tmp_path):
    gen = random_video_generator()
    assert gen.grid == (2, 2, 2) and gen.num_frames == 5 and gen.frame_size == 8
    frame = torch.rand(2, 3, 8, 8) * 2 - 1
    first = gen.encode_first_frame(frame)
    labels = torch.tensor([1, 2])
    idx = gen.generate(labels, first_frame=frame, generator=torch.Generator().manual_seed(0))
    assert idx.shape == (2, 2, 2, 2) and torch.equal(idx[:, 0], first)
    idx2 = gen.generate(labels, first_frame=frame, generator=torch.Generator().manual_seed(0))
    assert torch.equal(idx, idx2)  # seeded: reproducible
    clips = gen.sample_videos(labels, first_frame=frame, generator=torch.Generator().manual_seed(0))
    assert clips.shape == (2, 3, 5, 8, 8) and clips.abs().max() <= 1
    torch.testing.assert_close(clips, gen.decode(idx))
    with pytest.raises(ValueError, match=r"\(B, 3, 8, 8\)"):
        gen.generate(labels, first_frame=torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="2 labels for 1 first frames"):
        gen.generate(labels, first_frame=frame[:1])


def test_teacher_forced_logits_and_token_checks():
    gen = random_video_generator()
    idx = torch.randint(0, 2**10, (2, 2, 2, 2))
    pre, post = gen.logits(idx, torch.tensor([0, 1]))
    assert pre.shape == (2, 8, 16) and post.shape == (2, 8, 64)
    want = gen.transformer(*factorize_indices(idx.flatten(1), (4, 6)), torch.tensor([0, 1]))
    torch.testing.assert_close(pre, want[0])
    with pytest.raises(ValueError, match=r"\(B, 2, 2, 2\)"):
        gen.logits(torch.zeros(2, 3, 2, 2, dtype=torch.long), torch.tensor([0, 1]))


def test_save_and_load_round_trip(tmp_path):
    gen = random_video_generator(seed=3)
    gen.save_pretrained(tmp_path / "v")
    back = VideoGenerator.from_pretrained(tmp_path / "v")
    assert back.config == gen.config and isinstance(back.config, VideoGeneratorConfig)
    for (k, a), (_, b) in zip(gen.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k
    assert torch.equal(back.transformer.rope, gen.transformer.rope)
    assert isinstance(load_pretrained(tmp_path / "v"), VideoGenerator)
    labels = torch.tensor([4])
    a = gen.generate(labels, generator=torch.Generator().manual_seed(9))
    b = back.generate(labels, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="load_pretrained"):
        ImageGenerator.from_pretrained(tmp_path / "v")
