"""Image → video inflation of tokenizer weights (docs/design.md O-28): initialise the causal-3D model from a 2D
checkpoint.

The official ``inflate_from_image`` pairs image and video tensors *by position*, which is only
right while both models register their modules in the same order. Here every tensor is paired *by name*: the
video name of ``X.weight`` is ``X.conv_1.weight`` when ``X`` is a convolution of the video model
(docs/design.md O-25), and the EMA twins follow the same map after flattening (docs/design.md O-02). The tensor
rules are the official ones:

* same shape (norms, AGN linears, biases) → copied;
* 2D kernel [O, I, kh, kw] → 3D kernel [O, I, kt, kh, kw] that is zero except the **last** temporal slice, which
  holds the 2D kernel. Under causal padding (docs/design.md O-25) the last slice sees the current frame, so a video
  of one frame is processed exactly as the image (1×1 kernels become 1×1×1);
* temporal upsampler (block (2, 2, 2), output c·8 instead of c·4) → the 2D kernel repeated twice along the output
  channels (in the last slice) and its bias repeated twice. In the 3D DCR order (docs/design.md O-26) the temporal
  offset is the slowest-varying part of the channel index, so both generated frames start as the 2D upsampler's output.

Inflation only copies, zeroes and repeats, so the result is bit-exact (checked against the official inflation,
``tests/fixtures/official/video_inflation_tiny``, by the sha256 of every tensor).
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from open_magvit2.checkpoints.official import EMA_PREFIX, EMA_SCALARS, ema_key, load_official_state_dict
from open_magvit2.fileio import atomic_write
from open_magvit2.tokenizer.config import TokenizerConfig, infer_tokenizer_config
from open_magvit2.tokenizer.model import Tokenizer


def inflate_tensor(image: Tensor, shape: tuple[int, ...], name: str = "tensor") -> Tensor:
    """One image tensor → the video tensor of ``shape`` by the rules in the module docstring."""
    shape = tuple(shape)
    if tuple(image.shape) == shape:
        return image.clone()
    kernel = image.dim() == 4 and len(shape) == 5 and shape[1] == image.shape[1] and shape[3:] == image.shape[2:]
    if kernel and shape[0] % image.shape[0] == 0:  # [O,I,kh,kw] → [n·O,I,kt,kh,kw]; n = 2: temporal upsampler
        video = image.new_zeros(shape)
        video[:, :, -1] = image.repeat(shape[0] // image.shape[0], 1, 1, 1)
        return video
    if image.dim() == 1 and len(shape) == 1 and shape[0] % image.shape[0] == 0:  # bias of a temporal upsampler
        return image.repeat(shape[0] // image.shape[0])
    raise ValueError(f"{name}: cannot inflate an image tensor of shape {tuple(image.shape)} to {shape}")


@functools.lru_cache(maxsize=8)
def _video_names(config: TokenizerConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """image parameter name → (video parameter name, video shape), read off a video model built on 'meta'."""
    with torch.device("meta"):
        target = Tokenizer(config.replace(dims=3)).state_dict()
    return {k.replace(".conv_1.", "."): (k, tuple(v.shape)) for k, v in target.items()}


def inflate_image_to_video(
    image_state_dict: Mapping[str, Tensor], *, config: TokenizerConfig | None = None
) -> OrderedDict[str, Tensor]:
    """Inflate an image tokenizer state dict into the video tokenizer's, by name (module docstring).

    Accepts our ``encoder.*``/``decoder.*`` weights or a whole official image ``state_dict`` (raw weights,
    ``model_ema.*`` twins, ``model_ema.decay``/``num_updates``; ``loss.*`` and ``model_ema.loss*`` — the
    discriminator and LPIPS — are dropped, as the official inflation does). Returns the same groups under the
    video names, in input order, so an official image checkpoint becomes an official-format video checkpoint.
    The architecture is inferred from the raw weights unless ``config`` (the image config) is given.
    """
    sd = dict(image_state_dict)
    raw = {k: v for k, v in sd.items() if k.startswith(("encoder.", "decoder."))}
    if config is None:
        if not raw:
            raise ValueError("no encoder.*/decoder.* tensors to infer the architecture from; pass config=")
        config = infer_tokenizer_config(raw)
    if config.dims != 2:
        raise ValueError("these weights already belong to a video (3D) tokenizer; inflation needs an image one")
    names = _video_names(config)
    flat = {ema_key(k): (ema_key(v), shape) for k, (v, shape) in names.items()}

    out: OrderedDict[str, Tensor] = OrderedDict()
    unexpected = []
    for key, tensor in sd.items():
        target = names.get(key) or flat.get(key)
        if target is not None:
            out[target[0]] = inflate_tensor(tensor, target[1], key)
        elif key in EMA_SCALARS:
            out[key] = tensor.clone()
        elif not (key.startswith("loss.") or key.startswith(EMA_PREFIX + "loss")):
            unexpected.append(key)
    has_ema = any(k in flat for k in sd)
    missing = [k for k in names if raw and k not in sd] + [k for k in flat if has_ema and k not in sd]
    if unexpected or missing:
        raise ValueError(
            f"the image weights do not match a {config.ch_mult} image tokenizer: "
            f"unexpected keys {unexpected[:8]}, missing keys {missing[:8]} "
            f"({len(unexpected)} unexpected, {len(missing)} missing)"
        )
    return out


def zero_past_taps(model: nn.Module) -> int:
    """Zero every temporal slice but the last of each causal 3D kernel of ``model``, in place; returns how many
    kernels changed. The last slices keep their (random) values.

    This is inflation's kernel rule applied to a fresh initialisation: under causal padding the last slice sees the
    current frame, so each frame's path starts as the image network the last slices form, and the past taps grow
    from zero under training. A video tokenizer trained from scratch on sparse moving content (bright digits on
    black) needs it to leave the all-black output (docs/training.md, "Video tokenizers from scratch").
    """
    changed = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv3d) and m.kernel_size[0] > 1:
                m.weight[:, :, :-1].zero_()
                changed += 1
    return changed


def inflate_official_checkpoint(image_ckpt: str | os.PathLike[str], video_ckpt: str | os.PathLike[str]) -> Path:
    """Inflate an official image ``.ckpt`` (EMA twins included) into an official-format video ``.ckpt``.

    The output is ``{"state_dict": OrderedDict}`` like the released files, written to a temporary file and
    renamed, and loads with ``VideoTokenizer.from_pretrained(video_ckpt)``.
    """
    video = inflate_image_to_video(load_official_state_dict(image_ckpt))
    return atomic_write(video_ckpt, lambda p: torch.save({"state_dict": video}, p))


__all__ = ["inflate_image_to_video", "inflate_official_checkpoint", "inflate_tensor", "zero_past_taps"]
