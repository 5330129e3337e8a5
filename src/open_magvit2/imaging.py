"""Image I/O with the official arithmetic (docs/design.md O-08, O-49), and small image utilities. A low module: it
imports only :mod:`open_magvit2.fileio`, so data, eval and model code can all use it.

Pre-processing: PIL RGB → resize the shorter side to ``size`` (bilinear, PIL's antialiasing, as torchvision's
``Resize`` on PIL images) → centre-crop ``size``×``size`` (torchvision's rounding) → ``uint8 / 127.5 − 1``.
Post-processing: clamp to [−1, 1] → ``(x + 1) / 2`` → ``× 255`` → uint8 by truncation (not rounding).
Tensors are (B, 3, H, W) float in [−1, 1]; arrays are HWC uint8.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from open_magvit2.fileio import atomic_write

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".webp", ".bmp", ".tif", ".tiff")  # what folder/glob inputs pick up
# Pillow's 16-bit modes: 16-bit PNGs open as "I;16" and, in older Pillow releases, as "I" (32-bit int)
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def shorter_side_size(h: int, w: int, size: int) -> tuple[int, int]:
    """(H, W) after resizing the shorter side to ``size``: the longer side scales and is truncated (torchvision's
    ``Resize(size)``, and cv2 with ``int()`` in the official video loader, docs/design.md O-08, O-47)."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    return (size, int(size * w / h)) if h <= w else (int(size * h / w), size)


def resize_shorter_side(img: Image.Image, size: int) -> Image.Image:
    """torchvision ``Resize(size)`` on a PIL image: shorter side → size, longer side truncated proportionally."""
    w, h = img.size
    new_h, new_w = shorter_side_size(h, w, size)
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


def uint8_to_tensor(arr: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 → (1, 3, H, W) float32 in [−1, 1]: ``uint8 / 127.5 − 1`` in float64, as the official image
    code (the official video loader computes in float32, which differs for half the values: ``data/video_io.py``)."""
    arr = np.asarray(arr, dtype=np.uint8)
    return torch.from_numpy((arr / 127.5 - 1.0).astype(np.float32)).permute(2, 0, 1)[None].contiguous()


def pil_to_tensor(img: Image.Image) -> Tensor:
    """PIL image → (1, 3, H, W) float32 in [−1, 1] (:func:`uint8_to_tensor`)."""
    return uint8_to_tensor(np.asarray(img.convert("RGB"), dtype=np.uint8))


def _to_8bit(img: Image.Image, path: Path) -> Image.Image:
    """16-bit greyscale → 8-bit by its high byte. ``convert("RGB")`` would clip every value above 255 to white."""
    if img.mode == "F":
        raise ValueError(f"{path}: floating-point images are not supported; save it as an 8- or 16-bit image")
    if img.mode not in _WIDE_MODES:
        return img
    arr = np.asarray(img)
    if img.mode == "I" and arr.max(initial=0) <= 255 and arr.min(initial=0) >= 0:  # an 8-bit image held as int32
        return Image.fromarray(arr.astype(np.uint8))
    if arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
        raise ValueError(f"{path}: pixel values outside 0..65535; save it as an 8- or 16-bit image")
    return Image.fromarray((arr.astype(np.uint32) >> 8).astype(np.uint8))


def decode_image(data: bytes | str | Path, name: str = "") -> Image.Image:
    """Decode an image (its encoded bytes, or a file) fully into memory as 8-bit RGB, 16-bit greyscale reduced by its
    high byte first. Raises what PIL raises: the training streams count any failure as a bad sample, and
    :func:`open_rgb` turns it into one line. ``name`` names the image in errors (default: the path)."""
    label = Path(name or ("<bytes>" if isinstance(data, bytes) else str(data)))
    try:
        im = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    except Image.UnidentifiedImageError:
        if isinstance(data, bytes):  # PIL names the buffer object; name the image instead
            raise Image.UnidentifiedImageError(f"cannot identify image file '{label}'") from None
        raise
    with im:
        return _to_8bit(im, label).convert("RGB")  # convert() decodes: truncation errors surface here


def open_rgb(path: str | Path) -> Image.Image:
    """Read an image file as a decoded 8-bit RGB PIL image (:func:`decode_image`). ``FileNotFoundError`` if it is
    missing; ``ValueError`` for a corrupt, truncated or unsupported file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        return decode_image(path)
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: {image_error(e, path)}") from None


def image_error(e: BaseException, path: str | Path = "") -> str:
    """What a failure of :func:`decode_image` means, and what to do, in a few words (without the file's name)."""
    if isinstance(e, Image.DecompressionBombError):
        found = re.findall(r"(\d+) pixels", str(e))  # "Image size (N pixels) exceeds limit of M pixels, ..."
        size = f" ({int(found[0]) / 1e6:,.0f} megapixels, over Pillow's limit of {int(found[1]) / 1e6:,.0f})" \
            if len(found) == 2 else ""
        return (f"the image is too large{size}: Pillow refuses it as a possible decompression bomb; scale it down "
                "first, or if you trust the file raise PIL.Image.MAX_IMAGE_PIXELS in Python")
    reason = " ".join((str(e) or type(e).__name__).split())
    if path:  # PIL names the file again: "cannot identify image file 'x.png'"
        reason = reason.replace(f" '{path}'", "")
    return f"cannot read the image ({reason}); is it a complete image file?"


def load_image(path: str | Path, size: int | None = 256) -> Tensor:
    """Read an image file as (1, 3, size, size) float32 in [−1, 1] with the official resize + centre-crop.

    ``size=None`` keeps the original resolution (pair it with :func:`pad_to_multiple`). 16-bit greyscale files are
    reduced to 8 bits first. ``ValueError`` for a corrupt, truncated or unsupported file.
    """
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive int (pixels) or None (original resolution), got {size!r}")
    img = open_rgb(path)
    if size is not None:
        img = center_crop(resize_shorter_side(img, size), size)
    return pil_to_tensor(img)


def to_uint8_tensor(x: Tensor) -> Tensor:
    """Float in [−1, 1] → uint8, same layout and device: clamp, ``(x + 1) / 2``, ``× 255``, truncate
    (docs/design.md O-08; the PSNR/SSIM of O-48 and the I3D input of O-50 use the same arithmetic on clamped
    images)."""
    return ((x.detach().float().clamp(-1.0, 1.0) + 1.0) / 2.0 * 255).to(torch.uint8)


def to_uint8(x: Tensor) -> np.ndarray:
    """(B, 3, H, W) or (3, H, W) in [−1, 1] → uint8 (B, H, W, 3) or (H, W, 3): clamp, (x+1)/2, ×255, truncate."""
    return to_uint8_tensor(x).movedim(-3, -1).cpu().numpy()


def save_image(x: Tensor | np.ndarray, path: str | Path) -> Path:
    """Write a (3, H, W) tensor in [−1, 1] or an (H, W, 3) uint8 array as an image file, atomically; the suffix
    picks the format (``.png``, ``.jpg``, ...)."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image suffix {path.suffix!r}; use .png or .jpg")
    arr = to_uint8(x) if isinstance(x, Tensor) else np.asarray(x, dtype=np.uint8)
    atomic_write(path, lambda p: Image.fromarray(arr).save(p, format=fmt))
    return path


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Zero-pad (value 0 = mid-grey in [−1, 1]) H and W up to a multiple, centred with the extra pixel at the
    bottom/right (docs/design.md O-49). Returns the padded tensor and the box (top, left, H, W) for :func:`crop_box`."""
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
