"""FSDP2 (``fully_shard``) for the generator: sharding, sharded checkpoints, and gathering them offline.

For L and XL (0.8B / 1.5B parameters) the AdamW state alone is 8 bytes per parameter; sharding parameters,
gradients and optimiser state over the ranks (torchtitan's recipe) divides that by the number of ranks.

* :func:`shard_generator` shards every spatial and intra block, then the root (embeddings, final norm, heads).
  Parameters stay float32; bf16 comes from the same autocast as under DDP, so both paths compute the same step.
* Checkpoints: each rank writes its own shards (``shard-RRRRR.pt`` in the step directory, see
  :mod:`open_magvit2.train.checkpoint`) as plain local tensors: parameters by name and the AdamW state by
  parameter index. A resume needs the same number of ranks (as every resume does here, for the RNG streams).
* ``open_magvit2.train.checkpoint.gather_shards`` rebuilds the full weights from those files without a process
  group, for ``export``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor


def shard_generator(model: nn.Module, *, reshard_after_forward: bool = True) -> FSDPModule:
    """``fully_shard`` each transformer block, then the whole model (in place); returns the model."""
    for block in [*model.spatial_blocks, *model.factorized_blocks]:
        fully_shard(block, reshard_after_forward=reshard_after_forward)
    fully_shard(model, reshard_after_forward=reshard_after_forward)
    return model  # type: ignore[return-value]


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def local(t: Tensor) -> Tensor:
    """This rank's part of a sharded tensor (a plain tensor as is)."""
    return t.to_local() if isinstance(t, DTensor) else t


def full(t: Tensor) -> Tensor:
    """The whole value of a sharded or replicated DTensor (e.g. a gradient norm); a plain tensor as is."""
    return t.full_tensor() if isinstance(t, DTensor) else t


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """Hold the root's parameters (embeddings, norm, heads) unsharded, so that code which calls submodules
    directly (the KV-cache sampler) runs; every rank must enter it. The blocks gather their own in forward."""
    if not is_sharded(model):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """This rank's shards: ``{"model": {name: local tensor}, "optimizer": state dict with local tensors}``."""
    opt = optimizer.state_dict()
    state = {i: {k: local(v).clone() if isinstance(v, Tensor) else v for k, v in s.items()}
             for i, s in opt["state"].items()}
    return {"model": {n: local(p.detach()).clone() for n, p in model.named_parameters()},
            "optimizer": {"state": state, "param_groups": opt["param_groups"]}}


@torch.no_grad()
def load_sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer, shard: dict[str, Any]) -> None:
    """Inverse of :func:`sharded_state` on the same number of ranks."""
    params = dict(model.named_parameters())
    if set(params) != set(shard["model"]):
        missing = sorted(set(params) ^ set(shard["model"]))[:4]
        raise ValueError(f"the sharded checkpoint does not hold this model's parameters (e.g. {missing})")
    for name, p in params.items():
        local(p).copy_(shard["model"][name])
    by_index = [p for g in optimizer.param_groups for p in g["params"]]

    def to_param(v: Any, p: Tensor) -> Any:
        if isinstance(p, DTensor) and isinstance(v, Tensor) and v.dim() > 0:
            return DTensor.from_local(v, p.device_mesh, p.placements, run_check=False, shape=p.shape,
                                      stride=p.stride())
        return v

    opt = shard["optimizer"]
    state = {i: {k: to_param(v, by_index[int(i)]) for k, v in s.items()} for i, s in opt["state"].items()}
    optimizer.load_state_dict({"state": state, "param_groups": opt["param_groups"]})


class ShardedState:
    """This rank's model and optimiser shards as one stateful part (``TrainSession.register_shard``)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer

    def state_dict(self) -> dict[str, Any]:
        return sharded_state(self.model, self.optimizer)

    def load_state_dict(self, shard: dict[str, Any]) -> None:
        load_sharded_state(self.model, self.optimizer, shard)

    def parameters(self) -> Iterator[Tensor]:
        """This rank's parameter shards, as plain tensors (the session checks they are finite before a save)."""
        return (local(p.detach()) for p in self.model.parameters())
