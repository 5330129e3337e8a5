import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/official.py: the golden-fixture helpers


@pytest.fixture
def one_thread():
    """One intra-op thread, restored afterwards. Tiny models run hundreds of small ops per step, and with 2 threads
    on a shared 2-core machine every op waits for a descheduled worker (10-20x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _deterministic_cpu():
    """fp32 "highest" matmul precision, as the fixtures were generated (docs/design.md O-15)."""
    torch.set_float32_matmul_precision("highest")
    yield


@pytest.fixture(autouse=True, scope="module")
def _fresh_compile_caches():
    """Each test module starts without the graphs ``torch.compile`` kept for earlier modules: their count per code
    object is capped (``recompile_limit``, 8), and a decode step compiled for many tiny models across modules would
    otherwise hit the cap in whichever module comes later."""
    yield
    torch._dynamo.reset()
