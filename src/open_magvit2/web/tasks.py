"""What the web app computes, without the web: the four tabs as plain functions over files and arrays, the
limits on what they accept, and one-line messages for what a user can get wrong. ``web/app.py`` only wires them
to Gradio components, so everything here is tested without a browser.

Arrays are HWC uint8 (pictures) or (T, H, W, 3) uint8 (clips). The limits (also in the README):

* uploads: at most :data:`MAX_UPLOAD_MB` MB per file (enforced by the server, before any of this runs);
* images: at most :data:`MAX_IMAGE_PIXELS` pixels are opened at all; the original-resolution path takes at most
  :data:`MAX_ORIGINAL_PIXELS` (CPU time and memory grow with the area; the resize path has no such limit);
* clips: the first :data:`MAX_CLIP_FRAMES` frames (cut to the tokenizer's frame rule, 4k+1 for the released model),
  the shorter side resized to the tokenizer's native size (16 × its factor) and the longer side cropped to at most
  twice that; a clip needs at least one temporal step (5 frames for the released model);
* samples: at most :data:`MAX_SAMPLES` per request;
* a generated clip's first frame: any image within the image limits, resized and centre-cropped to the video
  generator's frame size (as the tokenizer tab's default mode).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from open_magvit2.checkpoints.hub import native_size
from open_magvit2.data.video_io import iter_frames, probe_video, uint8_to_video, video_to_uint8, write_video
from open_magvit2.drawing import reconstruct_photo, side_by_side, token_colours
from open_magvit2.eval.metrics import ssim_torch
from open_magvit2.generator import ImageGenerator, VideoGenerator
from open_magvit2.generator.sampling import check_sampling
from open_magvit2.imaging import (
    center_crop,
    image_grid,
    open_rgb,
    psnr_uint8,
    resize_shorter_side,
    shorter_side_size,
    to_uint8,
    uint8_to_tensor,
)
from open_magvit2.tokenizer import ImageTokenizer, VideoTokenizer

MAX_UPLOAD_MB = 25
MAX_IMAGE_PIXELS = 40_000_000
MAX_ORIGINAL_PIXELS = 1024 * 1024
MAX_CLIP_FRAMES = 17
MAX_SAMPLES = 16
PREVIEW_SIDE = 128  # generated images and clips smaller than this are enlarged (nearest neighbour) for display
GENERATED_FPS = 8.0  # frame rate of the generated clips' mp4 files
# the page's line for an input too large for the memory (the rest of a user error reads as errors.describe_error)
OUT_OF_MEMORY = "out of memory: use a smaller image or clip, the resize mode, or fewer samples"


def _fmt(value: float, unit: str = "") -> str:
    return "n/a" if math.isnan(value) else ("∞" if math.isinf(value) else f"{value:.2f}{unit}")


# ---- tokenizer tab ----------------------------------------------------------------------------------------------


class PhotoResult(NamedTuple):
    """One image through the tokenizer: pictures (HWC uint8) and measurements."""

    original: np.ndarray  # (H, W, 3): the image as encoded (after resize + crop, or as uploaded)
    reconstruction: np.ndarray  # (H, W, 3)
    tokens: np.ndarray  # (h·f, w·f, 3): one colour per code (drawing.token_colours)
    grid: tuple[int, int]  # token grid (h, w)
    distinct: int  # distinct codes in the grid
    codebook_size: int
    psnr: float  # dB, uint8 images (inf when identical)
    ssim: float  # scikit-image's SSIM definition on [0, 1] (NaN below 7×7 pixels)

    def summary(self) -> str:
        h, w = self.original.shape[:2]
        return (f"**PSNR {_fmt(self.psnr, ' dB')}** · SSIM {_fmt(self.ssim)} · {w}×{h} pixels → "
                f"{self.grid[0]}×{self.grid[1]} tokens · {self.distinct} distinct codes of {self.codebook_size:,}")


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    if min(a.shape[:2]) < 7:
        return float("nan")
    x, y = (torch.from_numpy(v).permute(2, 0, 1)[None].double() / 255.0 for v in (a, b))
    return float(ssim_torch(x, y)[0])


def read_photo(path: str | Path, factor: int, size: int | None) -> np.ndarray:
    """(H, W, 3) uint8 of an uploaded image, checked against the limits: resized and centre-cropped to ``size``,
    or at its own resolution (``size=None``)."""
    try:
        with Image.open(path) as im:  # reads the header only: refuse a huge image before decoding it
            w, h = im.size
    except (OSError, SyntaxError, Image.DecompressionBombError):
        w = h = 0  # not an image PIL knows: open_rgb says why
    if w * h > MAX_IMAGE_PIXELS:
        raise ValueError(f"{path}: the image is {w}×{h} ({w * h / 1e6:.0f} MP); the limit is "
                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP")
    if size is None and w * h > MAX_ORIGINAL_PIXELS:
        raise ValueError(f"{path}: the image is {w}×{h} ({w * h / 1e6:.1f} MP); at original resolution the limit "
                         f"is {MAX_ORIGINAL_PIXELS / 1e6:.1f} MP (CPU time and memory grow with the area): choose "
                         "the resize mode, or downscale it")
    img = open_rgb(path)
    if size is not None:
        img = center_crop(resize_shorter_side(img, size), size)
    elif math.ceil(img.height / factor) * math.ceil(img.width / factor) < 2:
        raise ValueError(f"{path}: {img.width}×{img.height} pixels is too small for this tokenizer (it needs at least "
                         f"2 token positions, {factor}×{2 * factor} pixels)")
    return np.array(img)  # writable: torch.from_numpy warns on a read-only array


def reconstruct_image(tok: ImageTokenizer, path: str | Path, *, original_resolution: bool = False) -> PhotoResult:
    """Encode and decode an image file: resized and centre-cropped to the tokenizer's native size (16 × its
    factor), or at its own resolution (zero-padded to a multiple of the factor, cropped back, docs/design.md O-49)."""
    f = tok.config.spatial_factor
    photo = read_photo(path, f, None if original_resolution else native_size(f))
    rec, indices = reconstruct_photo(tok, photo)
    grid = indices[0].cpu().numpy()  # (h, w)
    return PhotoResult(photo, rec, token_colours(grid, f), tuple(grid.shape), len(np.unique(grid)),
                       tok.config.codebook_size, psnr_uint8(rec, photo), _ssim(rec, photo))


# ---- generator tab ----------------------------------------------------------------------------------------------


def _check_request(gen: ImageGenerator | VideoGenerator, label: int, seed: int) -> None:
    n_cls = gen.config.num_classes
    if not isinstance(label, int) or not 0 <= label < n_cls:
        raise ValueError(f"choose a class: the model has classes 0..{n_cls - 1}, got {label!r}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"the seed must be a whole number >= 0, got {seed}")


def _enlarge(pictures: np.ndarray) -> tuple[np.ndarray, int]:
    """(..., H, W, 3) uint8 pictures under :data:`PREVIEW_SIDE` pixels enlarged (nearest neighbour), and by how
    much."""
    scale = max(1, PREVIEW_SIDE // pictures.shape[-3])
    return np.kron(pictures, np.ones((scale, scale, 1), dtype=np.uint8)), scale


def sample_grid(gen: ImageGenerator, label: int, *, cfg_scale: tuple[float, ...],
                temperature: tuple[float, ...], top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                num_samples: int = 8, progress: bool = False) -> tuple[np.ndarray, str]:
    """``num_samples`` images of class ``label`` as one grid (HWC uint8, images under :data:`PREVIEW_SIDE` pixels
    enlarged), and a line saying what was sampled. Settings as :meth:`ImageGenerator.generate`."""
    _check_request(gen, label, seed)
    if not 1 <= num_samples <= MAX_SAMPLES:
        raise ValueError(f"the number of samples must be 1..{MAX_SAMPLES}, got {num_samples}")
    check_sampling(cfg_scale, temperature, top_k, top_p, sub_tokens=gen.config.sub_tokens)
    device = next(gen.parameters()).device
    t0 = time.perf_counter()
    labels = torch.full((num_samples,), label, dtype=torch.int64, device=device)
    with torch.inference_mode():
        images = gen.sample_images(labels, cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p,
                                   generator=torch.Generator(device).manual_seed(seed), progress=progress)
    tiles, scale = _enlarge(to_uint8(images))  # (n, H, W, 3)
    grid = image_grid(list(tiles), columns=min(num_samples, 4))
    text = (f"{num_samples} samples of class {label} at {images.shape[-1]}×{images.shape[-2]} pixels"
            f"{f' (shown {scale}× larger)' if scale > 1 else ''}, CFG {'/'.join(f'{s:g}' for s in cfg_scale)}, "
            f"temperature {'/'.join(f'{t:g}' for t in temperature)}, top-k {top_k}, top-p {top_p:g}, seed {seed}; "
            f"{time.perf_counter() - t0:.1f} s")
    return grid, text


# ---- video tab --------------------------------------------------------------------------------------------------


class ClipResult(NamedTuple):
    """A clip through the video tokenizer: two mp4 files and measurements."""

    reconstruction: Path  # mp4 of the reconstruction
    side_by_side: Path  # mp4: original | reconstruction
    psnr: float  # dB over all frames, uint8
    frames: int  # frames used
    size: tuple[int, int]  # (H, W) of the frames used
    tokens: tuple[int, ...]  # token grid (t, h, w)

    def summary(self) -> str:
        t, (h, w) = self.frames, self.size
        grid = "×".join(str(v) for v in self.tokens)
        return f"**PSNR {_fmt(self.psnr, ' dB')}** · {t} frames of {w}×{h} → {grid} tokens"


def read_clip(vtok: VideoTokenizer, path: str | Path) -> tuple[torch.Tensor, float]:
    """(3, T, H, W) float in [−1, 1] of an uploaded clip, within the limits (module docstring), and its fps."""
    info = probe_video(path)
    f, side = vtok.config.spatial_factor, native_size(vtok.config.spatial_factor)
    resize = side if min(info.height, info.width) > side else None
    h, w = (info.height, info.width) if resize is None else shorter_side_size(info.height, info.width, side)
    crop = (min(h, 2 * side) // f * f, min(w, 2 * side) // f * f)
    if min(crop) == 0:
        raise ValueError(f"{path}: frames of {info.width}×{info.height} pixels are smaller than {f}, the "
                         "tokenizer's downsampling factor")
    frames = list(iter_frames(path, size=resize, crop=crop, max_frames=MAX_CLIP_FRAMES))
    step = vtok.frame_step
    if len(frames) < 1 + step:
        raise ValueError(f"{path}: the clip has {len(frames)} frame(s); this video tokenizer needs at least "
                         f"{1 + step} ({step}k+1 frames)")
    used = 1 + (len(frames) - 1) // step * step
    return uint8_to_video(torch.stack(frames[:used], dim=1)), info.fps or 8.0


def reconstruct_clip(vtok: VideoTokenizer, path: str | Path, out: str | Path) -> ClipResult:
    """Encode and decode a clip (read with :func:`read_clip`); write both mp4 files into the folder ``out``."""
    clip, fps = read_clip(vtok, path)
    device = next(vtok.parameters()).device
    with torch.inference_mode():
        indices = vtok.encode(clip[None].to(device))
        rec = vtok.decode(indices)[0].clamp(-1, 1).cpu()
    a, b = video_to_uint8(clip), video_to_uint8(rec)  # (T, H, W, 3)
    out = Path(out)
    return ClipResult(write_video(out / "reconstruction.mp4", b, fps=fps),
                      write_video(out / "side_by_side.mp4", side_by_side(a, b), fps=fps),
                      psnr_uint8(b, a), a.shape[0], a.shape[1:3], tuple(indices.shape[1:]))


# ---- video generator tab ----------------------------------------------------------------------------------------


def sample_clip(gen: VideoGenerator, label: int, out: str | Path, *, first_frame: str | Path | None = None,
                cfg_scale: tuple[float, ...], temperature: tuple[float, ...], seed: int = 0,
                class_name: str | None = None, progress: bool = False) -> tuple[Path, str]:
    """One clip of class ``label``, written as ``out/generated.mp4`` (frames under :data:`PREVIEW_SIDE` pixels
    enlarged, :data:`GENERATED_FPS` frames a second), and a line saying what was sampled. ``first_frame``: an
    image file the clip continues, resized and centre-cropped to the generator's frame size; the clip's frame 0 is
    then the tokenizer's reconstruction of it (:meth:`VideoGenerator.sample_videos`). Settings as
    :meth:`VideoGenerator.generate`."""
    _check_request(gen, label, seed)
    check_sampling(cfg_scale, temperature, sub_tokens=gen.config.sub_tokens)
    size = gen.frame_size
    frame = None
    if first_frame is not None:
        frame = uint8_to_tensor(read_photo(first_frame, gen.tokenizer.config.spatial_factor, size))
    device = next(gen.parameters()).device
    t0 = time.perf_counter()
    with torch.inference_mode():
        clip = gen.sample_videos(torch.tensor([label], device=device), first_frame=frame, cfg_scale=cfg_scale,
                                 temperature=temperature, generator=torch.Generator(device).manual_seed(seed),
                                 progress=progress)
    frames, scale = _enlarge(video_to_uint8(clip[0].cpu()))  # (T, H, W, 3)
    path = write_video(Path(out) / "generated.mp4", frames, fps=GENERATED_FPS)
    name = f" ({class_name})" if class_name is not None and class_name != f"class {label}" else ""
    text = (f"class {label}{name}: {frames.shape[0]} frames of {size}×{size} pixels"
            f"{f' (shown {scale}× larger)' if scale > 1 else ''} at {GENERATED_FPS:g} fps, "
            f"{'continuing the uploaded first frame' if frame is not None else 'from the class alone'}, "
            f"CFG {'/'.join(f'{s:g}' for s in cfg_scale)}, temperature {'/'.join(f'{t:g}' for t in temperature)}, "
            f"seed {seed}; {time.perf_counter() - t0:.1f} s")
    return path, text
