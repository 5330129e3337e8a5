"""The public image helpers (re-exported from :mod:`open_magvit2.imaging`, the low module that implements them)."""

from open_magvit2.imaging import (
    center_crop,
    crop_box,
    image_grid,
    load_image,
    pad_to_multiple,
    pil_to_tensor,
    psnr_uint8,
    resize_shorter_side,
    save_image,
    shorter_side_size,
    to_uint8,
    to_uint8_tensor,
)

__all__ = [
    "center_crop",
    "crop_box",
    "image_grid",
    "load_image",
    "pad_to_multiple",
    "pil_to_tensor",
    "psnr_uint8",
    "resize_shorter_side",
    "save_image",
    "shorter_side_size",
    "to_uint8",
    "to_uint8_tensor",
]
