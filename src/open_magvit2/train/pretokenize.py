"""``tokenize-dataset``: encode a training set once into token shards (``data/tokens.py``), under torchrun.

The official AR loop re-encodes every image with the frozen tokenizer at every step (spec §5.1); LlamaGen's
``extract_codes_c2i.py`` encodes once and trains on the codes. This does the latter, resumably:

* The samples are listed in a fixed order: an image folder sorted by relative path (class subfolders give the
  labels in sorted order, written to ``classes.json``, spec §6.1), or WebDataset shards in order.
* Chunk c of that list becomes token shard c: ``shard_size`` images of a folder, or the whole tar shard c.
* Rank 0 lists the shards not yet complete; rank r takes every W-th of them. A shard is written atomically with
  its keys file last, so a killed run resumes with any number of ranks and no sample is written twice or lost.
* ``finalize_index`` then checks every shard (counts, shapes, index range, no duplicate key) and writes
  ``index.json``, recording the tokenizer; the tokenizer itself is saved in ``TOKENS_DIR/tokenizer/`` so the
  token set is self-contained (the generator trainer decodes samples with it, ``export`` ships it).

Views (``--augment``): ``none`` = resize shorter side to S + centre crop (the official validation transform);
``flip`` adds its mirror image; ``tencrop`` = LlamaGen's ten-crop: the centre square of side round(1.1·S) after
resizing the shorter side to it, its four corner and centre S×S crops, and their mirror images. Encoding is
float32 (no autocast: LFQ signs near 0 flip under half precision, spec §2.5), so the shards hold exactly the
indices ``tokenizer.encode`` gives.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from open_magvit2.data.images import decode_image, describe, is_shard_source
from open_magvit2.data.sampler import scan_folder
from open_magvit2.data.tokens import finalize_index, read_index, shard_is_complete, write_classes, write_shard
from open_magvit2.distributed import DistContext, barrier, broadcast_object, process_group
from open_magvit2.fileio import atomic_write
from open_magvit2.imaging import IMAGE_SUFFIXES, center_crop, pil_to_tensor, resize_shorter_side
from open_magvit2.tokenizer import ImageTokenizer

AUGMENTS = {"none": 1, "flip": 2, "tencrop": 10}  # → views per image
TENCROP_SCALE = 1.1  # LlamaGen extract_codes_c2i.py: crop_range 1.1
DEFAULT_SHARD_SIZE = 4096
PLAN_NAME = "tokenize.json"
TOKENIZER_DIR = "tokenizer"


# ---- the tokenizer ------------------------------------------------------------------------------------------------


def load_image_tokenizer(checkpoint: str | Path, weights: str = "ema") -> tuple[ImageTokenizer, str]:
    """(tokenizer, which weights) from a tokenizer checkpoint, or the first stage of an AR checkpoint (its raw
    weights, the ones the AR model was trained with, spec §5.11)."""
    from open_magvit2.checkpoints.auto import load_pretrained
    from open_magvit2.generator import ImageGenerator

    if str(checkpoint) == "demo":  # the bundled demo image tokenizer
        return ImageTokenizer.from_pretrained("demo"), "ema (bundled demo)"
    model = load_pretrained(checkpoint, weights=weights)
    if isinstance(model, ImageGenerator):
        if model.tokenizer is None:
            raise ValueError(f"{checkpoint} is a generator without a tokenizer; pass the tokenizer checkpoint")
        return model.tokenizer.eval(), "raw (first stage of an AR checkpoint)"
    if not isinstance(model, ImageTokenizer):
        raise ValueError(f"{checkpoint} holds a {type(model).__name__}; pass an image tokenizer or an AR checkpoint")
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


def list_samples(data: str | Path, shard_size: int) -> SampleList:
    """An image folder (sorted, ``shard_size`` per chunk) or WebDataset shards (one chunk per tar)."""
    if is_shard_source(data):
        from open_magvit2.data.webdataset import count_samples, expand_shards, shard_names

        paths = expand_shards(data)
        chunks = list(zip(paths, shard_names(paths)))
        return SampleList(str(data), chunks, sum(count_samples(p) for p in paths), None, Path(data), shards=True)
    path = Path(data)
    if not path.is_dir():
        raise FileNotFoundError(f"--data {data}: no such image folder or WebDataset shards (.tar files)")
    index = scan_folder(path, IMAGE_SUFFIXES, "image")
    items = list(zip(index.files, index.labels))
    chunks = [items[i : i + shard_size] for i in range(0, len(items), shard_size)]
    return SampleList(str(data), chunks, len(items), index.class_names, path, shards=False)


Item = tuple[Tensor | None, int, str, str | None]  # (views, label, key, why it could not be read)


def _collate(items: list[Item]) -> dict[str, Any]:
    """Runs in the loader workers: a read error travels to the main process, which raises it as one line."""
    bad = next((f"{key}: cannot read the image ({err})" for _, _, key, err in items if err is not None), None)
    if bad is not None:
        return {"error": bad}
    return {"views": torch.stack([v for v, *_ in items]), "labels": [lab for _, lab, _, _ in items],
            "keys": [key for _, _, key, _ in items]}


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
    def __init__(self, path: Path, name: str, size: int, augment: str) -> None:
        self.path, self.name, self.size, self.augment = path, name, size, augment

    def __iter__(self) -> Iterator[Item]:
        from open_magvit2.data.webdataset import IMAGE_KEYS, LABEL_KEYS, iter_tar_samples

        for key, parts in iter_tar_samples(self.path):
            name = f"{self.name}/{key}"
            data = next((parts[e] for e in IMAGE_KEYS if e in parts), None)
            cls = next((parts[e] for e in LABEL_KEYS if e in parts), None)
            try:  # whatever the decoder raises: reported with the sample's name
                if data is None:
                    raise ValueError(f"no image among its files ({', '.join(sorted(parts))})")
                label = 0 if cls is None else int(cls.decode().strip())
                yield image_views(decode_image(data, name), self.size, self.augment), label, name, None
            except Exception as e:
                yield None, 0, name, describe(e)


# ---- the run ------------------------------------------------------------------------------------------------------


@torch.inference_mode()
def _tokenize_chunk(tok: ImageTokenizer, dataset: Dataset, out: Path, c: int, batch_size: int, workers: int) -> None:
    tokens, labels, keys = [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=_collate):
        if "error" in batch:
            raise ValueError(f"{batch['error']}; fix or remove it and rerun (finished shards are kept)")
        views = batch["views"]  # (b, V, 3, S, S) in [−1, 1]
        b, v = views.shape[:2]
        idx = tok.encode(views.flatten(0, 1))  # (b·V, 3, S, S) → (b·V, h, w) int64
        tokens.append(idx.view(b, v, *idx.shape[1:]).cpu().numpy())
        labels.extend(batch["labels"])
        keys.extend(batch["keys"])
    if not tokens:
        raise ValueError(f"chunk {c} of the dataset holds no image; remove empty shards from --data")
    write_shard(out, c, np.concatenate(tokens), labels, keys)


def _prepare(out: Path, plan: dict[str, Any], tok: ImageTokenizer, listing: SampleList) -> list[int]:
    """Rank 0: check or write the plan, save the tokenizer and class names; return the shards still to write."""
    plan_file = out / PLAN_NAME
    if plan_file.is_file():
        old = json.loads(plan_file.read_text())
        diff = [k for k in plan if old.get(k) != plan[k]]
        if diff:
            k = diff[0]
            raise ValueError(f"{out} was started with {k}={old.get(k)!r}, now {k}={plan[k]!r}; rerun with the "
                             "same settings to resume it, or choose a new --output")
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"--output {out} is not empty and holds no tokenize-dataset run; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".shard-*.tmp"):  # temporaries of a run killed mid-write (fileio.atomic_write)
        stale.unlink()
    atomic_write(plan_file, lambda p: p.write_text(json.dumps(plan, indent=2) + "\n"))
    if not (out / TOKENIZER_DIR / "config.json").is_file():
        tok.save_pretrained(out / TOKENIZER_DIR)
    if listing.class_names is not None:
        write_classes(out, listing.class_names)
    return [c for c in range(len(listing.chunks)) if not shard_is_complete(out, c)]


def _chunk_dataset(listing: SampleList, c: int, size: int, augment: str) -> Dataset:
    if listing.shards:
        path, name = listing.chunks[c]
        return _TarChunk(path, name, size, augment)
    return _FolderChunk(listing.root, listing.chunks[c], size, augment)


def _on_main(ctx: DistContext, fn: Any) -> Any:
    """Run ``fn`` on rank 0 and hand its result (or its user error) to every rank."""
    result, error = None, None
    if ctx.is_main:
        try:
            result = fn()
        except (ValueError, FileNotFoundError) as e:
            error = e
    result, error = broadcast_object((result, error), ctx)
    if error is not None:
        raise error
    return result


def tokenize_dataset(
    checkpoint: str | Path,
    data: str | Path,
    size: int,
    output: str | Path,
    *,
    augment: str = "none",
    batch_size: int = 32,
    shard_size: int = DEFAULT_SHARD_SIZE,
    weights: str = "ema",
    device: str | None = None,
    num_workers: int = 2,
) -> dict[str, Any]:
    """Encode ``data`` into token shards in ``output`` (module docstring); returns the verified index.

    Call it on every rank under torchrun, or in one process. A second call on a partial output resumes it;
    on a complete one it only verifies it again.
    """
    if augment not in AUGMENTS:
        raise ValueError(f"--augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if batch_size < 1 or shard_size < 1 or num_workers < 0:
        raise ValueError("batch_size and shard_size must be >= 1 and num_workers >= 0")
    with process_group(device) as ctx:
        return _run(ctx, checkpoint, data, size, Path(output), augment, batch_size, shard_size, weights, num_workers)


def _run(ctx: DistContext, checkpoint: str | Path, data: str | Path, size: int, out: Path, augment: str,
         batch_size: int, shard_size: int, weights: str, num_workers: int) -> dict[str, Any]:
    tok, which = load_image_tokenizer(checkpoint, weights)
    if size % tok.config.spatial_factor:
        raise ValueError(f"--size {size} must be a multiple of {tok.config.spatial_factor}, the tokenizer's factor")
    tok.to(ctx.device)
    listing = list_samples(data, shard_size)
    source = str(Path(checkpoint).resolve()) if Path(checkpoint).exists() else str(checkpoint)  # or a hub name
    tok_info = {"source": source, "weights": which, "model_type": tok.model_type, "path": TOKENIZER_DIR,
                "config": tok.config.to_dict(), "sha256": weights_sha256(tok) if ctx.is_main else None}
    plan = {"source": str(Path(data).resolve()) if Path(data).exists() else str(data), "size": size,
            "augment": augment, "shard_size": shard_size, "num_samples": listing.num_samples,
            "num_shards": len(listing.chunks), "tokenizer": tok_info}
    pending = _on_main(ctx, lambda: _prepare(out, plan, tok, listing))
    mine = pending[ctx.rank :: ctx.world_size]
    if ctx.is_main:
        done = len(listing.chunks) - len(pending)
        print(f"tokenize-dataset: {listing.num_samples} images in {len(listing.chunks)} shards, {done} already done;"
              f" {ctx.world_size} rank(s)", file=sys.stderr)
    workers = min(num_workers, 1) if listing.shards else num_workers  # a tar is read sequentially, by one worker
    for i, c in enumerate(mine):
        _tokenize_chunk(tok, _chunk_dataset(listing, c, size, augment), out, c, batch_size, workers)
        if ctx.is_main:
            print(f"  rank 0: shard {c} ({i + 1}/{len(mine)} of this rank)", file=sys.stderr)
    barrier(ctx)
    meta = {"bits": tok.config.z_channels, "tokenizer": tok_info, "size": size, "augment": augment,
            "source": plan["source"], "num_classes": None if listing.class_names is None else len(listing.class_names)}
    return _on_main(ctx, lambda: finalize_index(out, meta, len(listing.chunks)))


def token_set_tokenizer(directory: str | Path) -> Path | None:
    """The ``save_pretrained`` folder of the tokenizer that made a token set, or None when it holds none."""
    info = read_index(directory).get("tokenizer") or {}
    path = Path(directory) / str(info.get("path", TOKENIZER_DIR))
    return path if (path / "config.json").is_file() else None
