"""Named tokenizer architectures: the released checkpoints (docs/design.md O-07, O-26) and a tiny CPU variant of each.

A ``*_tiny`` preset keeps its parent's levels, downsampling factor and codebook, with ch=32 and one ResBlock per
level, for tests and demos.
"""

from __future__ import annotations

from open_magvit2.tokenizer.config import TokenizerConfig

_FULL: dict[str, TokenizerConfig] = {
    # 128² → 16² tokens (8×); imagenet_128_L.ckpt
    "imagenet_128_L": TokenizerConfig(ch=128, ch_mult=(1, 2, 2, 4), num_res_blocks=4, z_channels=18),
    # 256² → 16² tokens (16×); imagenet_256_L.ckpt and the first stage of AR_256_{B,L,XL}
    "imagenet_256_L": TokenizerConfig(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=4, z_channels=18),
    "pretrain_256_262144": TokenizerConfig(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=4, z_channels=18),
    "pretrain_256_16384": TokenizerConfig(ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=4, z_channels=14),
    # 17×128² → 5×16² tokens; video_128_262144.ckpt (docs/design.md O-26)
    "ucf101_128_L": TokenizerConfig(ch=128, ch_mult=(1, 2, 2, 4), num_res_blocks=4, z_channels=18, dims=3),
}

TOKENIZER_PRESETS: dict[str, TokenizerConfig] = dict(_FULL)
TOKENIZER_PRESETS.update({f"{name}_tiny": cfg.replace(ch=32, num_res_blocks=1) for name, cfg in _FULL.items()})


def tokenizer_config(name: str) -> TokenizerConfig:
    """The preset called ``name``; ``ValueError`` listing the choices otherwise."""
    try:
        return TOKENIZER_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown tokenizer preset {name!r}; choose one of {sorted(TOKENIZER_PRESETS)}") from None
