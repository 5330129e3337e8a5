"""Measurements of the demo models on held-out data: photos at full resolution through the original-resolution
path, camera-motion clips, and class-conditional digits judged by a classifier trained on the real digits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from open_magvit2.demo.data import HELD_OUT_PHOTOS, load_photo
from open_magvit2.imaging import crop_box, pad_to_multiple, psnr_uint8, to_uint8


@torch.no_grad()
def reconstruct_photo(tokenizer: nn.Module, photo: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """(H, W, 3) uint8 → (reconstruction (H, W, 3) uint8, indices): zero-padded to the downsampling factor,
    encoded, decoded and cropped back (the original-resolution path, spec §7.2)."""
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    padded, box = pad_to_multiple(x, tokenizer.config.spatial_factor)
    indices = tokenizer.encode(padded)
    rec = crop_box(tokenizer.decode(indices), box)
    return to_uint8(rec[0]), indices


def photo_psnr(tokenizer: nn.Module, names: Sequence[str] = HELD_OUT_PHOTOS) -> dict[str, float]:
    """PSNR (dB, uint8) of each named photo's full-resolution reconstruction."""
    return {n: psnr_uint8(reconstruct_photo(tokenizer, load_photo(n))[0], load_photo(n)) for n in names}
