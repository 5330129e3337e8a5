import pytest

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
def _one_thread(one_thread):
    """Every test here runs on one intra-op thread (tests/conftest.py::one_thread)."""
