"""``open-magvit2 demo``: the whole system on the bundled demo models, offline, in about a minute on a CPU.

1. the demo image tokenizer reconstructs a bundled photo that no demo model was trained on, at its own resolution:
   a side-by-side PNG and its PSNR, the token grid shape, the number of distinct codes and a picture of the tokens;
2. the demo video tokenizer reconstructs a bundled clip (camera motion over that held-out photo): the
   reconstruction and a side-by-side mp4, and the PSNR;
3. the demo generator samples 8 digits of each class 0–9: a 10 × 8 grid, one row per class;
4. the demo video generator samples one moving-digit clip per class 0–9, side by side, and continues the first
   frame of a held-out clip (image-to-video) next to the real clip: two mp4s.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from open_magvit2.checkpoints.hub import demo_sample
from open_magvit2.demo.data import DEMO_CLIP, DEMO_PHOTO
from open_magvit2.drawing import reconstruct_photo, side_by_side, token_colours
from open_magvit2.generator import ImageGenerator
from open_magvit2.imaging import image_grid, psnr_uint8, save_image, to_uint8
from open_magvit2.tokenizer import ImageTokenizer, VideoTokenizer

CLASSES, PER_CLASS = 10, 8


def photo_part(out: Path, device: torch.device) -> dict[str, Path]:
    tok = ImageTokenizer.from_pretrained("demo", device=device)
    photo = np.asarray(Image.open(demo_sample(DEMO_PHOTO)).convert("RGB"))
    rec, indices = reconstruct_photo(tok, photo)
    grid = indices[0].cpu().numpy()
    paths = {
        "photo": save_image(side_by_side(photo, rec), out / "photo_side_by_side.png"),
        "tokens": save_image(token_colours(grid, tok.config.spatial_factor), out / "photo_tokens.png"),
    }
    print(f"photo: {photo.shape[1]}×{photo.shape[0]} held-out photo → {grid.shape[0]}×{grid.shape[1]} tokens, "
          f"{len(np.unique(grid))} distinct codes of {tok.config.codebook_size}; "
          f"PSNR {psnr_uint8(rec, photo):.2f} dB")
    return paths


def video_part(out: Path, device: torch.device) -> dict[str, Path]:
    from open_magvit2.data.video_io import probe_video, read_video, video_to_uint8, write_video

    vtok = VideoTokenizer.from_pretrained("demo", device=device)
    path = demo_sample(DEMO_CLIP)
    clip = read_video(path)  # (3, T, H, W) in [-1, 1]
    with torch.no_grad():
        rec = vtok.decode(vtok.encode(clip[None].to(device)))[0].clamp(-1, 1).cpu()
    fps = probe_video(path).fps
    a, b = video_to_uint8(clip), video_to_uint8(rec)  # (T, H, W, 3)
    paths = {
        "clip": write_video(out / "clip_reconstruction.mp4", b, fps=fps),
        "clip_side_by_side": write_video(out / "clip_side_by_side.mp4", side_by_side(a, b), fps=fps),
    }
    grid = tuple(vtok.encode(clip[None].to(device)).shape[1:])
    print(f"video: {a.shape[0]} frames of {a.shape[2]}×{a.shape[1]} → tokens {grid}, PSNR {psnr_uint8(b, a):.2f} dB")
    return paths


def generator_part(out: Path, device: torch.device, seed: int = 0) -> dict[str, Path]:
    gen = ImageGenerator.from_pretrained("demo", device=device)
    labels = torch.arange(CLASSES, device=device).repeat_interleave(PER_CLASS)
    with torch.no_grad():
        images = gen.sample_images(labels, generator=torch.Generator(device).manual_seed(seed))
    tiles = [np.kron(im, np.ones((2, 2, 1), dtype=np.uint8)) for im in to_uint8(images)]  # 2× larger pixels
    path = save_image(image_grid(tiles, columns=PER_CLASS), out / "digits_grid.png")
    print(f"generator: {CLASSES} classes × {PER_CLASS} samples (row k = digit k), CFG {gen.config.sample_cfg_scale}")
    return {"digits": path}


def video_generator_part(out: Path, device: torch.device, seed: int = 0) -> dict[str, Path]:
    """One generated clip per digit side by side (``video_digits.mp4``), and a held-out clip's first frame
    continued by the generator next to the real clip (``video_continue.mp4``), pixels enlarged 2×."""
    from open_magvit2.data.video_io import video_to_uint8, write_video
    from open_magvit2.demo.data import moving_digits
    from open_magvit2.generator import VideoGenerator
    from open_magvit2.imaging import uint8_to_tensor

    gen = VideoGenerator.from_pretrained("demo", device=device)
    g = torch.Generator(device).manual_seed(seed)
    big = np.ones((1, 2, 2, 1), dtype=np.uint8)  # 2× larger pixels, frame by frame
    with torch.no_grad():
        clips = gen.sample_videos(torch.arange(CLASSES, device=device), generator=g)
    row = np.concatenate([np.kron(video_to_uint8(c.cpu()), big) for c in clips], axis=2)  # (T, H, 10·W, 3)
    real, labels = moving_digits("held_out", 1, seed=seed)
    first = uint8_to_tensor(real[0, 0]).to(device)
    with torch.no_grad():
        cont = gen.sample_videos(torch.from_numpy(labels).to(device), first_frame=first, generator=g)[0].cpu()
    pair = side_by_side(np.kron(real[0], big), np.kron(video_to_uint8(cont), big))
    paths = {"video_digits": write_video(out / "video_digits.mp4", row, fps=8),
             "video_continue": write_video(out / "video_continue.mp4", pair, fps=8)}
    print(f"video generator: one {gen.num_frames}-frame {gen.frame_size}² clip per digit 0–9 (left to right), and "
          f"a held-out digit {int(labels[0])}'s first frame continued (real clip left, generated right)")
    return paths


def run_demo(out: str | Path = "demo-output", device: str | torch.device | None = None) -> dict[str, Path]:
    """Run the four parts; write everything under ``out`` and return the paths."""
    import importlib.util

    from open_magvit2.data.video_io import INSTALL_HINT
    from open_magvit2.device import pick_device

    if importlib.util.find_spec("av") is None:  # check before writing anything: no half-finished demo-output/
        raise ValueError(f"the demo's clip part needs PyAV: {INSTALL_HINT}")
    dev = pick_device(device if device is None or isinstance(device, str) else str(device))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    paths = {**photo_part(out, dev), **video_part(out, dev), **generator_part(out, dev),
             **video_generator_part(out, dev)}
    print(f"done in {time.perf_counter() - t0:.0f} s with the demo models (demo quality, not the paper's models); "
          f"wrote {len(paths)} files:")
    for name, p in paths.items():
        print(f"  {name:18s} {p}")
    return paths
