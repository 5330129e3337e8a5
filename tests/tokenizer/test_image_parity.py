"""The image tokenizers reproduce the official code on its golden fixtures (docs/design.md O-05–O-07, fixtures
README)."""

import json

import pytest
import torch

from open_magvit2 import ImageTokenizer
from open_magvit2.quantize import LFQ
from open_magvit2.tokenizer import TOKENIZER_PRESETS, Tokenizer, TokenizerConfig

from official import FIXTURES, io_tensors, official_state_dict, write_official_ckpt

CASES = [
    ("image_tokenizer_tiny", "ema", "images"),
    ("image_tokenizer_tiny", "ema", "images_32x48"),
    ("image_tokenizer_tiny", "raw", "images"),
    ("image_tokenizer_tiny", "raw", "images_32x48"),
    ("image_tokenizer_tiny_z14", "ema", "images"),
    ("image_tokenizer_tiny_z14", "raw", "images"),
]


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    write_official_ckpt("image_tokenizer_tiny_z14", d / "z14.ckpt")
    return d


def _ckpt(name, ckpt_dir):
    # image_tokenizer_tiny ships the official file itself; the z14 one is rebuilt from its formula records
    return FIXTURES / name / "tokenizer.ckpt" if name == "image_tokenizer_tiny" else ckpt_dir / "z14.ckpt"


@pytest.mark.parametrize(("name", "weights", "inp"), CASES)
def test_official_parity(name, weights, inp, ckpt_dir):
    io = io_tensors(name)
    tok = ImageTokenizer.from_pretrained(_ckpt(name, ckpt_dir), weights=weights)
    x = io[inp]
    ref = lambda k: io[f"{weights}/{inp}/{k}"]  # noqa: E731
    with torch.no_grad():
        z = tok.encode_latent(x)
        indices = tok.encode(x)
        decoded = tok.decode(indices)
        q = tok.quantize(z)
    torch.testing.assert_close(z, ref("z"), atol=1e-5, rtol=0)
    assert indices.dtype == torch.int64 and torch.equal(indices, ref("indices"))
    assert torch.equal(q.codes, ref("quant"))
    torch.testing.assert_close(decoded, ref("decoded"), atol=1e-5, rtol=0)


def test_ema_and_raw_differ_and_default_is_ema():
    path = FIXTURES / "image_tokenizer_tiny" / "tokenizer.ckpt"
    ema, raw = ImageTokenizer.from_pretrained(path), ImageTokenizer.from_pretrained(path, weights="raw")
    sd = official_state_dict("image_tokenizer_tiny")
    assert torch.equal(ema.state_dict()["decoder.conv_out.weight"], sd["model_ema.decoderconv_outweight"])
    assert torch.equal(raw.state_dict()["decoder.conv_out.weight"], sd["decoder.conv_out.weight"])


def test_decode_of_encode_equals_decode_codes_of_quantize():
    torch.manual_seed(0)
    tok = ImageTokenizer(TOKENIZER_PRESETS["imagenet_128_L_tiny"]).eval()
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        a = tok.decode(tok.encode(x))
        b = tok.decode_codes(tok.quantize(tok.encode_latent(x)).codes)
        rec, q = tok(x)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(rec, a, atol=0, rtol=0)
    assert a.shape == x.shape and q.indices.shape == (2, 4, 6)


MANIFESTS = {
    "imagenet_lfqgan_128_L": "imagenet_128_L",
    "imagenet_lfqgan_256_L": "imagenet_256_L",
    "pretrain_lfqgan_256_262144": "pretrain_256_262144",
    "pretrain_lfqgan_256_16384": "pretrain_256_16384",
    "ucf101_lfqgan_128_L": "ucf101_128_L",
}


@pytest.mark.parametrize(("manifest", "preset"), MANIFESTS.items())
def test_full_size_presets_match_manifests_on_meta(manifest, preset):
    """Every encoder/decoder key, shape and the key order of the released files, with no allocation."""
    man = json.loads((FIXTURES / "manifests" / f"{manifest}.json").read_text())
    expected = [(k, tuple(s)) for k, s, _ in man["keys"] if k.startswith(("encoder.", "decoder."))]
    with torch.device("meta"):
        model = Tokenizer(TOKENIZER_PRESETS[preset])
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected
    assert sum(p.numel() for p in model.encoder.parameters()) == man["param_counts"]["encoder"]
    assert sum(p.numel() for p in model.decoder.parameters()) == man["param_counts"]["decoder"]


@pytest.mark.parametrize("preset", ["imagenet_128_L", "imagenet_256_L", "pretrain_256_16384"])
def test_presets_downsampling_and_codebook(preset):
    cfg = TOKENIZER_PRESETS[preset]
    tiny = TOKENIZER_PRESETS[preset + "_tiny"]
    assert tiny.spatial_factor == cfg.spatial_factor and tiny.z_channels == cfg.z_channels
    tok = ImageTokenizer(tiny).eval()
    f = cfg.spatial_factor
    with torch.no_grad():
        idx = tok.encode(torch.zeros(1, 3, 2 * f, 3 * f))
    assert idx.shape == (1, 2, 3) and int(idx.max()) < 2**cfg.z_channels


def test_tokenizer_has_lfq_with_matching_bits():
    tok = ImageTokenizer(
        TokenizerConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=14, factorized_bits=(6, 8))
    )
    assert isinstance(tok.quantize, LFQ) and tok.quantize.bits == 14 and tok.quantize.factorized_bits == (6, 8)
    assert not any(k.startswith("quantize") for k in tok.state_dict())  # LFQ is stateless (docs/design.md O-03)
