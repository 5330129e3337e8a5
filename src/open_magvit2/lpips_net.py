"""LPIPS (Zhang et al. 2018), the one home of the network for the tokenizer's perceptual loss
(``losses/perceptual.py``) and the reconstruction metrics (``eval/``).

The ``lpips`` package's v0.1 network, inputs in [−1, 1]: its linear heads ship inside the package; its AlexNet or
VGG16 trunk comes from the torchvision ImageNet file, which is read from disk (``weight_files.py``) instead of
letting torchvision download it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from open_magvit2.weight_files import WeightsFile, read_state_dict, resolve_weights

ALEXNET = WeightsFile(
    "alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "torchvision AlexNet (LPIPS-alex trunk)",
)
VGG16 = WeightsFile(
    "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
    "torchvision VGG16 (LPIPS-vgg trunk)",
)
LPIPS_TRUNKS = {"alex": ALEXNET, "vgg": VGG16}


def _copy_trunk(trunk: nn.Module, sd: dict[str, Tensor], file: Path) -> None:
    """lpips keeps torchvision's ``features[i]`` modules under ``slice*.i``: copy ``features.i.*`` into them."""
    own = trunk.state_dict()
    src = {k: f"features.{k.split('.', 1)[1]}" for k in own}  # "slice2.3.weight" -> "features.3.weight"
    missing = [s for s in src.values() if s not in sd]
    if missing:
        raise ValueError(f"{file}: not the torchvision ImageNet file of this LPIPS trunk (missing {missing[:3]})")
    bad = [s for k, s in src.items() if sd[s].shape != own[k].shape]
    if bad:
        raise ValueError(f"{file}: tensor shapes do not match the LPIPS trunk ({bad[:3]}); wrong network's file?")
    trunk.load_state_dict({k: sd[s] for k, s in src.items()}, strict=True)


def load_lpips(net: str, path: str | Path | None = None, device: torch.device | str = "cpu") -> nn.Module:
    """``lpips.LPIPS(net=net)`` v0.1 (inputs in [−1, 1]) with its trunk read from ``path`` or the hub cache."""
    import lpips

    if net not in LPIPS_TRUNKS:
        raise ValueError(f"LPIPS network must be one of {sorted(LPIPS_TRUNKS)}, got {net!r}")
    file = resolve_weights(path, (LPIPS_TRUNKS[net],))
    sd = read_state_dict(file, LPIPS_TRUNKS[net].what)
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated ``pretrained=`` argument
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    _copy_trunk(model.net, sd, file)
    model.weights_path = file
    return model.to(device).eval()
