"""Class-by-class sampling for the FID-50k protocol (spec §5.10), reproducible whatever the number of ranks.

The official script seeds one RNG per process (``global_seed·num_chunks + chunk_idx``), so its samples change with
the number of GPUs. Here each class owns a generator seeded from (global seed, class), classes are dealt to
ranks round-robin, and a class is always sampled in the same batches: the per-class images are identical on 1 or
N ranks (for a fixed ``batch_size``, device and dtype).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from open_magvit2.generator.api import ImageGenerator
from open_magvit2.imaging import to_uint8


def class_seed(global_seed: int, cls: int) -> int:
    """A 63-bit seed for class ``cls``, derived from (global_seed, cls) by numpy's SeedSequence hashing."""
    state = np.random.SeedSequence([int(global_seed), int(cls)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def shard_classes(classes: Sequence[int], rank: int, world_size: int) -> list[int]:
    """The classes rank ``rank`` of ``world_size`` samples: every world_size-th one, starting at ``rank``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return list(classes)[rank::world_size]


@torch.no_grad()
def sample_class(
    gen: ImageGenerator, cls: int, num: int, *, seed: int, batch_size: int = 50, progress: bool = False, **sampling: Any
) -> np.ndarray:
    """``num`` images of class ``cls`` as uint8 (num, H, W, 3), using the class's own seeded generator.

    ``sampling`` goes to :meth:`ImageGenerator.generate` (cfg_scale, temperature, top_k, top_p).
    """
    if num < 1 or batch_size < 1:
        raise ValueError(f"num and batch_size must be >= 1, got num={num}, batch_size={batch_size}")
    device = gen.transformer.pre_emb.weight.device
    rng = torch.Generator(device=device).manual_seed(class_seed(seed, cls))
    out = []
    for start in range(0, num, batch_size):
        labels = torch.full((min(batch_size, num - start),), int(cls), dtype=torch.int64, device=device)
        indices = gen.generate(labels, generator=rng, progress=progress, **sampling)
        out.append(to_uint8(gen.decode(indices)))
    return np.concatenate(out)


def sample_shard(
    gen: ImageGenerator,
    classes: Sequence[int],
    num_per_class: int,
    *,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 50,
    on_class: Callable[[int], None] | None = None,
    **sampling: Any,
) -> dict[int, np.ndarray]:
    """Samples of this rank's share of ``classes``: {class: uint8 (num_per_class, H, W, 3)}."""
    out = {}
    for cls in shard_classes(classes, rank, world_size):
        out[cls] = sample_class(gen, cls, num_per_class, seed=seed, batch_size=batch_size, **sampling)
        if on_class is not None:
            on_class(cls)
    return out
