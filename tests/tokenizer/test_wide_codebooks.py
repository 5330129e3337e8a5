"""Tokenizers past 2^18 codes: ``TokenizerConfig.entropy_group_bits`` reaches the LFQ, is saved and loaded with the
model, old configs still load, and a 32-bit tokenizer trains (forward + backward) and round-trips its indices."""

from __future__ import annotations

import json

import pytest
import torch

from open_magvit2 import ImageTokenizer
from open_magvit2.tokenizer.config import TokenizerConfig

TINY_32 = TokenizerConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=32, entropy_group_bits=8)


def test_config_validates_and_round_trips_entropy_group_bits():
    assert TokenizerConfig().entropy_group_bits is None  # default: the exact entropy
    d = TINY_32.to_dict()
    assert d["entropy_group_bits"] == 8
    assert TokenizerConfig.from_dict(json.loads(json.dumps(d))) == TINY_32
    old = {k: v for k, v in TokenizerConfig().to_dict().items() if k != "entropy_group_bits"}  # a config from before
    assert TokenizerConfig.from_dict(old) == TokenizerConfig()
    with pytest.raises(ValueError, match="set entropy_group_bits") as e:
        TokenizerConfig(z_channels=32)  # exact past 28 bits: refused before any model is built
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"entropy_group_bits must be an int in \[1, 18\]"):
        TokenizerConfig(entropy_group_bits=19)
    with pytest.raises(ValueError, match="entropy_group_bits must be an int"):
        TokenizerConfig(entropy_group_bits=0)
    with pytest.raises(ValueError, match="62"):
        TokenizerConfig(z_channels=63, entropy_group_bits=8)


def test_32_bit_tokenizer_trains_and_round_trips(tmp_path):
    torch.manual_seed(0)
    tok = ImageTokenizer(TINY_32)
    assert tok.quantize.bits == 32 and tok.quantize.entropy_group_bits == 8
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    out = tok.train()(x)
    loss = (out.reconstruction - x).abs().mean() + out.quantizer.entropy_loss + 0.25 * out.quantizer.commitment
    loss.backward()
    assert torch.isfinite(loss) and out.quantizer.codebook_entropy > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tok.parameters())
    tok.eval()
    with torch.no_grad():
        idx = tok.encode(x)
        assert idx.shape == (2, 16, 16) and idx.dtype == torch.int64 and int(idx.max()) < 2**32
        rec = tok.decode(idx)
        torch.testing.assert_close(rec, tok.decoder(tok.quantize(tok.encode_latent(x)).codes), rtol=0, atol=1e-6)
    wide = idx | (1 << 31)  # indices past the int32 range decode, and encode back through the codes
    assert torch.equal(tok.quantize.codes_to_indices(tok.quantize.indices_to_codes(wide)), wide)
    tok.save_pretrained(tmp_path / "tok32")
    doc = json.loads((tmp_path / "tok32" / "config.json").read_text())
    assert doc["config"]["entropy_group_bits"] == 8 and doc["config"]["z_channels"] == 32
    again = ImageTokenizer.from_pretrained(tmp_path / "tok32")
    assert again.config == TINY_32 and again.quantize.entropy_group_bits == 8
    with torch.no_grad():
        assert torch.equal(again.encode(x), idx)
