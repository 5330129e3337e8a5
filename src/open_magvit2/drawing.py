"""Pictures of what a tokenizer does, shared by ``open-magvit2 demo`` (``demo/run.py``) and the web app
(``web/tasks.py``): a photo through the original-resolution path, its token grid in colours, and two pictures or
clips side by side. Arrays are HWC (or THWC) uint8.
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch
from torch import Tensor

from open_magvit2.imaging import crop_box, pad_to_multiple, to_uint8, uint8_to_tensor
from open_magvit2.tokenizer import Tokenizer


@torch.no_grad()
def reconstruct_photo(tokenizer: Tokenizer, photo: np.ndarray) -> tuple[np.ndarray, Tensor]:
    """(H, W, 3) uint8 → (reconstruction (H, W, 3) uint8, indices (1, h, w)): zero-padded to the downsampling
    factor, encoded, decoded and cropped back (the original-resolution path, as ``reconstruct
    --original-resolution``)."""
    padded, box = pad_to_multiple(uint8_to_tensor(photo), tokenizer.config.spatial_factor)
    indices = tokenizer.encode(padded.to(next(tokenizer.parameters()).device))
    rec = crop_box(tokenizer.decode(indices), box)
    return to_uint8(rec[0]), indices


def token_colours(indices: np.ndarray, cell: int) -> np.ndarray:
    """(h, w) integer tokens → (h·cell, w·cell, 3) uint8: one colour per code (golden-ratio hues, three
    brightness levels), so equal codes look equal and neighbours rarely clash."""
    idx = indices.astype(np.int64)
    hue = (idx * 0.6180339887498949) % 1.0
    value = 0.55 + 0.2 * (idx % 3)
    rgb = np.array([colorsys.hsv_to_rgb(h, 0.75, v) for h, v in zip(hue.ravel(), value.ravel())])
    img = (rgb.reshape(*idx.shape, 3) * 255).astype(np.uint8)
    return np.kron(img, np.ones((cell, cell, 1), dtype=np.uint8))


def side_by_side(a: np.ndarray, b: np.ndarray, gap: int = 4) -> np.ndarray:
    """Two (…, H, W, 3) uint8 arrays next to each other with a white gap."""
    pad = np.full((*a.shape[:-2], gap, 3), 255, dtype=np.uint8)
    return np.concatenate([a, pad, b], axis=-2)
