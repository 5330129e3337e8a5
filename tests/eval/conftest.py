"""Shared fixtures for the evaluation tests: random-weight metric networks under their official file names in a
temporary torch hub cache, a tiny tokenizer, and a few small photographs (scikit-image's sample data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from open_magvit2.eval.backbones import write_random_backbones


@pytest.fixture(scope="session")
def hub_dir(tmp_path_factory) -> Path:
    """A torch hub directory whose ``checkpoints/`` holds random weights with the official file names."""
    d = tmp_path_factory.mktemp("hub")
    write_random_backbones(d / "checkpoints", seed=0)
    return d


@pytest.fixture
def hub_cache(hub_dir):
    """Point torch.hub (and so torchvision, lpips, torch-fidelity, pytorch-fid) at the random-weight cache."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(hub_dir))
    yield hub_dir / "checkpoints"
    torch.hub.set_dir(old)


@pytest.fixture(scope="session")
def weights(hub_dir) -> dict[str, str]:
    c = hub_dir / "checkpoints"
    return {
        "inception": str(c / "weights-inception-2015-12-05-6726825d.pth"),
        "alex": str(c / "alexnet-owt-7be5be79.pth"),
        "vgg": str(c / "vgg16-397923af.pth"),
        "i3d": str(c / "i3d_pretrained_400.pt"),
    }


def photo(name: str) -> np.ndarray:
    """An RGB uint8 photo from scikit-image's sample data (grey ones are stacked to RGB)."""
    from skimage import data

    a = getattr(data, name)()
    return np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]


@pytest.fixture(name="photo", scope="session")
def photo_fixture():
    return photo


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    """Five photos in two synset folders, of odd sizes (so resize, crop and padding all act)."""
    root = tmp_path_factory.mktemp("val")
    for i, (name, crop) in enumerate([("astronaut", (0, 0, 201, 161)), ("coffee", (10, 20, 151, 171)),
                                      ("chelsea", (0, 0, 131, 171)), ("rocket", (0, 0, 181, 121)),
                                      ("camera", (0, 0, 91, 111))]):
        y, x, h, w = crop
        folder = root / ("n0001" if i < 3 else "n0002")
        folder.mkdir(exist_ok=True)
        Image.fromarray(photo(name)[y : y + h, x : x + w]).save(folder / f"img{i}.png")
    return root


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    from open_magvit2.tokenizer import ImageTokenizer, TokenizerConfig

    torch.manual_seed(0)
    tok = ImageTokenizer(TokenizerConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=18))
    d = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def reconstruction_nets(weights):
    """The metric networks of evaluate-tokenizer, loaded once for all pipeline tests."""
    from open_magvit2.eval.reconstruction import ReconstructionNets, TokenizerEvalConfig

    cfg = TokenizerEvalConfig(checkpoint="", data="", output="", inception_weights=weights["inception"],
                              lpips_alex_weights=weights["alex"], lpips_vgg_weights=weights["vgg"])
    return ReconstructionNets.load(cfg)
