"""torchrun worker of the distributed generator tests: the real ``open-magvit2`` command line, then each rank's final
parameters (its local shards under FSDP) written to ``DUMP_DIR/rank{R}.pt`` so that a test can compare the ranks.

Usage: ``torchrun ... generator_worker.py DUMP_DIR train-generator --config ... --data ... --output ...``
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

import open_magvit2.train.generator as trainer
from open_magvit2.cli import main
from open_magvit2.train.fsdp import local

MODELS: list[torch.nn.Module] = []
_BUILD = trainer.transformer_for


def recorded_transformer_for(config: object) -> torch.nn.Module:
    """The trainer's model factory, remembering the models it builds."""
    model = _BUILD(config)
    MODELS.append(model)
    return model


if __name__ == "__main__":
    trainer.transformer_for = recorded_transformer_for
    dump = Path(sys.argv[1])
    code = main(sys.argv[2:])
    if code == 0 and MODELS:
        rank = int(os.environ.get("RANK", "0"))
        params = {n: local(p.detach()).clone() for n, p in MODELS[-1].named_parameters()}
        torch.save(params, dump / f"rank{rank}.pt")
    sys.exit(code)
