"""Where a training run's weights start: an official ``.ckpt``, a ``save_pretrained`` directory, a run checkpoint,
or, for video, an image tokenizer inflated to 3D (spec §4.4). Every load is strict and checks the architecture.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from open_magvit2.checkpoints.hub import load_pretrained_dir, resolve_checkpoint
from open_magvit2.checkpoints.official import load_official_state_dict, tokenizer_weights
from open_magvit2.tokenizer.config import TokenizerConfig, infer_tokenizer_config
from open_magvit2.tokenizer.inflate import inflate_image_to_video
from open_magvit2.train.checkpoint import META_NAME, STATE_NAME, list_checkpoints, read_state_file

DISC_PREFIX = "discriminator."  # our TokenizerLoss; official training files add "loss." in front


def _arch(cfg: TokenizerConfig) -> tuple:
    return (cfg.ch, cfg.ch_mult, cfg.num_res_blocks, cfg.z_channels, cfg.dims, cfg.in_channels, cfg.out_channels)


def _run_checkpoint(path: Path) -> Path | None:
    """``path`` itself when it is a run checkpoint, the newest one when it is a run directory, else None."""
    if (path / META_NAME).is_file():
        return path
    found = list_checkpoints(path / "checkpoints")
    return found[-1] if found else None


def read_tokenizer_weights(source: str | Path, weights: str = "ema", model_type: str = "image_tokenizer"
                           ) -> tuple[dict[str, Tensor], dict | None]:
    """(encoder/decoder weights, discriminator weights or None) from any tokenizer source: a path, ``demo`` (the
    bundled demo model of ``model_type``), a released name (downloaded once into the Hugging Face cache) or a hub
    repo id."""
    path = resolve_checkpoint(source, model_type)
    ckpt = _run_checkpoint(path) if path.is_dir() else None
    if ckpt is not None:
        state = read_state_file(ckpt / STATE_NAME)
        if state.get("kind") != "tokenizer":
            raise ValueError(f"{ckpt} is a {state.get('kind')} run checkpoint, not a tokenizer one")
        w = state["ema"] if weights == "ema" and state.get("ema") is not None else state["model"]
        disc = {k[len(DISC_PREFIX):]: v for k, v in state["loss"].items() if k.startswith(DISC_PREFIX)}
        return dict(w), disc or None
    if path.is_dir():
        found_type, _, sd = load_pretrained_dir(path)
        if not found_type.endswith("tokenizer"):
            raise ValueError(f"{path} holds a {found_type}, not a tokenizer")
        return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, None  # the demo's are float16
    sd = load_official_state_dict(path)
    prefix = "loss." + DISC_PREFIX
    disc = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return tokenizer_weights(sd, weights=weights), disc or None


def _check_arch(weights: dict[str, Tensor], expected: TokenizerConfig, source: str) -> None:
    found = infer_tokenizer_config(weights)
    if _arch(found) != _arch(expected):
        raise ValueError(
            f"{source} holds a tokenizer with ch={found.ch}, ch_mult={found.ch_mult}, "
            f"num_res_blocks={found.num_res_blocks}, z_channels={found.z_channels}, dims={found.dims}; the recipe "
            f"builds ch={expected.ch}, ch_mult={expected.ch_mult}, num_res_blocks={expected.num_res_blocks}, "
            f"z_channels={expected.z_channels}, dims={expected.dims}. Pick the matching preset in the recipe's model"
        )


def load_tokenizer_init(init, config: TokenizerConfig) -> tuple[dict[str, Tensor] | None, dict | None]:
    """The recipe's ``init`` section → (tokenizer weights, discriminator weights), each None when not given.

    A discriminator comes only from an official training checkpoint or one of our run checkpoints; released
    files hold none, so it then starts fresh (spec §9 item 35).
    """
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
