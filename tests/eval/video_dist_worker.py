"""Worker of the 2-rank evaluate-video test in test_video.py (a plain module so that spawned processes import it)."""

from __future__ import annotations

import torch
import torch.distributed as dist


class RecordingI3D(torch.nn.Module):
    """Stands in for the I3D (whose architecture and loading are tested in test_backbones; full passes at 224² cost
    half a minute of CPU here) and keeps what it was given and what it returned: (B, 9) clip statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.stack([x.mean((2, 3, 4)), x.std((2, 3, 4)), x[:, :, :, ::32, ::32].flatten(2).mean(2)], 1)
        self.inputs.append(x.clone())
        self.outputs.append(out.flatten(1))
        return self.outputs[-1]


def tiny_video_tokenizer():
    from open_magvit2.tokenizer import TokenizerConfig
    from open_magvit2.tokenizer.video import VideoTokenizer

    torch.manual_seed(0)
    return VideoTokenizer(TokenizerConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=18, dims=3)).eval()


def run(rank: int, world: int, init_file: str, cfg: object, out_dir: str) -> None:
    from open_magvit2.eval.video import VideoNets, evaluate_video

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        result = evaluate_video(cfg, model=tiny_video_tokenizer(), nets=VideoNets(RecordingI3D(), None, None))
        torch.save(None if result is None else result.to_dict(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
