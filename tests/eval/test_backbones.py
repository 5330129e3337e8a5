"""Our loaders give exactly what the libraries give on the same (random) weights; missing files say what to do."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from open_magvit2 import weight_files
from open_magvit2.eval import backbones as B
from open_magvit2.eval.i3d import InceptionI3d, MaxPool3dSame, Unit3D, same_padding
from open_magvit2.lpips_net import load_lpips


@pytest.fixture(scope="module")
def images_u8(photo) -> torch.Tensor:
    return torch.from_numpy(photo("astronaut")[:200:3, :160:2].copy()).permute(2, 0, 1)[None]  # (1, 3, 67, 80)


def test_inception_adm_protocol_is_torch_fidelity_forward(hub_cache, images_u8):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    ours = B.load_inception(device="cpu", prefer="torch-fidelity")  # found in the (random-weight) hub cache
    assert ours.weights_path == hub_cache / B.INCEPTION_TORCH_FIDELITY.filename
    lib = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"]).eval()
    captured = {}
    lib.Mixed_6c.register_forward_hook(lambda m, i, o: captured.setdefault("x", o))
    with torch.no_grad():
        pool, logits = lib(images_u8)
        # ADM's "mixed_6/conv" = Mixed_6d.branch1x1 (conv-bn-relu), channels :7, flattened (h, w, c)
        spatial = lib.Mixed_6d.branch1x1(captured["x"])[:, :7].permute(0, 2, 3, 1).flatten(1)
    f = ours.adm_features(images_u8)
    torch.testing.assert_close(f.pool, pool, rtol=0, atol=0)
    torch.testing.assert_close(f.logits_unbiased, logits, rtol=0, atol=0)
    torch.testing.assert_close(f.spatial, spatial, rtol=0, atol=0)
    assert f.spatial.shape == (1, 17 * 17 * 7) and f.pool.std() > 0.01  # random weights, yet not degenerate


def test_inception_fid_protocol_is_pytorch_fid(hub_cache, images_u8):
    inception = pytest.importorskip("pytorch_fid.inception")
    # pytorch-fid's own file name in the cache: the same state dict must load into both implementations
    (hub_cache / B.INCEPTION_PYTORCH_FID.filename).symlink_to(hub_cache / B.INCEPTION_TORCH_FIDELITY.filename)
    try:
        ours = B.load_inception(device="cpu", prefer="pytorch-fid")
        assert ours.weights_path.name == B.INCEPTION_PYTORCH_FID.filename
        lib = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()  # official rFID net
        x01 = images_u8.float() / 255
        with torch.no_grad():
            expected = lib(x01)[0].squeeze(3).squeeze(2)
        torch.testing.assert_close(ours.fid_features(x01), expected, rtol=1e-5, atol=1e-5)
    finally:
        (hub_cache / B.INCEPTION_PYTORCH_FID.filename).unlink()


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_is_the_lpips_package(hub_cache, net):
    import lpips

    ours = load_lpips(net)  # trunk from the cache file, read by us
    lib = lpips.LPIPS(net=net, verbose=False).eval()  # the library's own path: torchvision reads the same cache
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 48, 40, generator=g) * 2 - 1, torch.rand(2, 3, 48, 40, generator=g) * 2 - 1
    with torch.no_grad():
        expected = lib(x, y)
        got = ours(x, y)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert float(got.min()) > 0


def test_missing_weights_name_the_file_and_url(tmp_path, monkeypatch):
    monkeypatch.setattr(weight_files, "hub_checkpoint_dir", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match=r"i3d_pretrained_400\.pt.*drive\.google\.com"):
        B.load_i3d()
    with pytest.raises(FileNotFoundError, match=r"vgg16-397923af\.pth"):
        load_lpips("vgg", tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match=r"pt_inception-2015-12-05-6726825d\.pth.*github\.com/mseitzer"):
        B.load_inception()
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="LPIPS trunk"):
        load_lpips("alex", bad)


def test_i3d_keys_shapes_and_output(weights):
    model = InceptionI3d()
    sd = model.state_dict()
    # 57 conv-bn units (3 stem + 9 inception modules × 6) × 5 tensors + the logits conv's weight and bias
    assert len([k for k in sd if not k.endswith("num_batches_tracked")]) == 57 * 5 + 2
    expected = {
        "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7), "Conv3d_2c_3x3.conv3d.weight": (192, 64, 3, 3, 3),
        "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3), "Mixed_4f.b3b.bn.running_var": (128,),
        "Mixed_5c.b0.conv3d.weight": (384, 832, 1, 1, 1), "logits.conv3d.weight": (400, 1024, 1, 1, 1),
        "logits.conv3d.bias": (400,),
    }
    assert {k: tuple(sd[k].shape) for k in expected} == expected
    assert not any("b3a" in k for k in sd)  # the pooling branch has no parameters in the port
    loaded = B.load_i3d(weights["i3d"])
    with torch.no_grad():
        out = loaded(torch.rand(1, 3, 9, 224, 224) * 2 - 1)
    assert out.shape == (1, 400) and torch.isfinite(out).all()


def test_i3d_same_padding_is_tensorflow_same():
    assert same_padding(224, 7, 2) == (2, 3) and same_padding(9, 7, 2) == (3, 3) and same_padding(5, 3, 1) == (1, 1)
    assert same_padding(4, 2, 2) == (0, 0) and same_padding(5, 2, 2) == (0, 1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 5, 6, 7, generator=g)
    unit = Unit3D(4, 3, (3, 3, 3)).eval()
    expected = F.relu(unit.bn(F.conv3d(x, unit.conv3d.weight, padding=1)))  # symmetric SAME = padding 1
    torch.testing.assert_close(unit(x), expected)
    pooled = MaxPool3dSame((1, 3, 3), (1, 2, 2))(x.abs())  # zero padding: after ReLU the same as -inf padding
    assert pooled.shape == (1, 4, 5, 3, 4)
    torch.testing.assert_close(pooled, F.max_pool3d(F.pad(x.abs(), (1, 1, 0, 1, 0, 0)), (1, 3, 3), (1, 2, 2)))
