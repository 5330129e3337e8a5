"""Device choice shared by the library pipelines and the CLI."""

from __future__ import annotations

import torch


def pick_device(name: str | None = None) -> torch.device:
    """``name`` if given (CUDA must then exist), else CUDA when available, else CPU."""
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name}: CUDA is not available on this machine; use cpu")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
