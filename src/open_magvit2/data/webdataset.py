"""WebDataset tar shards (docs/design.md O-46), split so that each sample is decoded once, in an order that
resumes exactly.

A shard is a plain tar; a sample is the run of consecutive members sharing a key (the member path up to the first
dot of its file name, webdataset's rule). The image is the first of the extensions ``jpg``, ``jpeg.jpg``,
``jpg.jpg`` (the official order, docs/design.md O-46), ``jpeg``, ``png``, ``webp``; the label is ``cls`` when
present, else 0.

The official loader lets every rank decode the whole stream and keep one sample in ``world_size`` (docs/design.md
O-46). Here each epoch is planned up front, from the sample count of every shard (a header-only scan, or a JSON
file of counts, :func:`count_shards`):

1. The shards are permuted by ``sample_rng(seed, ORDER, epoch)`` and dealt to ``world_size × lanes`` bins, each
   to the bin with the fewest samples so far (equal shards are dealt round robin). Rank r owns bins
   ``r·lanes … r·lanes + lanes − 1``.
2. Every bin yields the same number k of batches (the smallest bin's samples // batch_size; drop-last): all
   ranks take ``lanes · k`` batches, and no rank waits on another.
3. A lane reads its shards in order, sequentially, through a shuffle buffer seeded by (seed, epoch, bin); each
   batch is its next ``batch_size`` samples. Crops come from (seed, epoch, shard, sample number in the shard).
4. DataLoader worker w of W reads lanes w, w + W, …, and yields them round by round. The DataLoader takes its
   workers' outputs in turn, so batch position p = round · lanes + lane comes out in order for any W that
   divides ``lanes``: the batches do not depend on ``num_workers`` (``lanes`` is not tied to it).

Resuming at position n: every lane drops the samples of its batches before n right after the shuffle buffer,
without decoding them; the positions of the first round that were already consumed go out as placeholders.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import tarfile
from collections import deque
from collections.abc import Iterable, Iterator
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from open_magvit2.data.sampler import AUGMENT, ORDER, SHUFFLE, sample_rng
from open_magvit2.data.stream import Sample, collate, describe, identity, make_loader, skipped
from open_magvit2.data.transforms import ImageTransform
from open_magvit2.imaging import decode_image

IMAGE_KEYS = ("jpg", "jpeg.jpg", "jpg.jpg", "jpeg", "png", "webp")
LABEL_KEYS = ("cls", "cls.txt")
MAX_DEFAULT_LANES = 8
_MEMBER = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext: (key, extension)

Slot = tuple[int, int, str, dict[str, bytes]]  # (shard, sample number in the shard, key, {extension: bytes})
Missing = tuple[None, str, str]  # (None, shard name, reason): a sample the index counted that could not be read


def expand_shards(source: str | os.PathLike[str]) -> list[Path]:
    """A brace pattern, a ``.tar`` file or a folder of ``.tar`` files → the shard paths, in order."""
    s, path = str(source), Path(source)
    if "{" in s:
        try:
            from braceexpand import braceexpand
        except ImportError as e:
            raise ImportError("brace patterns need braceexpand: pip install open-magvit2[train]") from e
        paths = [Path(p) for p in braceexpand(s)]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(paths)} shards of '{s}' do not exist, e.g. '{missing[0]}'")
        return paths
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix == ".tar" and p.is_file())
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"no such shard or shard folder: '{s}'")


def _split(member: tarfile.TarInfo) -> tuple[str, str] | None:
    m = _MEMBER.match(member.name) if member.isfile() else None
    if m is None or m.group(1).rsplit("/", 1)[-1].startswith("__"):  # directories, no extension, __meta__ files
        return None
    return m.group(1), m.group(2).lower()


def iter_tar_samples(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Read a shard sequentially: (key, {extension: bytes}) per sample, in file order."""
    with tarfile.open(path, mode="r|") as tar:
        key, parts = None, {}
        for member in tar:
            split = _split(member)
            if split is None:
                continue
            if split[0] != key:
                if key is not None:
                    yield key, parts
                key, parts = split[0], {}
            parts[split[1]] = tar.extractfile(member).read()  # type: ignore[union-attr]
        if key is not None:
            yield key, parts


@cache
def _count(path: str, size: int, mtime_ns: int) -> int:
    n, key = 0, None
    with tarfile.open(path, mode="r:") as tar:  # seekable: reads the headers, skips the data
        for member in tar:
            split = _split(member)
            if split is not None and split[0] != key:
                n, key = n + 1, split[0]
    return n


def count_samples(path: Path) -> int:
    """Samples in a shard from its headers alone (cached per file version)."""
    st = path.stat()
    try:
        return _count(str(path), st.st_size, st.st_mtime_ns)
    except (tarfile.TarError, OSError) as e:
        raise ValueError(f"cannot read shard '{path}' ({describe(e)}); re-create it or leave it out") from None


def shard_names(paths: list[Path]) -> list[str]:
    """Shard paths relative to their common folder (POSIX): the first part of every sample key."""
    root = Path(os.path.commonpath([p.parent.resolve() for p in paths]))
    return [p.resolve().relative_to(root).as_posix() for p in paths]


def count_shards(source: str | os.PathLike[str]) -> dict[str, int]:
    """{shard name: samples} by a header scan of every shard; save it as JSON and pass it as ``shard_sizes`` to
    skip the scan (about 1 s per 10,000 samples) when a run starts."""
    paths = expand_shards(source)
    return dict(zip(shard_names(paths), (count_samples(p) for p in paths)))


def read_shard_sizes(file: str | os.PathLike[str], paths: list[Path], names: list[str]) -> list[int]:
    """Sample counts from a JSON file: {shard: count} (shard = name, path or file name, as the official
    ``sample_json_path`` files, docs/design.md O-46) or a wids index ({"shardlist": [{"url", "nsamples"}, ...]})."""
    table = json.loads(Path(file).read_text())
    if isinstance(table, dict) and "shardlist" in table:
        table = {entry["url"]: entry["nsamples"] for entry in table["shardlist"]}
    sizes = []
    for path, name in zip(paths, names):
        found = [table[k] for k in (name, str(path), str(path.resolve()), path.name) if k in table]
        if not found:
            raise ValueError(f"'{file}' has no sample count for shard '{name}'; re-create it with count_shards()")
        sizes.append(int(found[0]))
    return sizes


def deal_shards(sizes: list[int], *, seed: int, epoch: int, bins: int) -> list[list[int]]:
    """Step 1 of the module docstring: shard indices per bin for one epoch."""
    heap = [(0, b) for b in range(bins)]
    out: list[list[int]] = [[] for _ in range(bins)]
    for s in sample_rng(seed, ORDER, epoch).permutation(len(sizes)).tolist():
        total, b = heapq.heappop(heap)
        out[b].append(s)
        heapq.heappush(heap, (total + sizes[s], b))
    return out


def shuffled(items: Iterable[Any], *, size: int, rng: np.random.Generator) -> Iterator[Any]:
    """A shuffle buffer: hold ``size`` items, emit a random one as each new item arrives, then drain."""
    buf: list[Any] = []
    for x in items:
        buf.append(x)
        if len(buf) >= size:
            i = int(rng.integers(len(buf)))
            buf[i], buf[-1] = buf[-1], buf[i]
            yield buf.pop()
    while buf:
        i = int(rng.integers(len(buf)))
        buf[i], buf[-1] = buf[-1], buf[i]
        yield buf.pop()


class ShardSource:
    """The batch positions of one rank over WebDataset shards (module docstring); a ``stream.Source``."""

    field = "image"
    class_names = None

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        transform: ImageTransform,
        batch_size: int,
        rank: int,
        world_size: int,
        seed: int,
        num_workers: int,
        lanes: int | None,
        shuffle_buffer: int,
        shard_sizes: str | os.PathLike[str] | None = None,
    ) -> None:
        self.paths = expand_shards(source)
        n = len(self.paths)
        if n < world_size:
            raise ValueError(f"found {n} shard(s) in '{source}' for {world_size} ranks; each rank needs its own shards")
        if lanes is None:  # the largest power of two up to 8 that the shards allow; never tied to num_workers
            lanes = 1 << (min(MAX_DEFAULT_LANES, n // world_size).bit_length() - 1)
        if lanes < 1 or n < world_size * lanes:
            raise ValueError(
                f"{n} shards are too few for world_size × lanes = {world_size} × {lanes} (every rank and lane reads "
                "its own shards); pass a smaller lanes (>= num_workers) or write more, smaller shards"
            )
        if num_workers > 0 and lanes % num_workers:
            fits = ", ".join(str(d) for d in range(1, lanes + 1) if lanes % d == 0)
            raise ValueError(
                f"num_workers ({num_workers}) must divide lanes ({lanes}): use num_workers in {{{fits}}}, or pass "
                f"lanes={num_workers} (needs >= {world_size * num_workers} shards)"
            )
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1 (1 = no shuffling), got {shuffle_buffer}")
        self.names = shard_names(self.paths)
        if shard_sizes is None:
            self.sizes = [count_samples(p) for p in self.paths]
        else:
            self.sizes = read_shard_sizes(shard_sizes, self.paths, self.names)
        self.num_samples = sum(self.sizes)
        self.transform, self.batch_size, self.rank, self.world_size = transform, batch_size, rank, world_size
        self.seed, self.lanes, self.shuffle_buffer = seed, lanes, shuffle_buffer
        self._plans: dict[int, tuple[list[list[int]], int]] = {}
        if self.batches_in_epoch(0) == 0:
            raise ValueError(
                f"{self.num_samples} samples in {n} shards leave fewer than batch_size={batch_size} in some of the "
                f"{world_size * lanes} rank × lane bins; lower batch_size or lanes"
            )

    def plan(self, epoch: int) -> tuple[list[list[int]], int]:
        """(shard indices per bin, batches per lane) for ``epoch``."""
        if epoch not in self._plans:
            bins = deal_shards(self.sizes, seed=self.seed, epoch=epoch, bins=self.world_size * self.lanes)
            k = min(sum(self.sizes[s] for s in b) for b in bins) // self.batch_size
            self._plans = {epoch: (bins, k)}
        return self._plans[epoch]

    def batches_in_epoch(self, epoch: int) -> int:
        return self.lanes * self.plan(epoch)[1]

    def samples_in_epoch(self, epoch: int) -> int:
        return self.world_size * self.batches_in_epoch(epoch) * self.batch_size

    def loader(self, epoch: int, start: int, *, num_workers: int, pin_memory: bool) -> Iterable[dict[str, Any]]:
        lanes = Lanes(self, epoch, start)
        return make_loader(lanes, num_workers=num_workers, pin_memory=pin_memory, collate_fn=identity)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "num_shards": len(self.paths),
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "seed": self.seed,
            "lanes": self.lanes,
            "shuffle_buffer": self.shuffle_buffer,
        }


class Lanes(IterableDataset[dict[str, Any]]):
    """One epoch of a rank from batch position ``start`` on, as seen by one DataLoader worker (steps 3–4)."""

    def __init__(self, src: ShardSource, epoch: int, start: int) -> None:
        self.src, self.epoch, self.start = src, epoch, start

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        src, lanes, bsz = self.src, self.src.lanes, self.src.batch_size
        bins, k = src.plan(self.epoch)
        mine = range(worker, lanes, workers)
        slots = {lane: self._slots(bins[src.rank * lanes + lane], src.rank * lanes + lane) for lane in mine}
        first = self.start // lanes
        for lane in mine:  # the rounds a resumed epoch has already consumed: drop their samples undecoded
            deque(islice(slots[lane], first * bsz), maxlen=0)
        for j in range(first, k):
            for lane in mine:
                position, batch = j * lanes + lane, list(islice(slots[lane], bsz))
                if position < self.start:
                    yield skipped(position)
                else:
                    yield collate([self._decode(s, position) for s in batch])

    def _slots(self, shards: list[int], b: int) -> Iterator[Slot | Missing]:
        failure = [(self.src.names[shards[-1]], "the lane's shards ended before the samples their headers counted")]

        def read() -> Iterator[Slot]:
            for s in shards:
                try:
                    for n, (key, parts) in enumerate(iter_tar_samples(self.src.paths[s])):
                        yield s, n, key, parts
                except (tarfile.TarError, OSError) as e:  # a broken shard: its unread samples become bad slots
                    failure[0] = (self.src.names[s], describe(e))

        rng = sample_rng(self.src.seed, SHUFFLE, self.epoch, b)
        yield from shuffled(read(), size=self.src.shuffle_buffer, rng=rng)
        while True:
            yield (None, *failure[0])

    def _decode(self, slot: Slot | Missing, position: int) -> Sample:
        if slot[0] is None:
            return Sample(slot[1], 0, position, error=slot[2])
        s, n, key, parts = slot
        name = f"{self.src.names[s]}/{key}"
        data = next((parts[e] for e in IMAGE_KEYS if e in parts), None)
        if data is None:
            return Sample(name, 0, position, error=f"no image among its files ({', '.join(sorted(parts))})")
        try:  # a corrupt image or label is a counted bad sample (stream.py), whatever the decoder raises
            cls = next((parts[e] for e in LABEL_KEYS if e in parts), None)
            label = 0 if cls is None else int(cls.decode().strip())
            img = decode_image(data, name)
        except Exception as e:
            return Sample(name, 0, position, error=describe(e))
        rng = sample_rng(self.src.seed, AUGMENT, self.epoch, s, n)
        return Sample(name, label, position, self.src.transform(img, rng))
