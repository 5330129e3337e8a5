"""The one writer of token sets (``tokens.py``): ``tokenize-dataset``, and ``tokenize --shards``, which calls it.

The official AR loop re-encodes every image with the frozen tokenizer at every step (docs/design.md O-30); LlamaGen's
``extract_codes_c2i.py`` encodes once and trains on the codes. This does the latter, resumably, under torchrun:

* The samples are listed in a fixed order: an image folder sorted by relative path (class subfolders give the
  labels in sorted order, written to ``classes.json``), or WebDataset shards in order.
* Chunk c of that list becomes token shard c: ``shard_size`` images of a folder, or the whole tar shard c.
* Rank 0 lists the shards still to write; rank r takes every W-th of them. A shard is written atomically with its
  keys file last, so a killed run resumes with any number of ranks and no sample is written twice or lost.
* A finished shard is kept when it holds exactly its chunk's samples (the same keys; for a tar, all of its
  samples) and left none out; any other shard is written again. So a rerun after an image was fixed or removed
  redoes only the shards whose chunk changed, and the shards before them are kept.
* An image that cannot be read is skipped, counted and named at the end (the batch-job rule: the set is finished
  without it, the command exits non-zero, ``strict=True`` stops at the first one instead). Its shard records it
  (``shard-*.skipped.json``), so a rerun tries it again.
* ``finalize_index`` then checks every shard (counts, shapes, index range, no duplicate key) and writes
  ``index.json``, recording the tokenizer; the tokenizer itself is saved in ``TOKENS_DIR/tokenizer/`` so the
  token set is self-contained (the generator trainer decodes samples with it, ``export`` ships it).

**Videos** (when the checkpoint is a video tokenizer): a folder of video files (class sub-folders,
UCF-101's ``Class/clip.avi``) or one video file. Each video is decoded once at its native frame rate with
``data.video_io.iter_frames`` (shorter side to ``size``, PIL bilinear with antialiasing, centre crop ``size``², the
frames ``data.clips.read_clip`` returns for a centred clip) and cut into clips of ``frames`` frames starting every
``stride`` frames (0, stride, 2·stride, … while the clip fits); sample keys are ``<relative path>#<first frame>``.
A chunk is ``shard_size`` videos; a video shorter than ``frames`` is skipped like an unreadable image (the batch
rule), and when no video can give a clip the run stops before it writes anything. Shards hold (n, 1, t, h, w)
grids, and ``index.json`` says ``grid: [t, h, w]``, ``frames`` and ``stride`` (tokens.py, version 2).

Views (``augment``): ``none`` = resize shorter side to S + centre crop (the official validation transform);
``flip`` adds its mirror image; ``tencrop`` = LlamaGen's ten-crop: the centre square of side round(1.1·S) after
resizing the shorter side to it, its four corner and centre S×S crops, and their mirror images. Encoding is
float32 (no autocast: LFQ signs near 0 flip under half precision, docs/design.md O-15), so the shards hold exactly the
indices ``tokenizer.encode`` gives.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from open_magvit2.checkpoints.hub import check_image_size, native_size
from open_magvit2.data.images import is_shard_source
from open_magvit2.data.sampler import scan_folder
from open_magvit2.data.stream import describe
from open_magvit2.data.tokens import (
    INDEX_NAME,
    TOKENIZER_DIR,
    finalize_index,
    read_shard_keys,
    read_shard_skipped,
    remove_shard,
    shard_files,
    shard_is_complete,
    write_classes,
    write_shard,
    write_skipped,
)
from open_magvit2.data.video_io import VIDEO_SUFFIXES, iter_frames, probe_video, uint8_to_video
from open_magvit2.data.webdataset import (
    IMAGE_KEYS,
    LABEL_KEYS,
    count_samples,
    expand_shards,
    iter_tar_samples,
    shard_names,
)
from open_magvit2.distributed import DistContext, barrier, broadcast_object, process_group
from open_magvit2.fileio import atomic_write
from open_magvit2.generator import ImageGenerator
from open_magvit2.imaging import IMAGE_SUFFIXES, center_crop, decode_image, pil_to_tensor, resize_shorter_side
from open_magvit2.progress import progress
from open_magvit2.registry import load_pretrained
from open_magvit2.tokenizer import ImageTokenizer, VideoTokenizer
from open_magvit2.tokenizer.video import DEFAULT_WINDOW

AUGMENTS = {"none": 1, "flip": 2, "tencrop": 10}  # → views per image
LABELS = ("folders", "none")  # class labels from the folders (or the tars' .cls files), or none (−1)
TENCROP_SCALE = 1.1  # LlamaGen extract_codes_c2i.py: crop_range 1.1
DEFAULT_SHARD_SIZE = 4096  # images per token shard
DEFAULT_VIDEO_SHARD_SIZE = 256  # videos per token shard (UCF-101: ~10 clips each)
DEFAULT_BATCH_SIZE = 32  # images per encoder call
DEFAULT_VIDEO_BATCH_SIZE = 4  # clips per encoder call
PLAN_NAME = "tokenize.json"
RESUMABLE = ("num_samples", "num_shards")  # plan entries a rerun may change (the data's files): judged per shard


# ---- the tokenizer ------------------------------------------------------------------------------------------------


def load_image_tokenizer(checkpoint: str | Path, weights: str = "ema") -> tuple[ImageTokenizer, str]:
    """(tokenizer, which weights) from a tokenizer checkpoint, or the first stage of an AR checkpoint (its raw
    weights, the ones the AR model was trained with: docs/design.md O-44)."""
    tok, which = load_dataset_tokenizer(checkpoint, weights, video=False)
    return cast(ImageTokenizer, tok), which  # video=False: an image tokenizer or an AR model's first stage


def load_dataset_tokenizer(
    checkpoint: str | Path, weights: str = "ema", *, video: bool = True
) -> tuple[ImageTokenizer | VideoTokenizer, str]:
    """:func:`load_image_tokenizer`, or (``video``) a video tokenizer, which makes a video token set."""
    if str(checkpoint) == "demo":  # the bundled demo image tokenizer
        return ImageTokenizer.from_pretrained("demo"), "ema (bundled demo)"
    model = load_pretrained(checkpoint, weights=weights)
    if isinstance(model, ImageGenerator):
        if model.tokenizer is None:
            raise ValueError(f"{checkpoint} is a generator without a tokenizer; pass the tokenizer checkpoint")
        return model.tokenizer.eval(), "raw (first stage of an AR checkpoint)"
    if video and isinstance(model, VideoTokenizer):
        return model.eval(), weights
    if not isinstance(model, ImageTokenizer):
        what = "an image or video tokenizer" if video else "an image tokenizer"
        raise ValueError(f"{checkpoint} holds a {type(model).__name__}; pass {what} or an AR checkpoint")
    return model.eval(), weights


def weights_sha256(model: torch.nn.Module) -> str:
    """A fingerprint of a model's weights (state-dict names and float32 bytes, in key order)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


# ---- samples and views --------------------------------------------------------------------------------------------


def image_views(img: Image.Image, size: int, augment: str) -> Tensor:
    """PIL image → (V, 3, size, size) float32 in [−1, 1], the views of ``augment`` (module docstring)."""
    if augment == "tencrop":  # LlamaGen: a centre square of 1.1·size, then TenCrop(size)
        big = round(TENCROP_SCALE * size)
        img = center_crop(resize_shorter_side(img, big), big)
        w, h = img.size
        lefts_tops = [(0, 0), (w - size, 0), (0, h - size), (w - size, h - size)]  # torchvision five_crop order
        crops = [img.crop((x, y, x + size, y + size)) for x, y in lefts_tops] + [center_crop(img, size)]
    else:
        crops = [center_crop(resize_shorter_side(img, size), size)]
    if augment != "none":
        crops += [c.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for c in crops]
    return torch.cat([pil_to_tensor(c) for c in crops])


@dataclass(frozen=True)
class SampleList:
    """The dataset in its fixed order, cut into chunks (one per token shard)."""

    source: str
    chunks: list[Any]  # folder: lists of (relative path, label); shards: (tar path, shard name) pairs
    num_samples: int
    class_names: tuple[str, ...] | None
    root: Path
    shards: bool  # WebDataset shards (read sequentially) rather than a folder
    videos: bool = False  # video files (chunks: lists of (relative path, label)), cut into clips


def _holds(folder: Path, suffixes: Iterable[str]) -> bool:
    """Whether any file under ``folder`` has one of ``suffixes`` (lower case)."""
    return any(p.suffix.lower() in suffixes for p in folder.rglob("*") if p.is_file())


def list_samples(data: str | Path, shard_size: int, labels: str = "folders") -> SampleList:
    """An image folder (sorted, ``shard_size`` per chunk) or WebDataset shards (one chunk per tar). ``labels``:
    ``folders`` (class subfolders, or the tars' ``.cls`` files) or ``none`` (every label −1)."""
    if is_shard_source(data):
        paths = expand_shards(data)
        chunks = list(zip(paths, shard_names(paths)))
        return SampleList(str(data), chunks, sum(count_samples(p) for p in paths), None, Path(data), shards=True)
    path = Path(data)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        raise ValueError(f"{data} is a video; the checkpoint is an image tokenizer: pass a video tokenizer (e.g. -c "
                         "video_128_262144) to tokenize videos")
    if path.is_file():
        raise ValueError(f"{data} is a file; pass the folder that holds the images, or WebDataset .tar shards")
    if not path.is_dir():
        raise FileNotFoundError(f"{data}: no such image folder or WebDataset shards (.tar files)")
    if not _holds(path, IMAGE_SUFFIXES) and _holds(path, VIDEO_SUFFIXES):
        raise ValueError(f"--data {data} holds videos, not images; the checkpoint is an image tokenizer: pass a video "
                         "tokenizer (e.g. -c video_128_262144) to tokenize videos")
    index = scan_folder(path, IMAGE_SUFFIXES, "image")
    items = list(zip(index.files, index.labels if labels == "folders" else [-1] * len(index.files)))
    chunks = [items[i : i + shard_size] for i in range(0, len(items), shard_size)]
    classes = index.class_names if labels == "folders" else None
    return SampleList(str(data), chunks, len(items), classes, path, shards=False)


def list_videos(data: str | Path, shard_size: int, labels: str = "folders") -> SampleList:
    """A folder of videos (sorted, ``shard_size`` per chunk; class sub-folders give the labels, as image folders) or
    one video file (a flat folder of one: label 0, the class named after its folder)."""
    path = Path(data)
    if is_shard_source(data):
        raise ValueError(f"--data {data}: WebDataset shards hold images; the checkpoint is a video tokenizer: pass a "
                         "folder of videos (CLASS/*.avi|mp4) or one video file")
    if path.is_file():
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            what = "an image" if path.suffix.lower() in IMAGE_SUFFIXES else "not a video file"
            raise ValueError(f"{data} is {what}; the checkpoint is a video tokenizer: pass a folder of videos "
                             f"({' '.join(VIDEO_SUFFIXES)}) or one video file")
        files, file_labels, classes = (path.name,), (0,), (path.parent.resolve().name,)
        root = path.parent
    elif not path.is_dir():
        raise FileNotFoundError(f"{data}: no such video folder or video file")
    elif not _holds(path, VIDEO_SUFFIXES) and _holds(path, IMAGE_SUFFIXES):
        raise ValueError(f"--data {data} holds images, not videos; the checkpoint is a video tokenizer: pass an image "
                         "tokenizer to tokenize images, or a folder of videos (CLASS/*.avi|mp4)")
    else:
        index = scan_folder(path, VIDEO_SUFFIXES, "video")
        files, file_labels, classes, root = index.files, index.labels, index.class_names, path
    items = list(zip(files, file_labels if labels == "folders" else [-1] * len(files)))
    chunks = [items[i : i + shard_size] for i in range(0, len(items), shard_size)]
    return SampleList(str(data), chunks, len(items), classes if labels == "folders" else None, root, shards=False,
                      videos=True)


Item = tuple[Tensor | None, int, str, str | None]  # (views, label, key, why it could not be read)


def _collate(items: list[Item]) -> list[Item]:
    return items


class _FolderChunk(Dataset):
    def __init__(self, root: Path, items: list[tuple[str, int]], size: int, augment: str) -> None:
        self.root, self.items, self.size, self.augment = root, items, size, augment

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, j: int) -> Item:
        key, label = self.items[j]
        try:  # whatever the decoder raises: reported with the file's name
            return image_views(decode_image(self.root / key, key), self.size, self.augment), label, key, None
        except Exception as e:
            return None, label, key, describe(e)


class _TarChunk(IterableDataset):
    def __init__(self, path: Path, name: str, size: int, augment: str, labels: str) -> None:
        self.path, self.name, self.size, self.augment, self.labels = path, name, size, augment, labels

    def __iter__(self) -> Iterator[Item]:
        for key, parts in iter_tar_samples(self.path):
            name = f"{self.name}/{key}"
            data = next((parts[e] for e in IMAGE_KEYS if e in parts), None)
            cls = next((parts[e] for e in LABEL_KEYS if e in parts), None)
            try:  # whatever the decoder raises: reported with the sample's name
                if data is None:
                    raise ValueError(f"no image among its files ({', '.join(sorted(parts))})")
                label = -1 if self.labels == "none" else 0 if cls is None else int(cls.decode().strip())
                yield image_views(decode_image(data, name), self.size, self.augment), label, name, None
            except Exception as e:
                yield None, 0, name, describe(e)


@dataclass(frozen=True)
class ClipCut:
    """How videos become clips: ``frames`` per clip, a clip starting every ``stride`` frames, ``size``² pixels;
    ``multiple``: the tokenizer's spatial factor (``iter_frames``' crop rule, unused with a square crop)."""

    frames: int
    stride: int
    size: int
    multiple: int

    def starts(self, num_frames: int) -> range:
        """First frames of the clips of a video of ``num_frames`` frames (empty when it is shorter than a clip)."""
        return range(0, num_frames - self.frames + 1, self.stride)

    def too_short(self, num_frames: int) -> str:
        return f"the video has {num_frames} frames, fewer than --frames {self.frames}"


VideoItem = tuple[Tensor | None, range, int, str, str | None]  # (uint8 (3, N, S, S) frames, clip starts, label, key,
# why it gives no clip)


def clip_key(video: str, start: int) -> str:
    """The sample key of the clip of ``video`` (its relative path) that starts at frame ``start``."""
    return f"{video}#{start}"


def clip_video(key: str) -> str:
    """The video (relative path) of a clip's sample key."""
    return key.rsplit("#", 1)[0]


class _VideoChunk(Dataset):
    def __init__(self, root: Path, items: list[tuple[str, int]], cut: ClipCut) -> None:
        self.root, self.items, self.cut = root, items, cut

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, j: int) -> VideoItem:
        key, label = self.items[j]
        cut = self.cut
        try:  # whatever the decoder raises: reported with the file's name
            frames = list(iter_frames(self.root / key, size=cut.size, crop=cut.size, multiple=cut.multiple))
            starts = cut.starts(len(frames))
            if not starts:
                raise ValueError(cut.too_short(len(frames)))
            return torch.stack(frames[: starts[-1] + cut.frames], dim=1), starts, label, key, None
        except ImportError:  # PyAV missing: the install hint, not a bad file
            raise
        except Exception as e:
            reason = str(e) if isinstance(e, ValueError) else describe(e)
            return None, range(0), label, key, reason


def _chunk_dataset(listing: SampleList, c: int, size: int, augment: str, labels: str) -> Dataset:
    if listing.shards:
        path, name = listing.chunks[c]
        return _TarChunk(path, name, size, augment, labels)
    return _FolderChunk(listing.root, listing.chunks[c], size, augment)


def _shard_is_current(out: Path, listing: SampleList, c: int) -> bool:
    """Shard c is finished, left nothing out and holds exactly chunk c's samples (module docstring)."""
    if not shard_is_complete(out, c) or read_shard_skipped(out, c):
        return False
    keys = read_shard_keys(out, c)
    if listing.videos:  # every video of the chunk gave its clips, in order
        return list(dict.fromkeys(clip_video(k) for k in keys)) == [key for key, _ in listing.chunks[c]]
    if listing.shards:
        path, name = listing.chunks[c]
        return len(keys) == count_samples(path) and all(k.startswith(f"{name}/") for k in keys)
    return keys == [key for key, _ in listing.chunks[c]]


# ---- the run ------------------------------------------------------------------------------------------------------


@torch.inference_mode()
def _tokenize_chunk(tok: ImageTokenizer | VideoTokenizer, dataset: Dataset, out: Path, c: int, grid: tuple[int, ...], *,
                    batch_size: int, workers: int, strict: bool) -> None:
    tokens, labels, keys, skipped = [], [], [], []
    for items in DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_collate):
        for _, _, key, err in items:
            if err is None:
                continue
            if strict:
                raise ValueError(f"{key}: cannot read the image ({err}); fix or remove it and rerun (finished "
                                 "shards are kept)")
            skipped.append((key, err))
        good = [item for item in items if item[3] is None]
        if not good:
            continue
        views = torch.stack([v for v, *_ in good])  # type: ignore[misc]  # (b, V, 3, S, S) in [−1, 1]
        b, v = views.shape[:2]
        idx = tok.encode(views.flatten(0, 1))  # (b·V, 3, S, S) → (b·V, h, w) int64
        tokens.append(idx.view(b, v, *idx.shape[1:]).cpu().numpy())
        labels.extend(label for _, label, _, _ in good)
        keys.extend(key for _, _, key, _ in good)
    if not tokens and not skipped:
        raise ValueError(f"chunk {c} of the dataset holds no image; remove empty shards from --data")
    remove_shard(out, c)  # incomplete from here until write_shard writes its keys
    write_skipped(out, c, skipped)
    write_shard(out, c, np.concatenate(tokens) if tokens else np.zeros((0, *grid), np.int64), labels, keys)


@torch.inference_mode()
def _tokenize_video_chunk(tok: VideoTokenizer, videos: Iterable[VideoItem], out: Path, c: int,
                          grid: tuple[int, ...], cut: ClipCut, *, batch_size: int, strict: bool) -> None:
    """Chunk c's videos (decoded, in order) → shard c: their clips, ``batch_size`` per encoder call."""
    tokens: list[np.ndarray] = []
    labels: list[int] = []
    keys: list[str] = []
    skipped: list[tuple[str, str]] = []
    batch: list[Tensor] = []
    device = next(tok.parameters()).device

    def flush() -> None:
        idx = tok.encode(uint8_to_video(torch.stack(batch)).to(device))  # (b, 3, T, S, S) → (b, t, h, w) int64
        tokens.append(idx[:, None].cpu().numpy())  # one view
        batch.clear()

    for frames, starts, label, key, err in videos:
        if err is not None:
            if strict:
                raise ValueError(f"{key}: {err}; fix or remove it and rerun (finished shards are kept)")
            skipped.append((key, err))
            continue
        for start in starts:
            batch.append(frames[:, start : start + cut.frames])  # type: ignore[index]
            labels.append(label)
            keys.append(clip_key(key, start))
            if len(batch) == batch_size:
                flush()
    if batch:
        flush()
    remove_shard(out, c)  # incomplete from here until write_shard writes its keys
    write_skipped(out, c, skipped)
    write_shard(out, c, np.concatenate(tokens) if tokens else np.zeros((0, *grid), np.int64), labels, keys)


def _video_stream(listing: SampleList, chunks: list[int], cut: ClipCut, workers: int
                  ) -> Iterator[tuple[int, VideoItem]]:
    """(chunk, decoded video) for the videos of ``chunks``, in order; ``workers`` processes decode."""
    for c in chunks:
        loader = DataLoader(_VideoChunk(listing.root, listing.chunks[c], cut), batch_size=1, num_workers=workers,
                            collate_fn=_collate)
        for items in loader:
            yield c, items[0]


def probe_lengths(listing: SampleList) -> list[int | str]:
    """Each video's frame count as its container states it (0: unknown), or why it cannot be opened."""
    lengths: list[int | str] = []
    for key, _ in (item for chunk in listing.chunks for item in chunk):
        try:
            info = probe_video(listing.root / key)
            lengths.append(info.num_frames or (round(info.duration * info.fps) if info.duration else 0))
        except ImportError:
            raise
        except Exception as e:
            lengths.append(str(e) if isinstance(e, (ValueError, OSError)) else describe(e))
    return lengths


def check_clips(listing: SampleList, lengths: list[int | str], cut: ClipCut, step: int) -> int:
    """The number of clips the containers promise; ``ValueError`` before anything is written when no video can
    give one (every video too short, or unreadable). ``step``: the tokenizer's frame step (1 + k·step frames)."""
    keys = [key for chunk in listing.chunks for key, _ in chunk]
    usable = [n for n in lengths if isinstance(n, int) and (n == 0 or n >= cut.frames)]
    if usable:
        return sum(len(cut.starts(n)) if n else 1 for n in usable)
    longest = max((n for n in lengths if isinstance(n, int)), default=0)
    fit = 1 + (longest - 1) // step * step if longest else 0
    hint = f"; pass --frames {fit} or fewer" if fit >= 1 + step else ""
    if len(keys) == 1:
        n = lengths[0]
        if isinstance(n, str):  # the reader's message names the file
            raise ValueError(n)
        raise ValueError(f"{listing.root / keys[0]}: {cut.too_short(n)}{hint}")
    if not any(isinstance(n, int) for n in lengths):
        raise ValueError(f"none of the {len(keys)} videos under {listing.source} can be read, e.g. {keys[0]} "
                         f"({lengths[0]})")
    bad = next(((k, n) for k, n in zip(keys, lengths) if isinstance(n, str)), None)
    unreadable = "" if bad is None else f" or cannot be read (e.g. {bad[0]}: {bad[1]})"
    raise ValueError(f"every video under {listing.source} is shorter than --frames {cut.frames}{unreadable} (the "
                     f"longest has {longest} frames){hint}")


def _prepare(out: Path, plan: dict[str, Any], tok: ImageTokenizer | VideoTokenizer, listing: SampleList) -> list[int]:
    """Rank 0: check or write the plan, save the tokenizer and class names; return the shards still to write."""
    plan_file = out / PLAN_NAME
    if plan_file.is_file():
        old = {"labels": "folders", **json.loads(plan_file.read_text())}  # runs from before --labels: folders
        diff = [k for k in plan if k not in RESUMABLE and old.get(k) != plan[k]]
        if diff:
            k = diff[0]
            raise ValueError(f"{out} was started with {k}={old.get(k)!r}, now {k}={plan[k]!r}; rerun with the "
                             "same settings to resume it, or choose a new --output")
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"--output {out} is not empty and holds no tokenize-dataset run; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".shard-*.tmp"):  # temporaries of a run killed mid-write (fileio.atomic_write)
        stale.unlink()
    c = len(listing.chunks)
    while shard_files(out, c).tokens.exists() or shard_files(out, c).keys.exists():  # the data shrank since
        remove_shard(out, c)
        c += 1
    pending = [c for c in range(len(listing.chunks)) if not _shard_is_current(out, listing, c)]
    if pending or c > len(listing.chunks):
        (out / INDEX_NAME).unlink(missing_ok=True)  # written again at the end, over the shards as they will be
    atomic_write(plan_file, lambda p: p.write_text(json.dumps(plan, indent=2) + "\n"))
    if not (out / TOKENIZER_DIR / "config.json").is_file():
        tok.save_pretrained(out / TOKENIZER_DIR)
    if listing.class_names is not None:
        write_classes(out, listing.class_names)
    return pending


def _on_main(ctx: DistContext, fn: Any) -> Any:
    """Run ``fn`` on rank 0 and hand its result (or its user error) to every rank."""
    result, error = None, None
    if ctx.is_main:
        try:
            result = fn()
        except (ValueError, OSError) as e:
            error = e
    result, error = broadcast_object((result, error), ctx)
    if error is not None:
        raise error
    return result


def tokenize_dataset(
    checkpoint: str | Path,
    data: str | Path,
    size: int | None,
    output: str | Path,
    *,
    augment: str = "none",
    batch_size: int | None = None,
    shard_size: int | None = None,
    weights: str = "ema",
    device: str | None = None,
    num_workers: int = 2,
    labels: str = "folders",
    strict: bool = False,
    verbose: bool = True,
    frames: int | None = None,
    stride: int | None = None,
) -> dict[str, Any]:
    """Encode ``data`` into token shards in ``output`` (module docstring); returns the verified index, whose
    ``skipped`` lists the [key, reason] of the images (videos) that could not be read (the caller reports them).

    ``size``: the square crop in pixels (None: the tokenizer's native size, 16 × its factor). ``labels``:
    ``folders`` or ``none`` (−1). ``strict``: stop at the first unreadable image instead of skipping it. Call it
    on every rank under torchrun, or in one process. A second call on a partial output resumes it; on a complete
    one it only verifies it again. ``batch_size`` / ``shard_size``: images (clips) per encoder call and images
    (videos) per shard; None: 32 images or 4 clips, 4096 images or 256 videos.

    With a video tokenizer ``data`` is a folder of videos or one video, cut into clips of ``frames`` frames (None:
    17, the released model's clip) starting every ``stride`` frames (None: ``frames``, clips that do not overlap).
    """
    if augment not in AUGMENTS:
        raise ValueError(f"--augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if labels not in LABELS:
        raise ValueError(f"--labels must be one of {', '.join(LABELS)}, got {labels!r}")
    for name, value in (("batch-size", batch_size), ("shard-size", shard_size), ("frames", frames),
                        ("stride", stride)):
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    with process_group(device) as ctx:
        return _run(ctx, checkpoint, data, size, Path(output), augment=augment, batch_size=batch_size,
                    shard_size=shard_size, weights=weights, num_workers=num_workers, labels=labels, strict=strict,
                    verbose=verbose, frames=frames, stride=stride)


def _video_cut(tok: VideoTokenizer, size: int, frames: int | None, stride: int | None, augment: str) -> ClipCut:
    """The clips of a video token set, checked against the tokenizer's frame rule (1 + k·step frames)."""
    if augment != "none":
        raise ValueError(f"--augment {augment} makes views of images; a video token set holds one view per clip "
                         "(drop --augment)")
    frames = DEFAULT_WINDOW if frames is None else frames
    step = tok.frame_step
    if (frames - 1) % step:
        lower = 1 + (frames - 1) // step * step
        raise ValueError(f"--frames {frames} does not fit this video tokenizer: a clip has 1 + k·{step} frames "
                         f"({step} = 2^{tok.config.num_temporal_downsamples} temporal downsamplings); pass --frames "
                         f"{lower} or {lower + step}")
    return ClipCut(frames, frames if stride is None else stride, size, tok.config.spatial_factor)


def _run(ctx: DistContext, checkpoint: str | Path, data: str | Path, size: int | None, out: Path, *, augment: str,
         batch_size: int | None, shard_size: int | None, weights: str, num_workers: int, labels: str, strict: bool,
         verbose: bool, frames: int | None, stride: int | None) -> dict[str, Any]:
    # everything is checked before the first write: the tokenizer, the size, the clips, the data
    tok, which = load_dataset_tokenizer(checkpoint, weights)
    factor = tok.config.spatial_factor
    size = check_image_size(native_size(factor) if size is None else size, factor)
    cut, expected = None, 0
    if isinstance(tok, VideoTokenizer):
        cut = _video_cut(tok, size, frames, stride, augment)
        grid: tuple[int, ...] = (1, tok.latent_frames(cut.frames), size // factor, size // factor)
        shard_size = shard_size or DEFAULT_VIDEO_SHARD_SIZE
        listing = list_videos(data, shard_size, labels)
        lengths = _on_main(ctx, lambda: probe_lengths(listing))
        expected = check_clips(listing, lengths, cut, tok.frame_step)
    else:
        if frames is not None or stride is not None:
            raise ValueError(f"--frames and --stride cut videos into clips, but {checkpoint} is an image tokenizer; "
                             "pass a video tokenizer, or drop them")
        grid = (AUGMENTS[augment], size // factor, size // factor)
        shard_size = shard_size or DEFAULT_SHARD_SIZE
        listing = list_samples(data, shard_size, labels)
    tok.to(ctx.device)
    source = str(Path(checkpoint).resolve()) if Path(checkpoint).exists() else str(checkpoint)  # or a hub name
    tok_info = {"source": source, "weights": which, "model_type": tok.model_type, "path": TOKENIZER_DIR,
                "config": tok.config.to_dict(), "sha256": weights_sha256(tok) if ctx.is_main else None}
    data_source = str(Path(data).resolve()) if Path(data).exists() else str(data)
    if cut is None:
        plan = {"source": data_source, "size": size, "augment": augment, "labels": labels, "shard_size": shard_size,
                "num_samples": listing.num_samples, "num_shards": len(listing.chunks), "tokenizer": tok_info}
    else:
        plan = {"source": data_source, "size": size, "frames": cut.frames, "stride": cut.stride, "labels": labels,
                "shard_size": shard_size, "num_samples": listing.num_samples, "num_shards": len(listing.chunks),
                "tokenizer": tok_info}
    pending = _on_main(ctx, lambda: _prepare(out, plan, tok, listing))
    mine = pending[ctx.rank :: ctx.world_size]
    say = ctx.is_main and verbose
    if say:
        done = len(listing.chunks) - len(pending)
        what = "images" if cut is None else f"videos (about {expected} clips)"
        print(f"{listing.num_samples} {what} in {len(listing.chunks)} token shards, {done} already done; "
              f"{ctx.world_size} rank(s)", file=sys.stderr)
    if isinstance(tok, VideoTokenizer) and cut is not None:
        videos = progress(_video_stream(listing, mine, cut, num_workers), sum(len(listing.chunks[c]) for c in mine),
                          "videos", enabled=say, unit="video")
        for c, group in itertools.groupby(videos, key=lambda item: item[0]):  # one shard per chunk, in order
            _tokenize_video_chunk(tok, (video for _, video in group), out, c, grid, cut,
                                  batch_size=batch_size or DEFAULT_VIDEO_BATCH_SIZE, strict=strict)
    else:
        workers = min(num_workers, 1) if listing.shards else num_workers  # a tar is read sequentially, by one worker
        for i, c in enumerate(mine):
            _tokenize_chunk(tok, _chunk_dataset(listing, c, size, augment, labels), out, c, grid,
                            batch_size=batch_size or DEFAULT_BATCH_SIZE, workers=workers, strict=strict)
            if say:
                print(f"  rank 0: shard {c} ({i + 1}/{len(mine)} of this rank)", file=sys.stderr)
    barrier(ctx)
    num_classes = None if listing.class_names is None else len(listing.class_names)
    meta: dict[str, Any] = {"bits": tok.config.z_channels, "tokenizer": tok_info, "size": size}
    if cut is None:
        meta.update(augment=augment, source=plan["source"], num_classes=num_classes)
    else:
        meta.update(frames=cut.frames, stride=cut.stride, source=plan["source"], num_classes=num_classes,
                    num_videos=listing.num_samples)
    return _on_main(ctx, lambda: finalize_index(out, meta, len(listing.chunks)))
