"""Loading rules for official checkpoints and our own format (docs/design.md O-01–O-04): strict, safe, and clear
when it fails."""

import json
import pathlib
from collections import OrderedDict

import pytest
import torch

from open_magvit2 import ImageTokenizer
from open_magvit2.checkpoints.hub import load_pretrained_dir, resolve_pretrained
from open_magvit2.checkpoints.official import load_official_state_dict, tokenizer_weights

from official import FIXTURES, official_state_dict

CKPT = FIXTURES / "image_tokenizer_tiny" / "tokenizer.ckpt"


def _save(sd, path):
    torch.save({"state_dict": OrderedDict(sd)}, path)
    return path


def test_training_checkpoint_extras_are_skipped(tmp_path):
    """loss.*, the discriminator EMA and LitEma's scalars are ignored (docs/design.md O-01)."""
    sd = official_state_dict("image_tokenizer_tiny")
    sd["loss.discriminator.main.0.weight"] = torch.zeros(4, 3, 4, 4)
    sd["loss.discriminator.main.3.num_batches_tracked"] = torch.tensor(7)
    sd["model_ema.lossdiscriminatormain0weight"] = torch.zeros(4, 3, 4, 4)
    tok = ImageTokenizer.from_pretrained(_save(sd, tmp_path / "train.ckpt"))
    ref = ImageTokenizer.from_pretrained(CKPT)
    assert all(torch.equal(a, b) for a, b in zip(tok.state_dict().values(), ref.state_dict().values()))


def test_missing_ema_twin_is_named(tmp_path):
    sd = official_state_dict("image_tokenizer_tiny")
    del sd["model_ema.decoderconv_outbias"]
    with pytest.raises(ValueError, match=r"decoder\.conv_out\.bias"):
        ImageTokenizer.from_pretrained(_save(sd, tmp_path / "a.ckpt"))


def test_missing_raw_key_is_named(tmp_path):
    sd = official_state_dict("image_tokenizer_tiny")
    del sd["decoder.adaptive.1.beta.weight"]
    with pytest.raises(ValueError, match=r"decoder\.adaptive\.1\.beta\.weight"):
        ImageTokenizer.from_pretrained(_save(sd, tmp_path / "a.ckpt"), weights="raw")


def test_unexpected_key_is_named(tmp_path):
    sd = official_state_dict("image_tokenizer_tiny")
    sd["decoder.extra.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"decoder\.extra\.weight"):
        ImageTokenizer.from_pretrained(_save(sd, tmp_path / "a.ckpt"), weights="raw")
    sd.pop("decoder.extra.weight")
    sd["quantize.codebook"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"quantize\.codebook"):
        ImageTokenizer.from_pretrained(_save(sd, tmp_path / "b.ckpt"))


def test_no_ema_in_file_asks_for_raw(tmp_path):
    sd = {k: v for k, v in official_state_dict("image_tokenizer_tiny").items() if not k.startswith("model_ema.")}
    path = _save(sd, tmp_path / "noema.ckpt")
    with pytest.raises(ValueError, match="weights='raw'"):
        ImageTokenizer.from_pretrained(path)
    ImageTokenizer.from_pretrained(path, weights="raw")


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.ckpt"
    p.write_text("hello, I am not a checkpoint\n")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint") as e:
        load_official_state_dict(p)
    assert "\n" not in str(e.value)


def test_truncated_checkpoint(tmp_path):
    p = tmp_path / "cut.ckpt"
    p.write_bytes(CKPT.read_bytes()[:1_000_000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_official_state_dict(p)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickle_code_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.ckpt"
    torch.save({"state_dict": official_state_dict("image_tokenizer_tiny"), "x": _Evil(marker)}, p)
    with pytest.raises(ValueError, match="arbitrary pickle code") as e:
        ImageTokenizer.from_pretrained(p)
    assert not marker.exists()
    assert "\n" not in str(e.value)


def test_missing_file_and_bad_id():
    with pytest.raises(FileNotFoundError):
        load_official_state_dict("/nonexistent/x.ckpt")
    with pytest.raises(FileNotFoundError):
        resolve_pretrained("./definitely/not/here.ckpt")


def test_weights_argument_validated():
    with pytest.raises(ValueError, match="'ema' or 'raw'"):
        tokenizer_weights(official_state_dict("image_tokenizer_tiny"), weights="best")


def test_save_pretrained_round_trip(tmp_path):
    tok = ImageTokenizer.from_pretrained(CKPT)
    tok.save_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["config.json", "model.safetensors"]
    doc = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert doc["model_type"] == "image_tokenizer" and doc["config"]["ch_mult"] == [1, 2]
    again = ImageTokenizer.from_pretrained(tmp_path / "tok")
    assert again.config == tok.config
    assert all(torch.equal(a, b) for a, b in zip(tok.state_dict().values(), again.state_dict().values()))
    model_type, _, sd = load_pretrained_dir(tmp_path / "tok")
    assert model_type == "image_tokenizer" and set(sd) == set(tok.state_dict())


def test_save_pretrained_dir_rejects_wrong_model_type(tmp_path):
    tok = ImageTokenizer.from_pretrained(CKPT)
    tok.save_pretrained(tmp_path / "tok")
    doc = json.loads((tmp_path / "tok" / "config.json").read_text())
    doc["model_type"] = "video_tokenizer"
    (tmp_path / "tok" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="video_tokenizer"):
        ImageTokenizer.from_pretrained(tmp_path / "tok")
    doc["model_type"], doc["config"]["colour"] = "image_tokenizer", 1
    (tmp_path / "tok" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="unknown TokenizerConfig keys"):
        ImageTokenizer.from_pretrained(tmp_path / "tok")
