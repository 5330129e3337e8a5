"""``VideoGenerator``: the class-conditional AR generator over (t, h, w) video token grids, with the causal
``VideoTokenizer`` that decodes its tokens (docs/design.md "Video generation").

>>> gen = VideoGenerator.from_pretrained("runs/video_export")       # a folder written by `export`
>>> idx = gen.generate(torch.tensor([3, 7]))                         # (2, t, h, w) int64 full LFQ indices
>>> clips = gen.sample_videos(torch.tensor([3]))                     # (1, 3, T, H, W) in [-1, 1]
>>> more = gen.sample_videos(torch.tensor([3]), first_frame=image)   # image (1, 3, H, W): continue it

It is the image generator's transformer (the same blocks, heads, KV caches and sampler) with a (t, h, w) RoPE;
tokens are predicted in raster order t, then h, then w, so a clip's first latent frame comes first. The causal
tokenizer codes frame 0 alone into latent frame 0, which makes image-to-video a prefix: ``first_frame`` is encoded,
its h × w tokens are prefilled, and sampling continues from latent frame 1.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from open_magvit2.generator.api import ImageGenerator, TokenGenerator
from open_magvit2.generator.model import GeneratorConfig, VideoGeneratorConfig
from open_magvit2.tokenizer import TokenizerConfig, VideoTokenizer
from open_magvit2.tokenizer.model import Tokenizer


def generator_class(config: GeneratorConfig) -> type[TokenGenerator]:
    """The generator class of a config: :class:`VideoGenerator` for a :class:`VideoGeneratorConfig`, else
    :class:`~open_magvit2.generator.api.ImageGenerator` (the class counterpart of
    :func:`~open_magvit2.generator.model.transformer_for`)."""
    return VideoGenerator if isinstance(config, VideoGeneratorConfig) else ImageGenerator


class VideoGenerator(TokenGenerator):
    """Class-conditional video generator: ``.transformer`` predicts LFQ tokens (B, t, h, w), ``.tokenizer`` (a
    :class:`VideoTokenizer`, or None for a tokens-only model) decodes them to clips (B, 3, T, H, W).

    Tokens are full LFQ indices, int64 (B, t, h, w) with t = ``config.frames`` and h = w = ``config.grid_size``, in
    [0, 2^K), in raster order t, then h, then w; labels are int64 (B,) in [0, num_classes] (``num_classes`` = the
    null class).
    """

    model_type: ClassVar[str] = "video_generator"
    config_class: ClassVar[type[GeneratorConfig]] = VideoGeneratorConfig
    tokenizer_class: ClassVar[type[Tokenizer]] = VideoTokenizer

    def __init__(self, *, config: VideoGeneratorConfig, tokenizer_config: TokenizerConfig | None = None) -> None:
        super().__init__(config=config, tokenizer_config=tokenizer_config)
        if self.tokenizer is not None and self.tokenizer.config.dims != 3:
            raise ValueError("a VideoGenerator needs a video tokenizer (causal 3D), got an image tokenizer config")

    @property
    def grid(self) -> tuple[int, int, int]:
        c = self.config
        return c.frames, c.grid_size, c.grid_size

    @property
    def num_frames(self) -> int:
        """T, the frames of a decoded clip (17 for 5 latent frames of a 4×-in-time tokenizer)."""
        if self.tokenizer is None:
            raise ValueError("this generator has no tokenizer (tokens-only checkpoint): it makes tokens, not frames")
        return self.tokenizer.output_frames(self.config.frames)

    @property
    def frame_size(self) -> int:
        """H = W, the pixel size of a frame."""
        if self.tokenizer is None:
            raise ValueError("this generator has no tokenizer (tokens-only checkpoint): it makes tokens, not frames")
        return self.config.grid_size * self.tokenizer.config.spatial_factor

    @torch.no_grad()
    def encode_first_frame(self, first_frame: Tensor) -> Tensor:
        """Images (B, 3, H, W) in [−1, 1] → the tokens of latent frame 0, (B, h, w) int64.

        The frame is coded as a still clip of ``num_frames`` frames and latent frame 0 is kept: convolutions are
        causal, so latent frame 0 sees frame 0 only, but GroupNorm takes its statistics over all frames
        (docs/design.md O-27), and a still clip of the frame is the closest to the clips the generator was trained
        on (a clip of one frame alone normalises differently).
        """
        if self.tokenizer is None:
            raise ValueError("first_frame needs the generator's tokenizer, and this checkpoint has none")
        s = self.frame_size
        if not isinstance(first_frame, Tensor) or not first_frame.dtype.is_floating_point:
            raise ValueError(f"first_frame must be a float tensor (B, 3, {s}, {s}) in [-1, 1]")
        if first_frame.dim() != 4 or tuple(first_frame.shape[1:]) != (3, s, s):
            raise ValueError(f"first_frame must be (B, 3, {s}, {s}) in [-1, 1] (this model makes {s}×{s} frames), "
                             f"got {tuple(first_frame.shape)}")
        device = self.transformer.pre_emb.weight.device
        still = first_frame.to(device)[:, :, None].expand(-1, -1, self.num_frames, -1, -1)
        return self.tokenizer.encode(still.to(next(self.tokenizer.parameters()).dtype))[:, 0]

    def generate(
        self,
        labels: Tensor,
        *,
        first_frame: Tensor | None = None,
        cfg_scale: float | tuple[float, ...] | None = None,
        temperature: float | tuple[float, ...] | None = None,
        top_k: int | tuple[int, ...] | None = None,
        top_p: float | tuple[float, ...] | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        compile: bool | dict[str, Any] = False,
    ) -> Tensor:
        """Sample full LFQ indices (B, t, h, w) int64 for labels (B,).

        ``first_frame`` (B, 3, H, W) in [−1, 1]: continue these images (image-to-video); their latent frame 0
        (:meth:`encode_first_frame`) is prefilled and returned as the first latent frame, and sampling starts at
        latent frame 1. The settings are those of :meth:`ImageGenerator.generate <open_magvit2.ImageGenerator
        .generate>`: one number for all sub-tokens or one per sub-token; None takes the model's defaults.
        """
        prefix = None
        if first_frame is not None:
            if self.config.frames < 2:
                raise ValueError("this model makes one latent frame; there is nothing to continue a first frame with")
            first = self.encode_first_frame(first_frame)
            if isinstance(labels, Tensor) and labels.dim() == 1 and labels.shape[0] != first.shape[0]:
                raise ValueError(f"got {labels.shape[0]} labels for {first.shape[0]} first frames")
            prefix = first.flatten(1)
        return self._sample(labels, prefix, cfg_scale, temperature, top_k, top_p, generator, progress, compile)

    def sample_videos(self, labels: Tensor, *, first_frame: Tensor | None = None,
                      generator: torch.Generator | None = None, **sampling: Any) -> Tensor:
        """``generate`` then ``decode``: clips (B, 3, T, H, W) in [−1, 1]. With ``first_frame`` the clip's frame 0
        is the tokenizer's reconstruction of the given image. Other keyword arguments go to ``generate``."""
        if self.tokenizer is None:
            raise ValueError("this generator has no tokenizer (tokens-only checkpoint); use generate() instead")
        return self.decode(self.generate(labels, first_frame=first_frame, generator=generator, **sampling))
