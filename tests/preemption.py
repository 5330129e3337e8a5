"""A model wrapper that dies mid-run, for the resume tests of the long evaluation commands."""

from __future__ import annotations

import torch


class FailingAt(torch.nn.Module):
    """The tokenizer, but it dies at forward call ``fail_at`` (a crash or pre-emption); ``None``: never."""

    def __init__(self, model: torch.nn.Module, fail_at: int | None) -> None:
        super().__init__()
        self.model, self.config, self.fail_at, self.calls = model, model.config, fail_at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("pre-empted")
        return self.model(x)
