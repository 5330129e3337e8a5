"""Image pre/post-processing matches the official arithmetic (docs/design.md O-08, O-49) and inputs are validated."""

import numpy as np
import pytest
import torch
from PIL import Image

from open_magvit2 import ImageTokenizer
from open_magvit2.imaging import crop_box, load_image, pad_to_multiple, psnr_uint8, to_uint8
from open_magvit2.tokenizer import TOKENIZER_PRESETS

skimage_data = pytest.importorskip("skimage.data")


@pytest.mark.parametrize(("photo", "size"), [("chelsea", 256), ("coffee", 128), ("astronaut", 256), ("chelsea", 97)])
def test_load_image_matches_torchvision_resize_centercrop(tmp_path, photo, size):
    transforms = pytest.importorskip("torchvision.transforms")
    arr = getattr(skimage_data, photo)()
    path = tmp_path / f"{photo}.png"
    Image.fromarray(arr).save(path)
    img = Image.open(path).convert("RGB")
    ref = np.array(transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size)])(img)).astype(np.uint8)
    ref = torch.from_numpy((ref / 127.5 - 1.0).astype(np.float32)).permute(2, 0, 1)[None]
    x = load_image(path, size)
    assert x.shape == (1, 3, size, size) and x.dtype == torch.float32
    assert torch.equal(x, ref)


def test_to_uint8_truncates_like_official():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 5.0, -0.0039]).view(1, 1, 7).expand(3, 1, 7)
    expected = ((np.clip(x.numpy(), -1, 1) + 1.0) / 2.0 * 255).astype(np.uint8).transpose(1, 2, 0)
    assert np.array_equal(to_uint8(x), expected)
    assert to_uint8(torch.zeros(3, 1, 1))[0, 0, 0] == 127  # 127.5 truncated, not rounded


def test_pad_to_multiple_centres_and_crops_back():
    x = torch.randn(1, 3, 37, 50)
    padded, box = pad_to_multiple(x, 16)
    assert padded.shape == (1, 3, 48, 64)
    assert box == (5, 7, 37, 50)  # 11 rows: 5 top, 6 bottom; 14 cols: 7 left, 7 right
    assert torch.equal(crop_box(padded, box), x)
    assert padded[..., :5, :].abs().sum() == 0 and padded[..., -6:, :].abs().sum() == 0


def test_psnr_uint8():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255
    assert psnr_uint8(a, a) == float("inf")
    assert psnr_uint8(a, b) == pytest.approx(10 * np.log10(255**2 / (255**2 / 48)))


@pytest.fixture(scope="module")
def tiny():
    return ImageTokenizer(TOKENIZER_PRESETS["imagenet_256_L_tiny"]).eval()


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.zeros(1, 3, 40, 32), "multiples of 16"),
        (torch.zeros(1, 4, 32, 32), "3 channels"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "float tensor"),
        (torch.zeros(3, 32, 32), "4-D tensor"),
    ],
)
def test_bad_images_raise_value_error(tiny, x, match):
    with pytest.raises(ValueError, match=match):
        tiny.encode(x)


def test_bad_indices_and_codes(tiny):
    with pytest.raises(ValueError, match=r"\[0, 2\^18\)"):
        tiny.decode(torch.full((1, 2, 2), 2**18))
    with pytest.raises(TypeError, match="integer"):
        tiny.decode(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="indices must be"):
        tiny.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="codes must be"):
        tiny.decode_codes(torch.ones(1, 17, 2, 2))


def test_shorter_side_size_is_torchvision_resize():
    from open_magvit2.imaging import shorter_side_size

    assert shorter_side_size(375, 500, 256) == (256, 341)  # int(256 * 500 / 375) = 341, truncated
    assert shorter_side_size(500, 375, 256) == (341, 256)
    assert shorter_side_size(100, 100, 64) == (64, 64)
    with pytest.raises(ValueError, match="positive"):
        shorter_side_size(10, 10, 0)


def test_to_uint8_tensor_keeps_layout_and_is_the_one_conversion():
    from open_magvit2.imaging import to_uint8_tensor

    x = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2  # beyond [-1, 1]: clamped
    u8 = to_uint8_tensor(x)
    assert u8.dtype == torch.uint8 and u8.shape == x.shape
    expected = ((x.clamp(-1, 1).numpy() + 1.0) / 2.0 * 255).astype(np.uint8)  # docs/design.md O-08, in float32
    assert np.array_equal(u8.numpy(), expected)
    assert np.array_equal(to_uint8(x), expected.transpose(0, 2, 3, 1))


def test_uint8_to_tensor_is_the_float64_arithmetic_of_the_official_image_code():
    from open_magvit2.imaging import pil_to_tensor, uint8_to_tensor

    arr = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    x = uint8_to_tensor(arr)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy((arr / 127.5 - 1.0).astype(np.float32)).permute(2, 0, 1)[None])
    float32 = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 127.5 - 1.0  # the video loader's arithmetic
    assert not torch.equal(x, float32)  # they differ (in the last bit) for some values
    assert torch.equal(pil_to_tensor(Image.fromarray(arr)), x)


def test_the_pictures_of_demo_and_web_use_the_one_uint8_conversion():
    from types import SimpleNamespace

    from open_magvit2.drawing import reconstruct_photo
    from open_magvit2.imaging import uint8_to_tensor

    class Recording(torch.nn.Module):  # a stand-in tokenizer: factor 4, records what it is given
        config = SimpleNamespace(spatial_factor=4)

        def __init__(self):
            super().__init__()
            self.w, self.seen = torch.nn.Parameter(torch.zeros(1)), []

        def encode(self, x):
            self.seen.append(x)
            return torch.zeros(x.shape[0], x.shape[2] // 4, x.shape[3] // 4, dtype=torch.long)

        def decode(self, idx):
            return self.seen[-1]

    photo = np.random.default_rng(0).integers(0, 256, (10, 13, 3), dtype=np.uint8)
    tok = Recording()
    rec, indices = reconstruct_photo(tok, photo)
    padded, box = pad_to_multiple(uint8_to_tensor(photo), 4)
    assert torch.equal(tok.seen[0], padded) and indices.shape == (1, 3, 4)  # float64 arithmetic, zero padding
    assert np.array_equal(rec, to_uint8(crop_box(padded, box)[0]))
