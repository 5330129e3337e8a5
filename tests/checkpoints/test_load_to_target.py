"""Loading straight to a device and dtype: one dispatch for folders and official files, one meta-then-strict-load
path, no float32 copy on the host (checkpoints/loading.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from open_magvit2 import ImageTokenizer, load_pretrained
from open_magvit2.checkpoints.loading import build_and_load, open_checkpoint, release_pages
from open_magvit2.checkpoints.official import load_official_state_dict
from open_magvit2.generator import ImageGenerator
from open_magvit2.tokenizer.config import infer_tokenizer_config

from official import FIXTURES, official_state_dict, write_official_ckpt

CKPT = FIXTURES / "image_tokenizer_tiny" / "tokenizer.ckpt"
BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def ar_ckpt(tmp_path_factory):
    return write_official_ckpt("ar_tiny", tmp_path_factory.mktemp("ar") / "ar_tiny.ckpt")


@pytest.mark.parametrize("dtype", ["bf16", torch.float16, "fp32"])
def test_tokenizer_loads_in_dtype_with_the_cast_weights(dtype):
    ref = ImageTokenizer.from_pretrained(CKPT)
    tok = ImageTokenizer.from_pretrained(CKPT, dtype=dtype, device="cpu")
    want = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(dtype, dtype)
    assert {p.dtype for p in tok.parameters()} == {want} and not tok.training
    for (k, a), b in zip(tok.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b.to(want)), k


def test_generator_loads_in_bf16_with_a_float32_rope(ar_ckpt, tmp_path):
    """Official file and save_pretrained folder: bf16 weights equal to the cast float32 ones, RoPE exact float32."""
    ref = ImageGenerator.from_pretrained(ar_ckpt)
    for source in (ar_ckpt, ref.save_pretrained(tmp_path / "gen")):
        gen = ImageGenerator.from_pretrained(source, dtype=torch.bfloat16)
        assert {p.dtype for p in gen.parameters()} == {torch.bfloat16}
        assert gen.transformer.rope.dtype == torch.float32 and torch.equal(gen.transformer.rope, ref.transformer.rope)
        assert all(torch.equal(a, b.bfloat16()) for a, b in zip(gen.state_dict().values(), ref.state_dict().values()))
    assert isinstance(load_pretrained(ar_ckpt, dtype="bf16"), ImageGenerator)


def test_one_dispatch_for_folders_and_official_files(ar_ckpt, tmp_path):
    tok = ImageTokenizer.from_pretrained(CKPT)
    folder = tok.save_pretrained(tmp_path / "tok")
    cases = [(CKPT, "image_tokenizer", False, True), (folder, "image_tokenizer", True, False),
             (ar_ckpt, "image_generator", False, True)]
    for path, kind, has_config, mapped in cases:
        ck = open_checkpoint(path)
        assert (ck.model_type, ck.config is not None, ck.file_backed) == (kind, has_config, mapped)
    with pytest.raises(ValueError, match=r"image_generator.*load_pretrained"):
        ImageTokenizer.from_pretrained(ar_ckpt)
    with pytest.raises(ValueError, match="image_tokenizer"):
        ImageGenerator.from_pretrained(folder)
    with pytest.raises(ValueError, match="dtype must be one of"):
        ImageTokenizer.from_pretrained(CKPT, dtype="int8")


def test_strict_key_check_happens_before_any_allocation():
    sd = official_state_dict("image_tokenizer_tiny")
    sd = {k: v for k, v in sd.items() if k.startswith(("encoder.", "decoder."))}
    config = infer_tokenizer_config(sd)
    sd.pop("decoder.conv_out.bias")
    sd["decoder.extra"] = torch.zeros(1)
    built = []
    with pytest.raises(ValueError, match=r"decoder\.conv_out\.bias.*decoder\.extra"):
        build_and_load(lambda: built.append(1) or ImageTokenizer(config), sd, dtype="bf16")
    assert built == [1]  # built on meta once; nothing was copied


def test_released_pages_are_reread_from_the_file():
    """Dropping a mapped tensor's pages after its copy loses nothing: the file provides them again."""
    sd = load_official_state_dict(CKPT)
    t = max(sd.values(), key=lambda v: v.numel())
    before = t.clone()
    release_pages(t)
    assert torch.equal(t, before)
    tok = ImageTokenizer.from_pretrained(CKPT)  # releases every source tensor it copied
    assert torch.equal(tok.state_dict()["decoder.conv_out.weight"], load_official_state_dict(CKPT)[
        "model_ema.decoderconv_outweight"])


@pytest.mark.slow  # writes and loads a 1.7 GiB file (10 s); the cast and the page release are tested above, small
def test_ar_b_loads_in_bf16_under_one_and_a_half_times_its_weights(tmp_path):
    """The released AR_256_B key list (458.7 M float32 values, a 1.7 GiB file) loaded with dtype=bf16 in a fresh
    process: peak resident memory above the start < 1.5× the 0.92 GB of bf16 weights (no float32 copy, and the
    mapped file's pages are dropped as they are copied). ``benchmarks/bench_load.py`` prints the figures."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to read the peak resident memory")
    out = subprocess.run([sys.executable, str(BENCH / "bench_load.py"), "--preset", "B", "--dtype", "bf16", "--json",
                          "--tmpdir", str(tmp_path)], check=True, capture_output=True, text=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])["new"]
    assert r["dtypes"] == ["torch.bfloat16"] and r["rope"] == "torch.float32"
    assert r["param_bytes"] == 2 * 458_698_261
    assert r["peak"] - r["before"] < 1.5 * r["param_bytes"]
