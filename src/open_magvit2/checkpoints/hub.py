"""Our own checkpoint format and where checkpoints come from (docs/checkpoints.md).

A ``save_pretrained`` directory holds ``config.json`` (``{"model_type", "format_version", "config"}``) and
``model.safetensors``. :func:`resolve_pretrained` turns what a user passes into a local path, in this order:

1. an existing local file or folder, as is;
2. a released name (``imagenet_256_L``, ``AR_256_B``, ... see :data:`RELEASES`): the official ``.ckpt`` from its
   TencentARC hub repo, through the Hugging Face cache (a cached file is used without contacting the hub);
3. anything that looks like a path (a suffix such as ``.ckpt``, or a leading ``.``, ``/`` or ``~``): "no such
   file", never a hub call (an offline node would otherwise wait for retries);
4. ``owner/name``: a ``save_pretrained`` folder on the hub; ``hf://owner/name/path/file.ckpt``: one file there.

Works with ``huggingface_hub`` 0.20 and later (errors are imported from ``huggingface_hub.utils``, which every
release since has; ``huggingface_hub.errors`` only gained them in 0.25).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from open_magvit2.checkpoints.official import damaged_file, first_sentence
from open_magvit2.fileio import atomic_write

# what a checkpoint may hold: the ``model_type`` every checkpoint records (``registry.py`` maps each to its class)
MODEL_TYPES = ("image_tokenizer", "video_tokenizer", "image_generator", "video_generator")

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_pretrained_dir(
    directory: str | Path,
    model_type: str,
    config: Mapping[str, Any],
    state_dict: Mapping[str, Tensor],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` atomically into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    doc = {"model_type": model_type, "format_version": FORMAT_VERSION, "config": dict(config)}
    if metadata:
        doc["metadata"] = dict(metadata)
    atomic_write(directory / CONFIG_NAME, lambda p: p.write_text(json.dumps(doc, indent=2) + "\n"))
    return directory


def load_pretrained_dir(directory: str | Path) -> tuple[str, dict[str, Any], dict[str, Tensor]]:
    """Read a ``save_pretrained`` directory → (model_type, config dict, state dict)."""
    model_type, config = read_pretrained_config(directory)
    path = Path(directory) / WEIGHTS_NAME
    try:
        return model_type, config, load_file(str(path))
    except SafetensorError as e:  # a short or damaged file: its header does not describe its bytes
        raise damaged_file(path, f"safetensors: {first_sentence(e)}") from None


def read_pretrained_config(directory: str | Path) -> tuple[str, dict[str, Any]]:
    """(model_type, config dict) of a ``save_pretrained`` directory, checked; its weights are not read."""
    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not cfg_path.is_file() or not w_path.is_file():
        raise FileNotFoundError(
            f"{directory} is not a save_pretrained directory: it needs {CONFIG_NAME} and {WEIGHTS_NAME}"
        )
    doc = json.loads(cfg_path.read_text())
    if not isinstance(doc, dict) or "model_type" not in doc or "config" not in doc:
        raise ValueError(f"{cfg_path}: not an open-magvit2 config (needs 'model_type' and 'config')")
    if doc.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{cfg_path}: format_version {doc['format_version']} is newer than this package; upgrade open-magvit2"
        )
    return doc["model_type"], doc["config"]


@dataclass(frozen=True)
class Release:
    """One released checkpoint: its short name, the hub repo and the file in it."""

    name: str
    repo_id: str
    filename: str

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/resolve/main/{self.filename}"


def _release(name: str, repo: str) -> Release:
    return Release(name, f"TencentARC/Open-MAGVIT2-{repo}", f"{name}.ckpt")


RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        _release("imagenet_128_L", "Tokenizer-128-resolution"),
        _release("imagenet_256_L", "Tokenizer-256-resolution"),
        _release("pretrain256_262144", "Tokenizer-262144-Pretrain"),
        _release("pretrain256_16384", "Tokenizer-16384-Pretrain"),
        _release("video_128_262144", "Tokenizer-262144-Video"),
        _release("AR_256_B", "AR-B-256-resolution"),
        _release("AR_256_L", "AR-L-256-resolution"),
        _release("AR_256_XL", "AR-XL-256-resolution"),
    )
}
HF_PREFIX = "hf://"
TOKEN_GRID = 16  # every released tokenizer makes 16×16 grids at its training resolution (docs/design.md O-07, O-26)


def native_size(spatial_factor: int) -> int:
    """The image size a tokenizer was trained at: ``16 × spatial_factor`` (128 for the 8× models, 256 for the 16×
    ones). The CLI's default ``--size``."""
    return TOKEN_GRID * spatial_factor


def check_image_size(size: int, spatial_factor: int) -> int:
    """``size`` (pixels of a square crop) when it makes a token grid the models can use: a multiple of the
    downsampling factor, and at least 2 × 2 tokens (a 1 × 1 grid decodes to NaN: ``ImageTokenizer.decode``).
    ``ValueError`` with a size that works otherwise."""
    if size % spatial_factor or size // spatial_factor < 2:
        raise ValueError(f"--size {size} must be a multiple of {spatial_factor} and at least {2 * spatial_factor} (a "
                         f"2×2 token grid at the tokenizer's downsampling factor {spatial_factor}); e.g. --size "
                         f"{max(2, round(size / spatial_factor)) * spatial_factor}")
    return size


def looks_like_path(text: str) -> bool:
    """A leading ``.``, ``/``, ``~`` or a backslash, or a file suffix (``x.ckpt``; not ``model-v1.5``)."""
    suffix = Path(text).suffix
    return text.startswith((".", "/", "~")) or "\\" in text or (len(suffix) > 1 and suffix[1].isalpha())


# ---- the bundled demo models (docs/model_zoo.md) -----------------------------------------------------------------

DEMO_NAME = "demo"
DEMO_ROOT = Path(__file__).resolve().parents[1] / "assets" / "demo"  # package data


def demo_model_dir(model_type: str | None) -> Path:
    """The ``save_pretrained`` folder of the bundled demo model of ``model_type`` (package data, no network)."""
    if model_type not in MODEL_TYPES:  # one bundled demo model of each kind
        raise ValueError(
            "'demo' names one bundled model per class: use ImageTokenizer.from_pretrained('demo'), "
            "VideoTokenizer.from_pretrained('demo'), ImageGenerator.from_pretrained('demo') or "
            "VideoGenerator.from_pretrained('demo')"
        )
    path = DEMO_ROOT / model_type
    if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"the bundled demo {model_type} is missing from this installation ({path}); "
                                "reinstall open-magvit2, or rebuild it with `make demo-models`")
    return path


def demo_sample(name: str) -> Path:
    """A bundled sample file of the demo (a held-out photo, a clip), by file name."""
    path = DEMO_ROOT / "samples" / name
    if not path.is_file():
        raise FileNotFoundError(f"the demo sample {name} is missing from this installation ({path})")
    return path


def resolve_checkpoint(path_or_id: str | Path, model_type: str | None = None, revision: str | None = None) -> Path:
    """:func:`resolve_pretrained`, plus ``"demo"`` (when no such file exists): the bundled demo model of
    ``model_type``. What every loader and every training ``init`` resolves a checkpoint argument with."""
    if isinstance(path_or_id, str) and path_or_id == DEMO_NAME and not Path(path_or_id).exists():
        return demo_model_dir(model_type)
    return resolve_pretrained(path_or_id, revision)


def resolve_pretrained(path_or_id: str | Path, revision: str | None = None) -> Path:
    """A local path for ``path_or_id`` (module docstring); ``FileNotFoundError`` with one line saying what to do."""
    if isinstance(path_or_id, bool) or not isinstance(path_or_id, (str, Path)):
        raise TypeError(
            f"expected a checkpoint path, a released name such as 'imagenet_256_L' or a hub repo id, got "
            f"{type(path_or_id).__name__}"
        )
    text = str(path_or_id)
    if not text.strip():
        raise ValueError("the checkpoint name is empty: pass a path, a released name or a hub repo id")
    p = Path(text).expanduser()
    if p.exists():
        return p
    if text in RELEASES:
        r = RELEASES[text]
        return _hub_file(r.repo_id, r.filename, revision, text, r.url)
    if text.startswith(HF_PREFIX):
        parts = text[len(HF_PREFIX) :].split("/")
        if len(parts) < 3 or not all(parts):
            raise ValueError(f"{text}: expected hf://owner/name/path/to/file")
        repo, file = "/".join(parts[:2]), "/".join(parts[2:])
        return _hub_file(repo, file, revision, text, f"https://huggingface.co/{repo}/resolve/main/{file}")
    stem = Path(text).stem
    if looks_like_path(text) or text.count("/") != 1 or not all(text.split("/")):
        hint = f"; the released checkpoint is named {stem!r}: pass that name to download it" if stem in RELEASES else ""
        names = "" if hint else f" (nor a released name: {', '.join(RELEASES)}; nor a hub repo id 'owner/name')"
        raise FileNotFoundError(f"{text}: no such file or directory{names}{hint}")
    return _hub_snapshot(text, revision)


def _hub_reachable(timeout: float = 5.0) -> bool:
    """False when HF_HUB_OFFLINE is set or the hub's host cannot be reached within ``timeout`` seconds: the
    download would only retry for half a minute before failing."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


def _hub_file(repo_id: str, filename: str, revision: str | None, name: str, url: str) -> Path:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.utils import LocalEntryNotFoundError

    cached = try_to_load_from_cache(repo_id, filename, revision=revision)
    if isinstance(cached, str):  # in the cache: no network at all
        return Path(cached)
    offline = FileNotFoundError(
        f"{name}: {filename} is not in the Hugging Face cache and the hub cannot be reached (offline?); download "
        f"{url} and pass its local path instead (e.g. --checkpoint ./{Path(filename).name})"
    )
    if not _hub_reachable():
        raise offline
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except LocalEntryNotFoundError:
        raise offline from None
    except Exception as e:  # HTTP errors, gated or missing repos, bad revisions: one line, what the hub said
        raise FileNotFoundError(f"{name}: the Hugging Face hub could not provide {url} ({type(e).__name__}: "
                                f"{first_sentence(e)})") from None


def _hub_snapshot(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import LocalEntryNotFoundError

    try:
        if not _hub_reachable():  # a cached snapshot still resolves offline
            return Path(snapshot_download(repo_id, revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME],
                                          local_files_only=True))
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]))
    except LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"{repo_id}: not a local path, and the hub repo is not cached and cannot be reached (offline?); pass a "
            "local save_pretrained folder or .ckpt file instead"
        ) from None
    except Exception as e:
        raise FileNotFoundError(f"{repo_id}: not a local path, and the Hugging Face hub could not provide it "
                                f"({type(e).__name__}: {first_sentence(e)})") from None
