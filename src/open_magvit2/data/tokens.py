"""Pre-tokenised datasets: LFQ indices in memory-mappable shards with a small JSON index.

One format serves ``tokenize`` (a folder of images → one token set), ``tokenize-dataset`` (a training set,
under torchrun) and generator training, which reads the shards with random access and never runs the tokenizer
(the official AR loop re-encodes every image at every step; docs/design.md O-30, and O-11 for the indices)::

    TOKENS_DIR/
      index.json                  format, version, grid [h, w] (video: [t, h, w]), bits, views, dtype, num_samples,
                                  shards, tokenizer, ... (video: frames, stride, num_videos)
      classes.json                optional: class names, label i = classes[i]
      shard-000000.tokens.npy     (n, V, h, w) int32 (int64 above 31 bits): full LSB-first LFQ indices (O-11)
      shard-000000.labels.npy     (n,) int64 class labels, −1 when unlabelled
      shard-000000.keys.json      n source keys (relative paths or WebDataset keys)
      shard-000000.skipped.json   optional: [key, reason] of the chunk's images that could not be read
      tokenizer/                  optional: the tokenizer that made the tokens (save_pretrained), so the set is
                                  self-contained (the generator trainer decodes samples with it, export ships it)

``V`` is the number of augmented views per image (1; 2 with flips; 10 with ten-crop). A video token set (version 2,
from a video tokenizer) holds (n, 1, t, h, w) grids of clips instead, keyed ``<video>#<first frame>``; image sets
are still written as version 1, so older readers read them. Shard ``c`` holds a fixed
chunk of the sample list, so a run can be resumed shard by shard under any number of ranks: each file is written
atomically and the keys file is written last, so its presence marks a complete shard. :func:`finalize_index`
checks every shard (counts, shapes, value range, no duplicate key) before it writes ``index.json``.

Training reads a token set through :func:`build_token_stream`: the same resumable
:class:`~open_magvit2.data.stream.BatchStream` as the image pipelines, with one permutation per epoch from the seed
split over ranks (``sampler.rank_batches``), and one augmented view per (seed, epoch, sample).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from open_magvit2.data.sampler import AUGMENT, check_split, sample_rng
from open_magvit2.data.stream import BatchStream, IndexedSource, Sample
from open_magvit2.fileio import atomic_write
from open_magvit2.generator.api import CLASSES_NAME

FORMAT = "open-magvit2-tokens"
VERSION = 2  # the newest version this package reads; 2 added (t, h, w) grids (video token sets)
GRID_VERSION = {2: 1, 3: 2}  # grid dimensions → the version a set is written as: image sets stay version 1
INDEX_NAME = "index.json"
TOKENIZER_DIR = "tokenizer"


class ShardFiles(NamedTuple):
    tokens: Path
    labels: Path
    keys: Path


class TokenSample(NamedTuple):
    tokens: np.ndarray  # (V, h, w) integer LFQ indices; (V, t, h, w) in a video set
    label: int  # −1 when unlabelled
    key: str


def shard_files(directory: str | Path, shard_id: int) -> ShardFiles:
    base = Path(directory) / f"shard-{shard_id:06d}"
    return ShardFiles(Path(f"{base}.tokens.npy"), Path(f"{base}.labels.npy"), Path(f"{base}.keys.json"))


def _save_npy(path: Path, arr: np.ndarray) -> None:
    def write(p: Path) -> None:
        with open(p, "wb") as f:  # a file object: np.save would append ".npy" to the temporary name
            np.save(f, arr)

    atomic_write(path, write)


def skipped_file(directory: str | Path, shard_id: int) -> Path:
    return Path(directory) / f"shard-{shard_id:06d}.skipped.json"


def write_skipped(directory: str | Path, shard_id: int, skipped: Sequence[tuple[str, str]]) -> None:
    """Record the (key, reason) of the images shard ``shard_id`` leaves out (none: remove the record). Write it
    before the shard itself: the shard's keys file, written last, marks both complete."""
    path = skipped_file(directory, shard_id)
    if skipped:
        bad = [[str(k), str(why)] for k, why in skipped]
        atomic_write(path, lambda p: p.write_text(json.dumps(bad)))
    else:
        path.unlink(missing_ok=True)


def write_shard(
    directory: str | Path, shard_id: int, tokens: np.ndarray, labels: np.ndarray | Sequence[int], keys: Sequence[str]
) -> ShardFiles:
    """Write shard ``shard_id``: tokens (n, V, h, w) (or (n, h, w) for one view) or (n, V, t, h, w) for video
    clips, labels (n,), n keys.

    Each file is written atomically, the keys last: a shard is complete exactly when its keys file exists.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim == 3:
        tokens = tokens[:, None]
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if tokens.ndim not in (4, 5) or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens must be integer (n, V, h, w), (n, h, w) or (n, V, t, h, w); got {tokens.dtype} "
                         f"{tokens.shape}")
    if not len(tokens) == len(labels) == len(keys):
        raise ValueError(f"shard {shard_id}: {len(tokens)} token maps, {len(labels)} labels and {len(keys)} keys")
    files = shard_files(directory, shard_id)
    if files.keys.exists():
        files.keys.unlink()  # rewriting a shard: it is incomplete until its keys are back
    dtype = np.dtype(np.int64) if tokens.size and int(tokens.max()) >= 2**31 else np.dtype(np.int32)
    _save_npy(files.tokens, np.ascontiguousarray(tokens, dtype=dtype))
    _save_npy(files.labels, labels)
    atomic_write(files.keys, lambda p: p.write_text(json.dumps([str(k) for k in keys])))
    return files


def remove_shard(directory: str | Path, shard_id: int) -> None:
    """Delete shard ``shard_id``'s files, its keys (the completion mark) first."""
    files = shard_files(directory, shard_id)
    for path in (files.keys, files.tokens, files.labels, skipped_file(directory, shard_id)):
        path.unlink(missing_ok=True)


def shard_is_complete(directory: str | Path, shard_id: int) -> bool:
    files = shard_files(directory, shard_id)
    return all(p.is_file() for p in files)


def read_shard_keys(directory: str | Path, shard_id: int) -> list[str]:
    return json.loads(shard_files(directory, shard_id).keys.read_text())


def read_shard_skipped(directory: str | Path, shard_id: int) -> list[list[str]]:
    """[key, reason] of the images shard ``shard_id`` left out (empty when it left none out)."""
    path = skipped_file(directory, shard_id)
    return json.loads(path.read_text()) if path.is_file() else []


def finalize_index(directory: str | Path, meta: Mapping[str, Any], num_shards: int) -> dict[str, Any]:
    """Verify shards ``0 .. num_shards − 1`` and write ``index.json``; returns the index.

    ``meta`` must hold ``bits`` (K) and may hold anything else worth recording (``tokenizer``, ``size``,
    ``augment``, ``num_classes``, ``source``). Raises ``ValueError`` naming the first problem: a missing shard,
    inconsistent shapes, indices outside [0, 2^K), or a key that appears twice. The index lists the images the
    shards left out (``skipped``: [key, reason] pairs).
    """
    directory = Path(directory)
    bits = int(meta["bits"])
    shards, seen, shape, skipped = [], set(), None, []
    for c in range(num_shards):
        if not shard_is_complete(directory, c):
            raise ValueError(f"{directory}: shard {c} of {num_shards} is missing or incomplete; resume the run")
        files = shard_files(directory, c)
        tok = np.load(files.tokens, mmap_mode="r")
        labels = np.load(files.labels)
        keys = read_shard_keys(directory, c)
        if not len(tok) == len(labels) == len(keys):
            raise ValueError(f"{files.tokens}: {len(tok)} token maps but {len(labels)} labels, {len(keys)} keys")
        if shape is None:
            shape = tuple(tok.shape[1:])
        elif tuple(tok.shape[1:]) != shape:
            raise ValueError(f"{files.tokens}: token maps {tuple(tok.shape[1:])}, earlier shards {shape}")
        if len(tok) and (int(tok.min()) < 0 or int(tok.max()) >= 2**bits):
            raise ValueError(f"{files.tokens}: indices outside [0, 2^{bits})")
        dup = seen.intersection(keys)
        if dup or len(set(keys)) != len(keys):
            raise ValueError(f"{files.keys}: duplicated sample keys, e.g. {sorted(dup)[:3] or keys[:1]}")
        seen.update(keys)
        shards.append({"id": c, "count": len(tok)})
        skipped += read_shard_skipped(directory, c)
    if shape is None or not any(s["count"] for s in shards):
        raise ValueError(f"{directory}: no samples were tokenised" + (
            f"; none of the images could be read, e.g. {skipped[0][0]} ({skipped[0][1]})" if skipped else ""))
    index = {
        "format": FORMAT,
        "version": GRID_VERSION[len(shape) - 1],
        **{k: v for k, v in meta.items() if k not in ("format", "version")},
        "bits": bits,
        "views": shape[0],
        "grid": list(shape[1:]),
        "num_samples": sum(s["count"] for s in shards),
        "shards": shards,
        "skipped": skipped,
    }
    atomic_write(directory / INDEX_NAME, lambda p: p.write_text(json.dumps(index, indent=2) + "\n"))
    return index


def write_classes(directory: str | Path, classes: Sequence[str]) -> Path:
    return atomic_write(Path(directory) / CLASSES_NAME, lambda p: p.write_text(json.dumps(list(classes), indent=1)))


def token_set_tokenizer(directory: str | Path) -> Path | None:
    """The ``save_pretrained`` folder of the tokenizer that made a token set, or None when it holds none."""
    info = read_index(directory).get("tokenizer") or {}
    path = Path(directory) / str(info.get("path", TOKENIZER_DIR)) if isinstance(info, dict) else None
    return path if path is not None and (path / "config.json").is_file() else None


def read_index(directory: str | Path) -> dict[str, Any]:
    """``index.json`` of a token set, checked for format and version; one-line errors otherwise."""
    path = Path(directory) / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{directory}: not a token set (no {INDEX_NAME}); make one with `open-magvit2 tokenize-dataset`"
        )
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ValueError(f"{path}: not an open-magvit2 token index (format {FORMAT!r})")
    if int(index.get("version", 0)) > VERSION:
        raise ValueError(f"{path}: token format version {index['version']} is newer than this package; upgrade")
    return index


class TokenShards:
    """Random access to a token set: ``shards[i]`` → :class:`TokenSample`. Token arrays are memory-mapped."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.index = read_index(self.directory)
        ids = [int(s["id"]) for s in self.index["shards"]]
        self._tokens = self._open_tokens(ids)
        self.labels = np.concatenate([np.load(shard_files(self.directory, c).labels) for c in ids])
        self._ids = ids
        self._offsets = np.cumsum([0] + [len(t) for t in self._tokens])
        self._keys: list[list[str] | None] = [None] * len(ids)
        if self._offsets[-1] != self.index["num_samples"]:
            raise ValueError(f"{self.directory}: index says {self.index['num_samples']} samples, shards hold "
                             f"{self._offsets[-1]}; re-run tokenize-dataset to finish it")

    def _open_tokens(self, ids: list[int]) -> list[np.ndarray]:
        return [np.load(shard_files(self.directory, c).tokens, mmap_mode="r") for c in ids]

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers re-open the memory maps instead of copying them
        return {k: v for k, v in self.__dict__.items() if k != "_tokens"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._tokens = self._open_tokens(self._ids)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    @property
    def bits(self) -> int:
        return int(self.index["bits"])

    @property
    def grid(self) -> tuple[int, ...]:
        """(h, w) of an image set, (t, h, w) of a video set."""
        return tuple(int(g) for g in self.index["grid"])

    @property
    def views(self) -> int:
        return int(self.index["views"])

    @property
    def classes(self) -> list[str] | None:
        path = self.directory / CLASSES_NAME
        return json.loads(path.read_text()) if path.is_file() else None

    @property
    def num_classes(self) -> int | None:
        """``num_classes`` from the index, else the class list's length, else max label + 1 (None if unlabelled)."""
        if self.index.get("num_classes") is not None:
            return int(self.index["num_classes"])
        if self.classes is not None:
            return len(self.classes)
        return int(self.labels.max()) + 1 if len(self.labels) and self.labels.max() >= 0 else None

    def _locate(self, i: int) -> tuple[int, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        i %= len(self)
        s = int(np.searchsorted(self._offsets, i, side="right")) - 1
        return s, i - int(self._offsets[s])

    def key(self, i: int) -> str:
        s, j = self._locate(i)
        if self._keys[s] is None:
            self._keys[s] = read_shard_keys(self.directory, self._ids[s])
        return self._keys[s][j]

    def __getitem__(self, i: int) -> TokenSample:
        s, j = self._locate(i)
        return TokenSample(np.asarray(self._tokens[s][j]), int(self.labels[i]), self.key(i))


    def view(self, i: int, v: int) -> np.ndarray:
        """View ``v`` of sample ``i``: the (h, w) token map ((t, h, w) in a video set), read from the memory map."""
        s, j = self._locate(i)
        return np.asarray(self._tokens[s][j, v])


# ---- training -----------------------------------------------------------------------------------------------------


class TokenDataset(Dataset[Sample]):
    """``dataset[(epoch, index, position)]`` → a :class:`~open_magvit2.data.stream.Sample` whose ``pixels`` field
    holds the int64 (h, w) token map of one view of sample ``index``, (t, h, w) in a video set (its ``key`` is the
    index as a string).

    With several views (flips, ten-crop) the view is drawn from ``sample_rng(seed, AUGMENT, epoch, index)``: a new
    augmentation each epoch, the same one on every resume and for any number of workers.
    """

    def __init__(self, shards: TokenShards, seed: int) -> None:
        self.shards, self.seed = shards, seed

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, item: tuple[int, int, int]) -> Sample:
        epoch, i, position = item
        views = self.shards.views
        v = 0 if views == 1 else int(sample_rng(self.seed, AUGMENT, epoch, i).integers(views))
        tokens = torch.from_numpy(self.shards.view(i, v).astype(np.int64))
        return Sample(str(i), int(self.shards.labels[i]), position, tokens)


def build_token_stream(
    directory: str | Path,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> BatchStream:
    """The training stream of one rank over a token set: ``{"tokens": int64 (B, h, w) LFQ indices ((B, t, h, w) for
    a video set), "label": int64 (B,), "key": list[str]}``, endless, resumable through ``state_dict`` (see
    :class:`BatchStream`)."""
    check_split(batch_size=batch_size, rank=rank, world_size=world_size, seed=seed, num_workers=num_workers)
    shards = TokenShards(directory)
    if len(shards.labels) and int(shards.labels.min()) < 0:
        raise ValueError(f"{directory}: some samples have no class label (−1); the generator is class-conditional, "
                         "so tokenise a folder with one subfolder per class (or shards with .cls files)")
    classes = shards.classes
    source = IndexedSource(
        TokenDataset(shards, seed),
        field="tokens",
        num_samples=len(shards),
        class_names=None if classes is None else tuple(classes),
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        seed=seed,
    )
    return BatchStream(source, num_workers=num_workers, pin_memory=pin_memory)
