"""Tiny datasets for the data tests, written on the fly (no downloads): image folders, WebDataset shards, videos."""

from __future__ import annotations

import io
import tarfile
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image


def random_image(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def image_folder(root: Path, counts: dict[str, int] | int, *, seed: int = 0, bad: int = 0) -> Path:
    """``counts``: {class folder: images} (synset layout) or an int (a flat folder). Images are 9–14 px PNGs of
    mixed aspect; ``bad`` extra files per class are corrupt (text with a .jpg suffix, or a cut-off JPEG)."""
    rng = np.random.default_rng(seed)
    folders = {"": counts} if isinstance(counts, int) else counts
    for name, n in folders.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            random_image(rng, int(rng.integers(9, 15)), int(rng.integers(9, 15))).save(d / f"img_{i:03d}.png")
        for i in range(bad):
            if i % 2:
                buf = io.BytesIO()
                random_image(rng, 32, 32).save(buf, format="JPEG")
                (d / f"bad_{i:03d}.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
            else:
                (d / f"bad_{i:03d}.jpg").write_bytes(b"this is not an image")
    return root


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(
    folder: Path, sizes: list[int], *, seed: int = 0, ext: str = "png", cls: bool = True, bad: tuple[str, ...] = ()
) -> list[Path]:
    """Shards ``train-000000.tar`` … with ``sizes[i]`` samples each: ``{key}.{ext}`` (a 9–14 px image) and
    ``{key}.cls`` (label = shard index % 3). Keys listed in ``bad`` get corrupt image bytes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s, n in enumerate(sizes):
        path = folder / f"train-{s:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(n):
                key = f"s{s:02d}_{i:04d}"
                img = random_image(rng, int(rng.integers(9, 15)), int(rng.integers(9, 15)))
                fmt = {"png": "PNG", "webp": "WEBP"}.get(ext.rsplit(".", 1)[-1], "JPEG")
                add(tar, f"{key}.{ext}", b"corrupt" if key in bad else encode(img, fmt))
                if cls:
                    add(tar, f"{key}.cls", str(s % 3).encode())
        paths.append(path)
    return paths


def gop_video(
    path: Path, num_frames: int, *, fps: int = 25, gop: int = 8, h: int = 24, w: int = 32, codec: str = "libx264"
) -> Path:
    """A video with a key frame every ``gop`` frames (H.264, or e.g. ``mpeg4`` in .avi); frame t has red level 4t
    (and noise elsewhere)."""
    import av

    rng = np.random.default_rng(num_frames)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt, stream.gop_size = w, h, "yuv420p", gop
        if codec == "libx264":
            stream.options = {"crf": "18", "keyint_min": str(gop), "sc_threshold": "0"}
        for t in range(num_frames):
            f = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            f[..., 0] = 4 * t
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def take(stream: Any, n: int) -> list[dict[str, Any]]:
    return list(islice(stream, n))


def assert_same_batches(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        assert x["key"] == y["key"]
        assert torch.equal(x["label"], y["label"])
        field = "image" if "image" in x else "video"
        assert torch.equal(x[field], y[field])
