"""The evaluation networks, loaded only from files on disk (spec §9 item 24: the official code downloads them).

* InceptionV3: torch-fidelity's TF-ported ``FeatureExtractorInceptionV3`` (the 2015-12-05 TensorFlow graph), fed
  in one of two ways (:class:`InceptionFeatures`): the pytorch-fid way the official tokenizer evaluation uses for
  rFID (float images, ``F.interpolate`` to 299, ``2x − 1``; spec §7.1), or the TensorFlow way of the ADM evaluator
  used for generation FID/IS/precision/recall (uint8 images, TF1 bilinear resize, ``(x − 128)/128``).
  Both released conversions of that graph load: torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``
  and pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (same key names).
* LPIPS: the ``lpips`` package (v0.1 linear heads ship inside it); its AlexNet/VGG16 trunk comes from the
  torchvision ImageNet file, which we read from disk instead of letting torchvision download it.
* I3D: :mod:`open_magvit2.eval.i3d` (no package ships it), weights ``i3d_pretrained_400.pt``.

Every loader takes an explicit path or finds the official file name in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``); a missing file raises ``FileNotFoundError`` naming the file and its URL.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class WeightsFile:
    """An official weights file: its file name and where it is published."""

    filename: str
    url: str
    what: str


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
ALEXNET = WeightsFile(
    "alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "torchvision AlexNet (LPIPS-alex trunk)",
)
VGG16 = WeightsFile(
    "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth",
    "torchvision VGG16 (LPIPS-vgg trunk)",
)
I3D_400 = WeightsFile(
    "i3d_pretrained_400.pt",
    "https://drive.google.com/uc?export=download&id=1mQK8KD8G6UWRa5t87SRMm5PVXtlpneJT",
    "I3D Kinetics-400 (pytorch_i3d port, VideoGPT release; used by the official rFVD)",
)
LPIPS_TRUNKS = {"alex": ALEXNET, "vgg": VGG16}


def hub_checkpoint_dir() -> Path:
    """Where torch.hub (and so torchvision, torch-fidelity, pytorch-fid) caches downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(path: str | Path | None, candidates: tuple[WeightsFile, ...]) -> Path:
    """``path`` if given (it must exist), else the first candidate file present in the hub cache."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            names = " or ".join(f"{c.filename} ({c.url})" for c in candidates)
            raise FileNotFoundError(f"weights file not found: {p}. Expected {candidates[0].what}: {names}")
        return p
    for c in candidates:
        p = hub_checkpoint_dir() / c.filename
        if p.is_file():
            return p
    c = candidates[0]
    others = "".join(f" (or {o.filename} from {o.url})" for o in candidates[1:])
    raise FileNotFoundError(
        f"{c.what}: weights file {c.filename} not found. Download it from {c.url}{others} and pass its path, or "
        f"put it in {hub_checkpoint_dir()}; nothing is downloaded automatically"
    )


def _read_state_dict(path: Path, what: str) -> dict[str, Tensor]:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling failure means a bad file
        raise ValueError(f"{path} is not a readable {what} weights file ({str(e).splitlines()[0]})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors ({what})")
    return sd


def file_digest(path: str | Path) -> str:
    """First 12 hex digits of the file's SHA-256, recorded in reports so a number names the weights it used."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


# ---- InceptionV3 -------------------------------------------------------------------------------------------------

_TRUNK = (  # torch-fidelity's module order = pytorch-fid's blocks 0–3 (spec §7.1, 2048-d pool features)
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
    _read_state_dict(file, "InceptionV3")  # refuses pickled code before the library's own torch.load reads it
    try:
        net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(file)
        )
    except RuntimeError as e:
        raise ValueError(f"{file}: not an InceptionV3 FID weights file ({str(e).splitlines()[0]})") from None
    return InceptionFeatures(net, file).to(device).eval()


# ---- LPIPS -------------------------------------------------------------------------------------------------------


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
    sd = _read_state_dict(file, LPIPS_TRUNKS[net].what)
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated ``pretrained=`` argument
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    _copy_trunk(model.net, sd, file)
    model.weights_path = file
    return model.to(device).eval()


# ---- I3D ---------------------------------------------------------------------------------------------------------


def load_i3d(path: str | Path | None = None, device: torch.device | str = "cpu") -> nn.Module:
    """The pytorch_i3d ``InceptionI3d(400)`` with ``i3d_pretrained_400.pt`` from ``path`` or the hub cache."""
    from open_magvit2.checkpoints.official import load_strict
    from open_magvit2.eval.i3d import InceptionI3d

    file = resolve_weights(path, (I3D_400,))
    sd = _read_state_dict(file, I3D_400.what)
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


def write_random_backbones(directory: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write randomly initialised weights under the official file names (keys and shapes exact) into
    ``directory``: a stand-in for the hub cache in tests and benchmarks. Returns {"inception", "alex", "vgg",
    "i3d"} → path. Classifier layers that LPIPS never uses are stored as expanded zeros, so the files stay small."""
    import torchvision

    from open_magvit2.eval.i3d import InceptionI3d

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shapes = {
            "inception": torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                                         num_classes=1008).state_dict(),
            "alex": torchvision.models.alexnet(weights=None).state_dict(),
            "vgg": torchvision.models.vgg16(weights=None).state_dict(),
            "i3d": InceptionI3d(num_classes=400).state_dict(),
        }
    files = {"inception": INCEPTION_TORCH_FIDELITY, "alex": ALEXNET, "vgg": VGG16, "i3d": I3D_400}
    out = {}
    with _seeded(seed):
        for name, sd in shapes.items():
            out[name] = d / files[name].filename
            torch.save(_random_like(sd, ("classifier",) if name in ("alex", "vgg") else ()), out[name])
    return out
