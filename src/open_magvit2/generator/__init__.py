"""The class-conditional factorised AR generator (paper §2.3, docs/design.md O-30–O-44): model, KV cache, sampling,
and the ``ImageGenerator`` API that pairs the transformer with its tokenizer."""

from open_magvit2.generator.api import ImageGenerator, infer_generator_config
from open_magvit2.generator.loss import GeneratorLoss, generator_loss
from open_magvit2.generator.model import (
    GENERATOR_PRESETS,
    GeneratorConfig,
    GeneratorTransformer,
    VideoGeneratorConfig,
    VideoGeneratorTransformer,
)
from open_magvit2.generator.sampling import SampleOutput, filter_logits, generate_tokens
from open_magvit2.generator.video import VideoGenerator

__all__ = [
    "GENERATOR_PRESETS",
    "GeneratorConfig",
    "GeneratorLoss",
    "GeneratorTransformer",
    "ImageGenerator",
    "SampleOutput",
    "VideoGenerator",
    "VideoGeneratorConfig",
    "VideoGeneratorTransformer",
    "filter_logits",
    "generate_tokens",
    "generator_loss",
    "infer_generator_config",
]
