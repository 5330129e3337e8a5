"""Image folders: labels and class names, the official transform arithmetic, random crops, source errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_builders import image_folder, take
from PIL import Image

from open_magvit2.data import build_image_stream, scan_folder
from open_magvit2.data.transforms import ImageTransform
from open_magvit2.imaging import IMAGE_SUFFIXES, load_image, pil_to_tensor, resize_shorter_side


def stream(root: Path, **kw):
    args = {"size": 8, "batch_size": 4, "rank": 0, "world_size": 1, "seed": 0} | kw
    return build_image_stream(root, **args)


def test_synset_labels_and_class_names(tmp_path: Path):
    image_folder(tmp_path, {"n02": 3, "n01": 2, "n03": 4})
    (tmp_path / "n01" / "sub").mkdir()  # read recursively: a nested file keeps its top-level class
    Image.new("RGB", (10, 10)).save(tmp_path / "n01" / "sub" / "deep.JPEG")
    index = scan_folder(tmp_path, IMAGE_SUFFIXES, "image")
    assert index.class_names == ("n01", "n02", "n03")  # sorted folder order = label (docs/design.md O-45)
    assert len(index) == 10 and list(index.files) == sorted(index.files)
    for f, label in zip(index.files, index.labels):
        assert index.class_names[label] == f.split("/")[0]
    with stream(tmp_path, batch_size=5) as s:
        assert s.class_names == ("n01", "n02", "n03")
        batches = take(s, 2)
    for b in batches:
        assert b["image"].shape == (5, 3, 8, 8) and b["image"].dtype == torch.float32
        assert b["label"].dtype == torch.int64
        assert [index.class_names[i] for i in b["label"]] == [k.split("/")[0] for k in b["key"]]
    assert sorted(k for b in batches for k in b["key"]) == sorted(index.files)


def test_flat_folder_is_one_class(tmp_path: Path):
    root = image_folder(tmp_path / "photos", 6)
    with stream(root, batch_size=3) as s:
        assert s.class_names == ("photos",)
        assert all(b["label"].tolist() == [0, 0, 0] for b in take(s, 2))


def test_centre_crop_is_the_official_transform(tmp_path: Path):
    """random_crop=False gives exactly imaging.load_image: Resize(size) + CenterCrop(size), uint8/127.5 − 1."""
    from skimage import data as photos

    (tmp_path / "a").mkdir()
    Image.fromarray(photos.chelsea()).save(tmp_path / "a" / "chelsea.jpg", quality=90)  # 451×300
    Image.fromarray(photos.rocket()).save(tmp_path / "a" / "rocket.png")  # 640×427
    Image.fromarray(photos.camera().astype(np.uint16) * 257).save(tmp_path / "a" / "camera16.png")  # 16-bit grey
    with stream(tmp_path, size=64, batch_size=3, random_crop=False) as s:
        (batch,) = take(s, 1)
    for key, image in zip(batch["key"], batch["image"]):
        assert torch.equal(image, load_image(tmp_path / key, 64)[0])
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1


def test_random_crop_within_bounds_and_varies(tmp_path: Path):
    from skimage import data as photos

    img = Image.fromarray(photos.chelsea())  # 451×300 → 24×16 after Resize(16)
    resized = resize_shorter_side(img, 16)
    crops = {(top, left): pil_to_tensor(resized.crop((left, top, left + 16, top + 16)))[0]
             for top in range(resized.height - 15) for left in range(resized.width - 15)}
    transform = ImageTransform(size=16, random_crop=True)
    seen = set()
    for i in range(12):
        out = transform(img, np.random.default_rng(i))
        match = [offset for offset, crop in crops.items() if torch.equal(out, crop)]
        assert len(match) == 1  # exactly one valid crop of the resized image
        seen.add(match[0])
    assert len(seen) > 3
    flipped = ImageTransform(size=16, random_crop=False, flip=True)
    outs = [flipped(img, np.random.default_rng(i)) for i in range(8)]
    assert any(torch.equal(o, outs[0].flip(-1)) for o in outs)  # both orientations occur


def test_source_errors_are_one_line(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no such image folder or shard") as e:
        stream(tmp_path / "missing")
    assert "\n" not in str(e.value)
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image files"):
        stream(tmp_path / "empty")
    image_folder(tmp_path / "mixed", {"a": 2})
    Image.new("RGB", (9, 9)).save(tmp_path / "mixed" / "loose.png")
    with pytest.raises(ValueError, match="both directly"):
        stream(tmp_path / "mixed")
    with pytest.raises(ValueError, match="is a file"):
        stream(tmp_path / "mixed" / "loose.png")
    with pytest.raises(ValueError, match="make no batch"):
        stream(tmp_path / "mixed" / "a", batch_size=3)
    with pytest.raises(ValueError, match="rank must be"):
        stream(tmp_path / "mixed" / "a", batch_size=1, rank=2, world_size=2)
