"""Where a training run's weights start: an official ``.ckpt``, a ``save_pretrained`` directory, a run checkpoint,
or, for video, an image tokenizer inflated to 3D (docs/design.md, video inflation). Every load is strict and
checks the architecture.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from open_magvit2.checkpoints.hub import load_pretrained_dir, resolve_checkpoint
from open_magvit2.checkpoints.loading import open_checkpoint
from open_magvit2.checkpoints.official import load_official_state_dict, tokenizer_weights
from open_magvit2.generator import GeneratorConfig, ImageGenerator, VideoGenerator, VideoGeneratorConfig
from open_magvit2.generator.model import config_from_dict
from open_magvit2.tokenizer.config import TokenizerConfig, infer_tokenizer_config
from open_magvit2.tokenizer.inflate import inflate_image_to_video
from open_magvit2.train.checkpoint import Weights, is_run, run_weights
from open_magvit2.train.config import InitConfig
from open_magvit2.train.generator_arch import ARCH_FIELDS, VIDEO_ARCH_FIELDS

DISC_PREFIX = "discriminator."  # our TokenizerLoss; official training files add "loss." in front


def _arch(cfg: TokenizerConfig) -> tuple:
    return (cfg.ch, cfg.ch_mult, cfg.num_res_blocks, cfg.z_channels, cfg.dims, cfg.in_channels, cfg.out_channels)


def read_tokenizer_weights(source: str | Path, weights: Weights | None = None, model_type: str = "image_tokenizer"
                           ) -> tuple[dict[str, Tensor], dict | None]:
    """(encoder/decoder weights, discriminator weights or None) from any tokenizer source: a run or run checkpoint
    (its newest intact one), a path, ``demo`` (the bundled demo model of ``model_type``), a released name
    (downloaded once into the Hugging Face cache) or a hub repo id.

    ``weights``: ``None`` takes the source's own result (a run's EMA weights when it keeps them, an official file's
    EMA weights); ``"ema"`` where there are none is an error that says ``raw``
    (:func:`open_magvit2.train.checkpoint.checkpoint_weights`)."""
    path = resolve_checkpoint(source, model_type)
    if is_run(path):
        w, _, loaded = run_weights(path, "tokenizer", weights)
        disc = {k[len(DISC_PREFIX):]: v for k, v in loaded.state["loss"].items() if k.startswith(DISC_PREFIX)}
        return w, disc or None
    if path.is_dir():
        found_type, _, sd = load_pretrained_dir(path)
        if not found_type.endswith("tokenizer"):
            raise ValueError(f"{path} holds a {found_type}, not a tokenizer")
        return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, None  # the demo's are float16
    sd = load_official_state_dict(path)
    prefix = "loss." + DISC_PREFIX
    disc = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return tokenizer_weights(sd, weights=weights or "ema"), disc or None


def _check_arch(weights: dict[str, Tensor], expected: TokenizerConfig, source: str) -> None:
    found = infer_tokenizer_config(weights)
    if _arch(found) != _arch(expected):
        raise ValueError(
            f"{source} holds a tokenizer with ch={found.ch}, ch_mult={found.ch_mult}, "
            f"num_res_blocks={found.num_res_blocks}, z_channels={found.z_channels}, dims={found.dims}; the recipe "
            f"builds ch={expected.ch}, ch_mult={expected.ch_mult}, num_res_blocks={expected.num_res_blocks}, "
            f"z_channels={expected.z_channels}, dims={expected.dims}. Pick the matching preset in the recipe's model"
        )


def load_tokenizer_init(init: InitConfig, config: TokenizerConfig) -> tuple[dict[str, Tensor] | None, dict | None]:
    """The recipe's ``init`` section → (tokenizer weights, discriminator weights), each None when not given.

    A discriminator comes only from an official training checkpoint or one of our run checkpoints; released
    files hold none, so it then starts fresh (docs/design.md O-01).
    """
    if init.zero_past_taps and config.dims != 3:
        raise ValueError("init.zero_past_taps is for video tokenizers (temporal kernels); the recipe's model is an "
                         "image tokenizer")
    if init.checkpoint:
        kind = "video_tokenizer" if config.dims == 3 else "image_tokenizer"
        weights, disc = read_tokenizer_weights(init.checkpoint, init.weights, kind)
        _check_arch(weights, config, init.checkpoint)
        return weights, disc
    if init.inflate_from:
        if config.dims != 3:
            raise ValueError("init.inflate_from inflates an image tokenizer into a video one; the recipe's model "
                             "is an image tokenizer (use init.checkpoint)")
        image, _ = read_tokenizer_weights(init.inflate_from, init.weights)
        _check_arch(image, config.replace(dims=2), init.inflate_from)
        return dict(inflate_image_to_video(image)), None
    return None, None


def load_generator_init(init: InitConfig, config: GeneratorConfig) -> dict[str, Tensor] | None:
    """The recipe's ``init`` → transformer weights (None: start from the official initialisation).

    ``init.checkpoint``: an official AR ``.ckpt`` (its ``transformer.*``), a ``save_pretrained`` generator folder,
    ``demo``, a released name, or a generator run (its newest intact checkpoint) / run checkpoint. The architecture
    must match ``config``: an image generator for an image config, a video generator with the same ``frames`` for a
    :class:`VideoGeneratorConfig` (their weights have the same shapes, but the positions their RoPE encodes differ).
    """
    if init.inflate_from or init.zero_past_taps:
        raise ValueError("init.inflate_from and init.zero_past_taps are for video tokenizers; a generator starts "
                         "from init.checkpoint")
    if not init.checkpoint:
        return None
    video = isinstance(config, VideoGeneratorConfig)
    path = Path(init.checkpoint).expanduser()
    if is_run(path):
        sd, _, loaded = run_weights(path, "generator", init.weights)
        found = config_from_dict(loaded.state["generator_config"])
    else:
        cls = VideoGenerator if video else ImageGenerator
        checkpoint = open_checkpoint(path if path.exists() else str(init.checkpoint), model_type=cls.model_type)
        if checkpoint.model_type in (ImageGenerator.model_type, VideoGenerator.model_type):
            _check_kind(init.checkpoint, checkpoint.model_type == VideoGenerator.model_type, video)
        gen = cls.from_checkpoint(checkpoint)  # or demo, a name
        found, sd = gen.config, gen.transformer.state_dict()
    _check_kind(init.checkpoint, isinstance(found, VideoGeneratorConfig), video)
    diff = [f for f in (VIDEO_ARCH_FIELDS if video else ARCH_FIELDS) if getattr(found, f) != getattr(config, f)]
    if diff:
        said = ", ".join(f"{f}={getattr(found, f)} vs {getattr(config, f)}" for f in diff)
        raise ValueError(f"init.checkpoint {init.checkpoint} has another architecture than the recipe and data "
                         f"give ({said}); pick the matching preset, or set model_args")
    return sd


def _check_kind(source: str, found_video: bool, video: bool) -> None:
    """An image generator fine-tunes from an image generator, a video generator from a video one."""
    if found_video != video:
        found = "a video generator" if found_video else "an image generator"
        data, want = ("a video", "video") if video else ("an image", "image")
        raise ValueError(f"init.checkpoint {source} holds {found}, but the data is {data} token set; fine-tune a "
                         f"{want} generator from a {want} generator (a run or an export of one), or drop "
                         "init.checkpoint")
