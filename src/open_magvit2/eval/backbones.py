"""The evaluation networks, loaded only from files on disk (docs/design.md O-51: the official code downloads them).

* InceptionV3: torch-fidelity's TF-ported ``FeatureExtractorInceptionV3`` (the 2015-12-05 TensorFlow graph), fed
  in one of two ways (:class:`InceptionFeatures`): the pytorch-fid way the official tokenizer evaluation uses for
  rFID (float images, ``F.interpolate`` to 299, ``2x − 1``; docs/design.md O-48), or the TensorFlow way of the ADM
  evaluator used for generation FID/IS/precision/recall (uint8 images, TF1 bilinear resize, ``(x − 128)/128``).
  Both released conversions of that graph load: torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``
  and pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (same key names).
* LPIPS: :mod:`open_magvit2.lpips_net`, the one home the tokenizer loss shares.
* I3D: :mod:`open_magvit2.eval.i3d` (no package ships it), weights ``i3d_pretrained_400.pt``.

Every loader takes an explicit path or finds the official file name in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, :mod:`open_magvit2.weight_files`); a missing file raises ``FileNotFoundError``
naming the file and its URL.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from open_magvit2.lpips_net import ALEXNET, VGG16
from open_magvit2.weight_files import WeightsFile, read_state_dict, resolve_weights

INCEPTION_TORCH_FIDELITY = WeightsFile(
    "weights-inception-2015-12-05-6726825d.pth",
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
    "InceptionV3 (torch-fidelity conversion of the TF 2015-12-05 graph)",
)
INCEPTION_PYTORCH_FID = WeightsFile(
    "pt_inception-2015-12-05-6726825d.pth",
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
    "InceptionV3 (pytorch-fid conversion of the TF 2015-12-05 graph, used by the official rFID)",
)
I3D_400 = WeightsFile(
    "i3d_pretrained_400.pt",
    "https://drive.google.com/uc?export=download&id=1mQK8KD8G6UWRa5t87SRMm5PVXtlpneJT",
    "I3D Kinetics-400 (pytorch_i3d port, VideoGPT release; used by the official rFVD)",
)

# ---- InceptionV3 -------------------------------------------------------------------------------------------------

_TRUNK = (  # torch-fidelity's module order = pytorch-fid's blocks 0–3 (docs/design.md O-48, 2048-d pool features)
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "MaxPool_2",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool",
)


class ADMFeatures(NamedTuple):
    """What the ADM evaluator reads from the TF graph, per image."""

    pool: Tensor  # (B, 2048) "pool_3"
    logits_unbiased: Tensor  # (B, 1008) pool_3 @ W (no bias), the softmax input of the Inception score
    spatial: Tensor  # (B, 2023) "mixed_6/conv" channels :7, flattened H, W, C (17·17·7), for sFID


class InceptionFeatures(nn.Module):
    """torch-fidelity's InceptionV3 with the two input protocols of the paper's numbers (module docstring)."""

    def __init__(self, extractor: nn.Module, weights_path: Path) -> None:
        super().__init__()
        self.net = extractor
        self.weights_path = weights_path

    @torch.no_grad()
    def fid_features(self, x01: Tensor) -> Tensor:
        """pytorch-fid protocol (official rFID): (B, 3, H, W) float in [0, 1] → (B, 2048) pool features."""
        x = F.interpolate(x01.float(), size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        for name in _TRUNK:
            x = getattr(self.net, name)(x)
        return x.flatten(1)

    @torch.no_grad()
    def adm_features(self, x_u8: Tensor) -> ADMFeatures:
        """ADM/TF protocol: (B, 3, H, W) uint8 → pool, bias-free logits and mixed_6/conv spatial features."""
        captured: list[Tensor] = []
        hook = self.net.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            pool, logits = self.net(x_u8)  # the library's own forward: TF1 resize, (x − 128) / 128
        finally:
            hook.remove()
        spatial = captured[0][:, :7].permute(0, 2, 3, 1).flatten(1)  # NHWC order, as TF flattens it
        return ADMFeatures(pool, logits, spatial.float())


def load_inception(
    path: str | Path | None = None, device: torch.device | str = "cpu", prefer: str = "pytorch-fid"
) -> InceptionFeatures:
    """InceptionV3 from ``path`` or the hub cache (``prefer`` picks which conversion is looked up first)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    order = (INCEPTION_PYTORCH_FID, INCEPTION_TORCH_FIDELITY)
    file = resolve_weights(path, order if prefer == "pytorch-fid" else order[::-1])
    read_state_dict(file, "InceptionV3")  # refuses pickled code before the library's own torch.load reads it
    try:
        net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(file)
        )
    except RuntimeError as e:
        raise ValueError(f"{file}: not an InceptionV3 FID weights file ({str(e).splitlines()[0]})") from None
    return InceptionFeatures(net, file).to(device).eval()


# ---- I3D ---------------------------------------------------------------------------------------------------------


def load_i3d(path: str | Path | None = None, device: torch.device | str = "cpu") -> nn.Module:
    """The pytorch_i3d ``InceptionI3d(400)`` with ``i3d_pretrained_400.pt`` from ``path`` or the hub cache."""
    from open_magvit2.checkpoints.official import load_strict
    from open_magvit2.eval.i3d import InceptionI3d

    file = resolve_weights(path, (I3D_400,))
    sd = read_state_dict(file, I3D_400.what)
    model = InceptionI3d(num_classes=400)
    own = model.state_dict()
    sd = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **sd}  # old files lack the counters
    load_strict(model, sd, what=f"I3D from {file}")
    model.weights_path = file
    return model.to(device).eval()


# ---- random stand-ins (tests and benchmarks: no download possible) ------------------------------------------------


@contextmanager
def _seeded(seed: int):
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def _random_like(sd: dict[str, Tensor], zero_prefixes: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """Random tensors with the shapes of ``sd``: He-normal conv/linear weights (random deep nets then keep O(1)
    activations instead of vanishing), BatchNorm statistics near identity, small biases. Keys starting with
    ``zero_prefixes`` become expanded zeros (stored as one element: unused layers cost no disk)."""
    out = {}
    for k, v in sd.items():
        if k.startswith(zero_prefixes):
            out[k] = torch.zeros(1, dtype=v.dtype).expand(v.shape)
        elif not v.dtype.is_floating_point:
            out[k] = torch.zeros(v.shape, dtype=v.dtype)
        elif k.endswith("weight") and v.dim() >= 2:
            out[k] = torch.randn(v.shape) * (2.0 / math.prod(v.shape[1:])) ** 0.5
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape) + 0.5
        elif k.endswith("weight"):
            out[k] = torch.ones(v.shape)
        else:
            out[k] = torch.randn(v.shape) * 0.1
    return out


def write_random_backbones(directory: str | Path, seed: int = 0,
                           only: tuple[str, ...] = ("inception", "alex", "vgg", "i3d")) -> dict[str, Path]:
    """Write randomly initialised weights under the official file names (keys and shapes exact) into
    ``directory``: a stand-in for the hub cache in tests and benchmarks. Returns {"inception", "alex", "vgg",
    "i3d"} → path, or the networks named in ``only``. Classifier layers that LPIPS never uses are stored as
    expanded zeros, so the files stay small."""
    import torchvision

    from open_magvit2.eval.i3d import InceptionI3d

    build = {
        "inception": lambda: torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                                             num_classes=1008),
        "alex": lambda: torchvision.models.alexnet(weights=None),
        "vgg": lambda: torchvision.models.vgg16(weights=None),
        "i3d": lambda: InceptionI3d(num_classes=400),
    }
    if not only or set(only) - set(build):
        raise ValueError(f"only must name some of {sorted(build)}, got {only!r}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    files = {"inception": INCEPTION_TORCH_FIDELITY, "alex": ALEXNET, "vgg": VGG16, "i3d": I3D_400}
    out = {}
    with _seeded(seed):
        for name, make in build.items():  # in this order, so a network's weights do not depend on ``only``
            if len(out) == len(set(only)):
                break
            with torch.device("meta"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sd = make().state_dict()
            weights = _random_like(sd, ("classifier",) if name in ("alex", "vgg") else ())
            if name in only:
                out[name] = d / files[name].filename
                torch.save(weights, out[name])
    return out
