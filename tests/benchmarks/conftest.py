import pytest
import torch

from open_magvit2.generator import GENERATOR_PRESETS, GeneratorTransformer

from official import official_state_dict


@pytest.fixture(scope="session")
def tiny_transformer():
    """ar_tiny's transformer weights in a bare GeneratorTransformer."""
    sd = official_state_dict("ar_tiny")
    model = GeneratorTransformer(config=GENERATOR_PRESETS["tiny"])
    model.load_state_dict({k.removeprefix("transformer."): v for k, v in sd.items() if k.startswith("transformer.")})
    return model.eval()


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: tiny models, hundreds of small ops per step (see tests/generator/conftest.py)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
