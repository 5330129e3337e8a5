"""The names external checks call (issue contracts) exist with the documented signatures."""

import inspect

import torch

import open_magvit2
from open_magvit2 import LFQ, ImageTokenizer


def test_lfq_contract():
    sig = inspect.signature(LFQ)
    for name, default in [("bits", 18), ("factorized_bits", None), ("temperature", 0.01), ("sample_weight", 1.0),
                          ("codebook_weight", 1.0)]:
        assert sig.parameters[name].default == default
    q = LFQ(bits=18, factorized_bits=(6, 12), temperature=0.01, sample_weight=1.0, codebook_weight=1.0)
    assert isinstance(q, torch.nn.Module)
    out = q.eval()(torch.randn(2, 18, 3, 4))
    assert out.codes.shape == (2, 18, 3, 4) and out.indices.shape == (2, 3, 4) and out.indices.dtype == torch.int64
    for f in ("entropy_loss", "per_sample_entropy", "codebook_entropy", "commitment"):
        assert getattr(out, f).dim() == 0 and getattr(out, f).item() == 0.0


def test_image_tokenizer_contract():
    assert inspect.signature(ImageTokenizer.from_pretrained).parameters["weights"].default == "ema"
    for name in ("encode", "decode", "decode_codes", "save_pretrained"):
        assert callable(getattr(ImageTokenizer, name))
    assert "ImageTokenizer" in open_magvit2.__all__ and "LFQ" in open_magvit2.__all__
