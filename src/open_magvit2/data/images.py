"""Training images: the image batch stream over a folder or WebDataset shards, with the official transform
(``transforms.py``).

``build_image_stream`` reads an image folder recursively (ImageNet's synset layout gives the labels,
docs/design.md O-45) or WebDataset tar shards (``webdataset.py``), and returns a
:class:`~open_magvit2.data.stream.BatchStream`.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset

from open_magvit2.data.sampler import AUGMENT, FolderIndex, check_split, sample_rng, scan_folder
from open_magvit2.data.stream import BatchStream, IndexedSource, Sample, Source, describe
from open_magvit2.data.transforms import ImageTransform
from open_magvit2.data.webdataset import ShardSource
from open_magvit2.imaging import IMAGE_SUFFIXES, decode_image


class FolderImages(Dataset[Sample]):
    """``dataset[(epoch, index, position)]`` → the transformed image ``index`` of a :class:`FolderIndex`."""

    def __init__(self, index: FolderIndex, transform: ImageTransform, seed: int) -> None:
        self.index, self.transform, self.seed = index, transform, seed

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: tuple[int, int, int]) -> Sample:
        epoch, i, position = item
        key, label = self.index.files[i], self.index.labels[i]
        try:  # a corrupt file is a counted bad sample (stream.py), whatever the decoder raises
            img = decode_image(self.index.root / key)
        except Exception as e:
            return Sample(key, label, position, error=describe(e))
        return Sample(key, label, position, self.transform(img, sample_rng(self.seed, AUGMENT, epoch, i)))


def is_shard_source(source: str | os.PathLike[str]) -> bool:
    """A brace pattern, a ``.tar`` file, or a folder holding ``.tar`` files (and no images beside them)."""
    s, path = str(source), Path(source)
    if "{" in s:
        return True
    if path.is_file():
        return path.suffix == ".tar"
    return path.is_dir() and any(p.suffix == ".tar" for p in path.iterdir())


def build_image_stream(
    source: str | os.PathLike[str],
    *,
    size: int,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    num_workers: int = 0,
    random_crop: bool = True,
    flip: bool = False,
    pin_memory: bool = False,
    lanes: int | None = None,
    shuffle_buffer: int = 1000,
    shard_sizes: str | os.PathLike[str] | None = None,
    max_bad_fraction: float = 0.01,
) -> BatchStream:
    """The training image stream of one rank: ``{"image": (B, 3, size, size) in [−1, 1], "label", "key"}``.

    ``source``: an image folder (read recursively; class folders give labels in sorted order, a flat folder is
    one class), a ``.tar`` shard, a folder of ``.tar`` shards, or a brace pattern (``train-{000000..000127}.tar``).
    ``lanes``, ``shuffle_buffer`` and ``shard_sizes`` (a JSON file of sample counts, to skip the header scan)
    apply to shards only (``webdataset.py``).
    """
    check_split(batch_size=batch_size, rank=rank, world_size=world_size, seed=seed, num_workers=num_workers)
    transform = ImageTransform(size=size, random_crop=random_crop, flip=flip)
    if is_shard_source(source):
        src: Source = ShardSource(
            source,
            transform=transform,
            batch_size=batch_size,
            rank=rank,
            world_size=world_size,
            seed=seed,
            num_workers=num_workers,
            lanes=lanes,
            shuffle_buffer=shuffle_buffer,
            shard_sizes=shard_sizes,
        )
    else:
        path = Path(source)
        if path.is_file():
            raise ValueError(f"'{source}' is a file; pass the folder that holds the images, or .tar shards")
        if not path.exists():
            raise FileNotFoundError(
                f"no such image folder or shard: '{source}'; pass an image folder, a .tar shard, a folder of "
                ".tar shards or a pattern such as shards/train-{000000..000127}.tar"
            )
        index = scan_folder(path, IMAGE_SUFFIXES, "image")
        src = IndexedSource(
            FolderImages(index, transform, seed),
            field="image",
            num_samples=len(index),
            class_names=index.class_names,
            batch_size=batch_size,
            rank=rank,
            world_size=world_size,
            seed=seed,
        )
    return BatchStream(src, num_workers=num_workers, pin_memory=pin_memory, max_bad_fraction=max_bad_fraction)
