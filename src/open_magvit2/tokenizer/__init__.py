"""Image and video tokenizers: dims-generic layers, encoder, decoder, assembled models and presets."""

from open_magvit2.tokenizer.config import TokenizerConfig
from open_magvit2.tokenizer.model import ImageTokenizer, Tokenizer, TokenizerOutput
from open_magvit2.tokenizer.presets import TOKENIZER_PRESETS, tokenizer_config
from open_magvit2.tokenizer.video import VideoTokenizer

__all__ = [
    "TOKENIZER_PRESETS",
    "ImageTokenizer",
    "Tokenizer",
    "TokenizerConfig",
    "TokenizerOutput",
    "VideoTokenizer",
    "tokenizer_config",
]
