"""open-magvit2: Open-MAGVIT2 lookup-free-quantisation tokenizers and the factorised AR image and video generators.

>>> from open_magvit2 import ImageTokenizer
>>> tok = ImageTokenizer.from_pretrained("imagenet_256_L.ckpt")   # official file, EMA weights
>>> indices = tok.encode(images)                                    # (B, 3, 256, 256) in [-1, 1] -> (B, 16, 16)
>>> recon = tok.decode(indices)                                     # (B, 3, 256, 256), unclamped
"""

from open_magvit2.generator import ImageGenerator, VideoGenerator
from open_magvit2.imaging import crop_box, load_image, pad_to_multiple, save_image, to_uint8
from open_magvit2.quantize import LFQ, LFQOutput
from open_magvit2.registry import load_pretrained
from open_magvit2.tokenizer import ImageTokenizer, TokenizerConfig, VideoTokenizer

__version__ = "0.1.0"
__all__ = [
    "LFQ",
    "ImageGenerator",
    "ImageTokenizer",
    "LFQOutput",
    "TokenizerConfig",
    "VideoGenerator",
    "VideoTokenizer",
    "__version__",
    "crop_box",
    "load_image",
    "load_pretrained",
    "pad_to_multiple",
    "save_image",
    "to_uint8",
]
