"""Image I/O with the official arithmetic (spec §1.6, §7.2), and small image utilities. A low module: it imports
nothing from the package, so data, eval and model code can all use it.

Pre-processing: PIL RGB → resize the shorter side to ``size`` (bilinear, PIL's antialiasing, as torchvision's
``Resize`` on PIL images) → centre-crop ``size``×``size`` (torchvision's rounding) → ``uint8 / 127.5 − 1``.
Post-processing: clamp to [−1, 1] → ``(x + 1) / 2`` → ``× 255`` → uint8 by truncation (not rounding).
Tensors are (B, 3, H, W) float in [−1, 1]; arrays are HWC uint8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def resize_shorter_side(img: Image.Image, size: int) -> Image.Image:
    """torchvision ``Resize(size)`` on a PIL image: shorter side → size, longer side truncated proportionally."""
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), Image.BILINEAR)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision ``CenterCrop(size)`` (offsets rounded with Python's ``round``); needs both sides ≥ size."""
    w, h = img.size
    if w < size or h < size:
        raise ValueError(f"image {w}×{h} is smaller than the crop {size}×{size}; resize it first")
    top, left = round((h - size) / 2.0), round((w - size) / 2.0)
    return img.crop((left, top, left + size, top + size))


def pil_to_tensor(img: Image.Image) -> Tensor:
    """PIL image → (1, 3, H, W) float32 in [−1, 1]: ``uint8 / 127.5 − 1`` in float64, as the official code."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy((arr / 127.5 - 1.0).astype(np.float32)).permute(2, 0, 1)[None].contiguous()


def load_image(path: str | Path, size: int | None = 256) -> Tensor:
    """Read an image file as (1, 3, size, size) in [−1, 1] with the official resize + centre-crop.

    ``size=None`` keeps the original resolution (pair it with :func:`pad_to_multiple`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except OSError as e:
        raise ValueError(f"{path}: cannot read the image ({e})") from None
    if size is not None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        img = center_crop(resize_shorter_side(img, size), size)
    return pil_to_tensor(img)


def to_uint8(x: Tensor) -> np.ndarray:
    """(B, 3, H, W) or (3, H, W) in [−1, 1] → uint8 (B, H, W, 3) or (H, W, 3): clamp, (x+1)/2, ×255, truncate."""
    x = x.detach().float().cpu().clamp(-1.0, 1.0)
    x = (x + 1.0) / 2.0
    x = x.movedim(-3, -1).numpy()
    return (255 * x).astype(np.uint8)


def save_image(x: Tensor | np.ndarray, path: str | Path) -> Path:
    """Write a (3, H, W) tensor in [−1, 1] or an (H, W, 3) uint8 array as an image file."""
    arr = to_uint8(x) if isinstance(x, Tensor) else np.asarray(x, dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Zero-pad (value 0 = mid-grey in [−1, 1]) H and W up to a multiple, centred with the extra pixel at the
    bottom/right (spec §7.2). Returns the padded tensor and the box (top, left, H, W) for :func:`crop_box`."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    top, left = ph // 2, pw // 2
    padded = torch.nn.functional.pad(x, (left, pw - left, top, ph - top))
    return padded, (top, left, h, w)


def crop_box(x: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    """Undo :func:`pad_to_multiple`."""
    top, left, h, w = box
    return x[..., top : top + h, left : left + w]


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images (data range 255); ``inf`` when identical."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def image_grid(images: list[np.ndarray], columns: int, pad: int = 2) -> np.ndarray:
    """Tile equally sized HWC uint8 images into one array, row-major, with a white border of ``pad`` pixels."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    h, w, c = images[0].shape
    rows = -(-len(images) // columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, im in enumerate(images):
        r, col = divmod(i, columns)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = im
    return grid
