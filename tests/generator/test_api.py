"""ImageGenerator: loading official AR files strictly, its own tokenizer, decoding, save/load round trips."""

import json
from collections import OrderedDict

import pytest
import torch

import open_magvit2
from open_magvit2.generator import GENERATOR_PRESETS, ImageGenerator, infer_generator_config

from official import FIXTURES, io_tensors, official_state_dict


def _save(sd, path):
    torch.save({"state_dict": OrderedDict(sd)}, path)
    return path


def test_top_level_export():
    """The public API contract: ``from open_magvit2 import ImageGenerator``."""
    assert open_magvit2.ImageGenerator is ImageGenerator


def test_official_file_loads_both_parts(official_gen):
    """transformer.* → .transformer and the raw first stage → .tokenizer (docs/design.md O-30, O-44), nothing else."""
    gen = official_gen
    assert gen.config == GENERATOR_PRESETS["tiny"]
    assert gen.tokenizer.config.ch_mult == (1, 1, 2) and gen.tokenizer.config.factorized_bits == (6, 12)
    sd = official_state_dict("ar_tiny")
    own = gen.state_dict()
    mapped = {k.replace("first_stage_model.", "tokenizer."): v for k, v in sd.items()}
    assert set(own) == set(mapped) and all(torch.equal(own[k], v) for k, v in mapped.items())
    io = io_tensors("ar_tiny")
    lp, _ = gen.logits(io["tf/pre"] + 64 * io["tf/post"], io["tf/labels"])
    torch.testing.assert_close(lp.detach(), io["tf/logits_pre"], atol=2e-5, rtol=0)
    with torch.no_grad():
        enc = gen.tokenizer.encode(io["encode/image"])
    assert torch.equal(enc.flatten(1), io["encode/pre"] + 64 * io["encode/post"])


def test_decoded_official_samples_match(official_gen):
    io = io_tensors("ar_tiny")
    idx = official_gen.generate(torch.tensor([0, 3, 7]), cfg_scale=(1.9, 2.0), top_k=1)
    with torch.no_grad():
        raw = official_gen.tokenizer.decode(idx)
    torch.testing.assert_close(raw, io["cfg_on/decoded"], atol=1e-5, rtol=0)
    torch.testing.assert_close(official_gen.decode(idx), io["cfg_on/decoded"].clamp(-1, 1), atol=1e-5, rtol=0)


def test_sample_images_range_and_shape(small_gen):
    img = small_gen.sample_images(torch.tensor([0, 4]), generator=torch.Generator().manual_seed(0))
    assert img.shape == (2, 3, 8, 8) and img.min() >= -1 and img.max() <= 1
    assert small_gen.generate(torch.tensor([1])).shape == (1, 4, 4)


def test_save_pretrained_round_trip(small_gen, tmp_path):
    small_gen.save_pretrained(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "config.json").read_text())
    assert doc["model_type"] == "image_generator" and doc["config"]["generator"]["grid_size"] == 4
    gen = ImageGenerator.from_pretrained(tmp_path / "m")
    assert gen.config == small_gen.config and gen.tokenizer.config == small_gen.tokenizer.config
    a, b = small_gen.state_dict(), gen.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    labels, g = torch.tensor([2]), lambda: torch.Generator().manual_seed(1)
    assert torch.equal(small_gen.generate(labels, generator=g()), gen.generate(labels, generator=g()))


def test_converted_official_file_round_trips(official_gen, tmp_path):
    official_gen.save_pretrained(tmp_path / "conv")
    gen = ImageGenerator.from_pretrained(tmp_path / "conv")
    io = io_tensors("ar_tiny")
    assert torch.equal(
        gen.generate(torch.tensor([0, 3, 7]), cfg_scale=0.5, top_k=1).flatten(1),
        io["cfg_off/pre"] + 64 * io["cfg_off/post"],
    )


def test_strict_loading_names_the_key(tmp_path):
    sd = official_state_dict("ar_tiny")
    del sd["transformer.factorized_blocks.0.ffn_norm.weight"]
    with pytest.raises(ValueError, match=r"factorized_blocks\.0\.ffn_norm\.weight"):
        ImageGenerator.from_pretrained(_save(sd, tmp_path / "a.ckpt"))
    sd = official_state_dict("ar_tiny")
    sd["transformer.spatial_blocks.0.attention.kv_cache.k_cache"] = torch.zeros(1)
    with pytest.raises(ValueError, match="kv_cache"):
        ImageGenerator.from_pretrained(_save(sd, tmp_path / "b.ckpt"))
    sd = official_state_dict("ar_tiny")
    sd["cond_stage_model.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="cond_stage_model"):
        ImageGenerator.from_pretrained(_save(sd, tmp_path / "c.ckpt"))
    sd = official_state_dict("ar_tiny")
    sd["first_stage_model.decoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"decoder\.extra\.weight"):
        ImageGenerator.from_pretrained(_save(sd, tmp_path / "d.ckpt"))


def test_overrides_for_what_shapes_cannot_tell(ar_ckpt):
    gen = ImageGenerator.from_pretrained(ar_ckpt, head_dim=32, sample_cfg_scale=(3.0, 3.0))
    assert (gen.config.n_heads, gen.config.head_dim, gen.config.sample_cfg_scale) == (4, 32, (3.0, 3.0))
    with pytest.raises(ValueError, match="head_dim"):
        ImageGenerator.from_pretrained(ar_ckpt, head_dim=48)


@pytest.mark.parametrize("name", ["B", "L", "XL"])
def test_architecture_inferred_from_released_shapes(name):
    """From the manifest shapes alone (meta tensors), the inferred config is the preset, sampling defaults included."""
    manifest = json.loads((FIXTURES / "manifests" / f"imagenet_conditional_llama_{name}.json").read_text())
    tsd = {
        k.removeprefix("transformer."): torch.empty(s, device="meta")
        for k, s, _ in manifest["keys"]
        if k.startswith("transformer.")
    }
    assert infer_generator_config(tsd) == GENERATOR_PRESETS[name]


def test_inference_of_a_custom_architecture(make_small):
    """Any depth/width/bit split/class count, and a non-standard FFN width, round-trip through the shapes."""
    model = make_small(n_layers=3, n_intra_layers=2, ffn_hidden=320, factorized_bits=(7, 11), num_classes=3)
    cfg = infer_generator_config(
        model.state_dict(), grid_size=4, sample_cfg_scale=(1.5, 2.5), sample_temperature=(1.0, 0.9)
    )
    assert cfg == model.config
