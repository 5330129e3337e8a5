"""Run ``open-magvit2 train-tokenizer`` under torchrun with two test hooks: every rank dumps its weights after the
last step (``DUMP_DIR``), and ``CRASH_RANK`` exits abruptly at step 2 (a dead rank)."""

from __future__ import annotations

import os
import sys

import torch

import open_magvit2.train.tokenizer as trainer
from open_magvit2.cli import main

real_step = trainer.train_step


def step(parts, micro, k, **kw):
    rank = int(os.environ["RANK"])
    if os.environ.get("CRASH_RANK") == str(rank) and k == 2:
        os._exit(3)  # no cleanup, no message: as a killed or crashed process
    out = real_step(parts, micro, k, **kw)
    if os.environ.get("DUMP_DIR") and k + 1 == int(os.environ["LAST_STEP"]):
        torch.save({"model": parts.tokenizer.state_dict(), "ema": parts.ema.state_dict(),
                    "disc": parts.loss.state_dict()}, f"{os.environ['DUMP_DIR']}/rank{rank}.pt")
    return out


trainer.train_step = step
sys.exit(main(sys.argv[1:]))
