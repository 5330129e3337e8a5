"""evaluate-video on a tiny video tokenizer and short synthetic videos (PyAV), with the random-weight I3D."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from open_magvit2.eval.backbones import load_lpips
from open_magvit2.eval.datasets import centre_window, load_clip
from open_magvit2.eval.metrics import frechet_distance_svd
from open_magvit2.eval.video import VideoEvalConfig, VideoNets, evaluate_video, i3d_input

pytest.importorskip("av")


class _Recording(torch.nn.Module):
    """Stands in for the I3D (whose architecture and loading are tested in test_backbones; four full passes at
    224² would cost half a minute of CPU here) and keeps what it was given and what it returned."""

    def __init__(self) -> None:
        super().__init__()
        self.net = lambda x: torch.stack(  # (B, 9) clip statistics
            [x.mean((2, 3, 4)), x.std((2, 3, 4)), x[:, :, :, ::32, ::32].flatten(2).mean(2)], 1).flatten(1)
        self.inputs, self.outputs = [], []

    def forward(self, x):
        self.inputs.append(x.clone())
        self.outputs.append(self.net(x))
        return self.outputs[-1]


def _official_i3d_preprocess(video: torch.Tensor) -> torch.Tensor:
    """spec §7.3 written out as the official script does it: numpy uint8 (B, T, H, W, C) → FloatTensor → resize."""
    u8 = (((video + 1) / 2) * 255.0).permute(0, 2, 3, 4, 1).byte().numpy()
    b, t, _, _, c = u8.shape
    frames = torch.FloatTensor(u8).flatten(end_dim=1).permute(0, 3, 1, 2).contiguous()
    frames = F.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False)
    return 2.0 * frames.view(b, t, c, 224, 224).transpose(1, 2).contiguous() / 255.0 - 1


@pytest.fixture(scope="module")
def ucf(tmp_path_factory, photo):
    from open_magvit2.data.video import write_video

    root = tmp_path_factory.mktemp("ucf")
    (root / "train" / "ClassA").mkdir(parents=True)
    base = photo("astronaut")[::6, ::6][:40, :48]
    for name, n in (("v1.mp4", 12), ("v2.mp4", 11), ("short.mp4", 5)):
        frames = np.stack([np.roll(base, 3 * i + len(name), axis=1) for i in range(n)]).astype(np.uint8)
        write_video(root / "train" / "ClassA" / name, frames, fps=25)
    return root


def test_centre_window_is_the_official_one():
    assert centre_window(20, 9) == (6, 15) and centre_window(9, 9) == (0, 9) and centre_window(8, 9) is None
    assert centre_window(100, 17) == (42, 59)  # frames center-8 .. center+8 with center = n // 2


def test_evaluate_video_equals_direct_computation(ucf, weights, tmp_path):
    from open_magvit2.data.video import uint8_to_video
    from open_magvit2.tokenizer import TokenizerConfig
    from open_magvit2.tokenizer.video import VideoTokenizer

    torch.manual_seed(0)
    tok = VideoTokenizer(TokenizerConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=18, dims=3)).eval()
    nets = VideoNets(_Recording(), load_lpips("alex", weights["alex"]), load_lpips("vgg", weights["vgg"]))
    cfg = VideoEvalConfig(checkpoint="in-memory", data=str(ucf), output=str(tmp_path), num_frames=9, size=32,
                          batch_size=4, num_workers=0, progress=False)
    r = evaluate_video(cfg, model=tok, nets=nets)
    assert r.skipped == ["ClassA/short.mp4"] and r.num_clips == 2

    clips = [load_clip(ucf / "train" / "ClassA" / f, 9, 32) for f in ("v1.mp4", "v2.mp4")]
    x = uint8_to_video(torch.stack(clips))  # (2, 3, 9, 32, 32)
    with torch.no_grad():
        out = tok(x)
        rec = out.reconstruction.clamp(-1, 1)
        frames = lambda v: v.transpose(1, 2).flatten(0, 1)  # noqa: E731
        lp = nets.alex(frames(x), frames(rec)).flatten()
    real_in, rec_in = nets.i3d.inputs
    torch.testing.assert_close(real_in, _official_i3d_preprocess(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(rec_in, _official_i3d_preprocess(rec), rtol=0, atol=1e-6)
    torch.testing.assert_close(i3d_input(x), real_in)
    assert r.rfvd == pytest.approx(frechet_distance_svd(*nets.i3d.outputs), rel=1e-9)
    assert r.lpips_alex == pytest.approx(float(lp.mean()), rel=1e-6)  # mean over videos × frames
    assert r.used_codes == int((torch.bincount(out.quantizer.indices.flatten()) > 0).sum())
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["skipped"] == ["ClassA/short.mp4"]
    assert (tmp_path / "clips.txt").read_text().split() == ["ClassA/v1.mp4", "ClassA/v2.mp4"]


def test_clip_loader_centre_crops_deterministically(ucf):
    a = load_clip(ucf / "train" / "ClassA" / "v1.mp4", 9, 32)
    b = load_clip(ucf / "train" / "ClassA" / "v1.mp4", 9, 32)
    assert a.shape == (3, 9, 32, 32) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert load_clip(ucf / "train" / "ClassA" / "short.mp4", 9, 32) is None
