"""Third-party network weights read from files on disk, never downloaded: an explicit path, or the official file
name in the torch hub cache (``$TORCH_HOME/hub/checkpoints``). A missing file raises ``FileNotFoundError`` naming
the file and its URL. Used by the LPIPS loss (``lpips_net.py``) and by the evaluation networks (``eval/backbones.py``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor


@dataclass(frozen=True)
class WeightsFile:
    """An official weights file: its file name and where it is published."""

    filename: str
    url: str
    what: str


def hub_checkpoint_dir() -> Path:
    """Where torch.hub (and so torchvision, torch-fidelity, pytorch-fid) caches downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(path: str | Path | None, candidates: tuple[WeightsFile, ...]) -> Path:
    """``path`` if given (it must exist), else the first candidate file present in the hub cache."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            names = " or ".join(f"{c.filename} ({c.url})" for c in candidates)
            raise FileNotFoundError(f"weights file not found: {p}. Expected {candidates[0].what}: {names}")
        return p
    for c in candidates:
        p = hub_checkpoint_dir() / c.filename
        if p.is_file():
            return p
    c = candidates[0]
    others = "".join(f" (or {o.filename} from {o.url})" for o in candidates[1:])
    raise FileNotFoundError(
        f"{c.what}: weights file {c.filename} not found. Download it from {c.url}{others} and pass its path, or "
        f"put it in {hub_checkpoint_dir()}; nothing is downloaded automatically"
    )


def read_state_dict(path: Path, what: str) -> dict[str, Tensor]:
    """The tensors of a weights file (``torch.load`` with ``weights_only``: no pickled code runs), a plain state
    dict or one under ``"state_dict"``; ``ValueError`` naming ``what`` otherwise."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling failure means a bad file
        raise ValueError(f"{path} is not a readable {what} weights file ({str(e).splitlines()[0]})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors ({what})")
    return sd


def file_digest(path: str | Path) -> str:
    """First 12 hex digits of the file's SHA-256, recorded in reports so a number names the weights it used."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:12]
