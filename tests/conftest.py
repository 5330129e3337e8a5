import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/official.py: the golden-fixture helpers


@pytest.fixture(autouse=True)
def _deterministic_cpu():
    """fp32 "highest" matmul precision, as the fixtures were generated (spec §9 item 36)."""
    torch.set_float32_matmul_precision("highest")
    yield
