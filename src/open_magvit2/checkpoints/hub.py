"""Our own checkpoint format and where checkpoints come from.

A ``save_pretrained`` directory holds ``config.json`` (``{"model_type", "format_version", "config"}``) and
``model.safetensors``. ``from_pretrained`` accepts such a directory, an official ``.ckpt`` file, a Hugging Face
repo id holding such a directory, or ``owner/repo/file.ckpt`` for an official file on the hub (cached by
huggingface_hub).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from open_magvit2.fileio import atomic_write

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
    return doc["model_type"], doc["config"], load_file(str(w_path))


def resolve_pretrained(path_or_id: str | Path, revision: str | None = None) -> Path:
    """A local file or directory as is; otherwise download from the Hugging Face hub (cached).

    ``owner/repo`` fetches a ``save_pretrained`` directory; ``owner/repo/path/file.ckpt`` one official file.
    """
    p = Path(path_or_id)
    if p.exists():
        return p
    name = str(path_or_id)
    parts = name.split("/")
    if len(parts) < 2 or name.startswith((".", "/")) or any(not s for s in parts):
        raise FileNotFoundError(f"{name}: no such file or directory (and not a Hugging Face repo id 'owner/name')")
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id = "/".join(parts[:2])
    try:
        if len(parts) > 2:
            return Path(hf_hub_download(repo_id, "/".join(parts[2:]), revision=revision))
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
        raise FileNotFoundError(
            f"{name}: not a local path, and the Hugging Face hub could not provide it "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160]})"
        ) from None
