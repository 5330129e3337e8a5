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


class RecordedTransformer(trainer.GeneratorTransformer):
    """The trainer's model class, remembering its instances."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        MODELS.append(self)


if __name__ == "__main__":
    trainer.GeneratorTransformer = RecordedTransformer
    dump = Path(sys.argv[1])
    code = main(sys.argv[2:])
    if code == 0 and MODELS:
        rank = int(os.environ.get("RANK", "0"))
        params = {n: local(p.detach()).clone() for n, p in MODELS[-1].named_parameters()}
        torch.save(params, dump / f"rank{rank}.pt")
    sys.exit(code)
