"""The official training transform of images (docs/data.md), on a decoded PIL image.

PIL RGB → shorter side to ``size`` (bilinear with antialiasing, torchvision's ``Resize``) → a random
``size``×``size`` crop for training (``RandomCrop``) or the centre crop (``CenterCrop``) → ``uint8 / 127.5 − 1``.
No flip in the official recipe (``flip=True`` adds one, p = 0.5). The crop offsets and the flip come from the
caller's ``rng`` (``sample_rng(seed, AUGMENT, epoch, sample)``, ``sampler.py``), never from a global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from torch import Tensor

from open_magvit2.imaging import center_crop, pil_to_tensor, resize_shorter_side


@dataclass(frozen=True)
class ImageTransform:
    """PIL image → float32 (3, size, size) in [−1, 1], with the official arithmetic (module docstring)."""

    size: int
    random_crop: bool = True
    flip: bool = False

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {self.size}")

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Tensor:
        img = resize_shorter_side(img.convert("RGB"), self.size)
        if self.random_crop:  # RandomCrop: top then left, each uniform over the valid offsets
            w, h = img.size
            top, left = int(rng.integers(0, h - self.size + 1)), int(rng.integers(0, w - self.size + 1))
            img = img.crop((left, top, left + self.size, top + self.size))
        else:
            img = center_crop(img, self.size)
        if self.flip and rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return pil_to_tensor(img)[0]  # (3, size, size)
