"""Image → video inflation (docs/design.md O-28) against the official inflation (fixture ``video_inflation_tiny``)."""

from __future__ import annotations

import json

import pytest
import torch

from open_magvit2.tokenizer import ImageTokenizer
from open_magvit2.tokenizer.inflate import inflate_image_to_video, inflate_official_checkpoint
from open_magvit2.tokenizer.video import VideoTokenizer

from official import FIXTURES, fixture_json, io_tensors, official_state_dict, sha256, write_official_ckpt

NAME = "video_inflation_tiny"


@pytest.fixture(scope="module")
def image_sd():
    return official_state_dict(NAME, "image_checkpoint")


def test_inflation_is_bit_exact_for_every_key(image_sd):
    """Every tensor of the official inflated video model (encoder, decoder, EMA twins, decay, num_updates): same key
    order, dtype, shape and sha256 of its bytes."""
    records = fixture_json(NAME)["video_state_dict"]["keys"]
    video = inflate_image_to_video(image_sd)
    assert list(video) == [r["key"] for r in records]
    for r in records:
        t = video[r["key"]]
        assert (list(t.shape), str(t.dtype)) == (r["shape"], f"torch.{r['dtype']}"), r["key"]
        assert sha256(t) == r["sha256"], r["key"]


def test_inflation_of_module_weights_and_training_keys(image_sd):
    """Our encoder.*/decoder.* weights inflate to the same tensors; loss.* and the discriminator EMA are dropped;
    a key that fits no image tokenizer is an error, and so is a video state dict."""
    full = inflate_image_to_video(image_sd)
    raw = {k: v for k, v in image_sd.items() if k.startswith(("encoder.", "decoder."))}
    video = inflate_image_to_video(raw)
    assert list(video) == [k for k in full if k.startswith(("encoder.", "decoder."))]
    assert all(torch.equal(video[k], full[k]) for k in video)
    extra = {"loss.discriminator.main.0.weight": torch.ones(2), "model_ema.lossdiscriminatormain0weight": torch.ones(2)}
    training = dict(image_sd, **extra)
    assert list(inflate_image_to_video(training)) == list(full)
    with pytest.raises(ValueError, match=r"unexpected keys.*decoder\.extra"):
        inflate_image_to_video(dict(raw, **{"decoder.extra.weight": torch.ones(1)}))
    with pytest.raises(ValueError, match=r"missing keys.*model_ema\.decoderconv_outbias"):
        inflate_image_to_video({k: v for k, v in image_sd.items() if k != "model_ema.decoderconv_outbias"})
    with pytest.raises(ValueError, match="already belong to a video"):
        inflate_image_to_video(full)


def test_inflated_model_equals_image_model_on_one_frame(image_sd, tmp_path):
    """The property proved (docs/design.md O-28): let I be the image tokenizer with weights W, V the video tokenizer
    with inflate(W), x any image whose size is a multiple of the factor, and x₁ = x as a 1-frame clip (B,3,1,H,W).
    Then, in exact arithmetic, V.encode_latent(x₁)[:, :, 0] = I.encode_latent(x) and
    V.decode_codes(c[:, :, None])[:, :, 0] = I.decode_codes(c) for every code map c, because every inflated
    kernel is zero except its last temporal slice, which under causal zero padding multiplies the only real frame;
    GroupNorm and AGN statistics over one frame are the 2D ones; the temporal upsampler's two generated frames are
    copies and only the first is kept when there is one frame. Hence V.encode(x₁)[:, 0] = I.encode(x) wherever the
    sign margin of z exceeds the float32 rounding difference (2D vs 3D convolution), which the fixture guarantees.
    Checked in float32 (|Δ| ≤ 1e-5) for our two models, and each against the official outputs of the fixture.
    """
    src = write_official_ckpt(NAME, tmp_path / "image.ckpt", section="image_checkpoint")
    dst = inflate_official_checkpoint(src, tmp_path / "video.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.ckpt", "video.ckpt"]  # no temporary file left
    image, video = ImageTokenizer.from_pretrained(src), VideoTokenizer.from_pretrained(dst)  # EMA weights
    io = io_tensors(NAME)
    x = io["image"]
    with torch.no_grad():
        zi, zv = image.encode_latent(x), video.encode_latent(x[:, :, None])
        qi, qv = image.quantize(zi), video.quantize(zv)
        di, dv = image.decode(qi.indices), video.decode(qv.indices)
    assert zv.shape == (1, 18, 1, 8, 8) and dv.shape == (1, 3, 1, 32, 32)
    torch.testing.assert_close(zv[:, :, 0], zi, atol=1e-5, rtol=0)
    torch.testing.assert_close(dv[:, :, 0], di, atol=1e-5, rtol=0)
    assert torch.equal(qv.indices[:, 0], qi.indices)
    # the official models on the same input
    assert torch.equal(qi.indices, io["image_model/indices"]) and torch.equal(qv.indices, io["video_model/indices"])
    torch.testing.assert_close(zi, io["image_model/z"], atol=1e-5, rtol=0)
    torch.testing.assert_close(zv, io["video_model/z"], atol=1e-5, rtol=0)
    torch.testing.assert_close(di, io["image_model/decoded"], atol=1e-5, rtol=0)
    torch.testing.assert_close(dv, io["video_model/decoded"], atol=1e-5, rtol=0)

    # A static clip (one image repeated, 9 = 2·4 + 1 frames) gives the image latent in every latent frame: frames
    # are processed independently, and GroupNorm statistics over identical frames equal one frame's. (Not true of
    # the decoder: AGN's unbiased variance over t·h·w positions differs from the one over h·w.)
    with torch.no_grad():
        zs = video.encode_latent(x[:, :, None].expand(-1, -1, 9, -1, -1))
    assert zs.shape[2] == 5
    torch.testing.assert_close(zs, zi[:, :, None].expand_as(zs), atol=1e-5, rtol=0)


def test_full_size_inflation_gives_the_released_video_layout():
    """imagenet_128_L (plus its training-only keys) inflated on the meta device: exactly the key order and shapes of
    the released ``video_128_262144.ckpt`` (manifest ucf101_lfqgan_128_L), EMA twins included."""
    def manifest(name):
        return json.loads((FIXTURES / "manifests" / f"{name}.json").read_text())

    image, video = manifest("imagenet_lfqgan_128_L"), manifest("ucf101_lfqgan_128_L")
    dtypes = {"float32": torch.float32, "int32": torch.int32, "int64": torch.int64}
    keys = image["keys"] + image["keys_only_in_training_checkpoints"]["keys"]
    sd = {k: torch.empty(s, dtype=dtypes[d], device="meta") for k, s, d in keys}
    out = inflate_image_to_video(sd)
    assert [[k, list(t.shape), str(t.dtype)[6:]] for k, t in out.items()] == video["keys"]


def test_zero_past_taps_makes_each_kernel_see_only_the_current_frame():
    """``zero_past_taps`` (init.zero_past_taps): every causal 3D kernel keeps its last temporal slice and zeroes the
    others, so each conv's output at frame t equals the 2D conv of that slice on frame t alone (checked against
    ``F.conv2d`` frame by frame); 1×1×1 kernels and every other tensor are untouched."""
    import torch.nn.functional as F

    from open_magvit2.tokenizer.inflate import zero_past_taps
    from open_magvit2.tokenizer.presets import tokenizer_config

    torch.manual_seed(0)
    tok = VideoTokenizer(tokenizer_config("ucf101_128_L_tiny"))
    before = {k: v.clone() for k, v in tok.state_dict().items()}
    convs = [m for m in tok.modules() if isinstance(m, torch.nn.Conv3d)]
    temporal = [m for m in convs if m.kernel_size[0] == 3]
    assert zero_past_taps(tok) == len(temporal) > 0
    for name, t in tok.state_dict().items():
        if t.dim() == 5 and t.shape[2] == 3:
            assert torch.count_nonzero(t[:, :, :-1]) == 0, name
            assert torch.equal(t[:, :, -1], before[name][:, :, -1]), name
        else:
            assert torch.equal(t, before[name]), name
    conv = tok.encoder.conv_in  # stride 1, padding (1, 1) in H and W, 2 frames in front
    x = torch.randn(2, 3, 5, 8, 8)
    with torch.no_grad():
        out = conv(x)
        w = conv.conv_1.weight[:, :, -1]
        for t in range(5):
            torch.testing.assert_close(out[:, :, t], F.conv2d(x[:, :, t], w, padding=1), rtol=1e-5, atol=1e-6)
