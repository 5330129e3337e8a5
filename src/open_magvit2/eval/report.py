"""Writing evaluation results: ``metrics.json``, a markdown table, and two PNG figures (drawn with Pillow).

Every report carries its protocol next to its numbers (which weights, crops, counts, reference), so a number
can be compared with the paper or with another run without guessing how it was made.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from open_magvit2.fileio import atomic_write
from open_magvit2.imaging import image_grid, save_image


class Result:
    """Base of the evaluation result dataclasses: ``to_dict`` is what ``metrics.json`` holds."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    atomic_write(path, lambda p: p.write_text(json.dumps(_json_safe(payload), indent=2) + "\n"))
    return path


def markdown_table(title: str, rows: list[tuple[str, str, str]], protocol: dict[str, Any]) -> str:
    """A metric | value | how table, followed by the protocol as a bullet list."""
    lines = [f"# {title}", "", "| metric | value | how |", "|---|---|---|"]
    lines += [f"| {m} | {v} | {h} |" for m, v, h in rows]
    lines += ["", "Protocol:", ""] + [f"- {k}: {v}" for k, v in protocol.items()]
    return "\n".join(lines) + "\n"


def write_markdown(path: str | Path, text: str) -> Path:
    path = Path(path)
    atomic_write(path, lambda p: p.write_text(text))
    return path


def fmt(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


# ---- figures -----------------------------------------------------------------------------------------------------


def usage_histogram_png(path: str | Path, counts: np.ndarray, title: str, size: tuple[int, int] = (640, 400), *,
                        unused: int = 0) -> Path:
    """How often codes occur: x = log2(1 + occurrences) in unit bins, y = number of codes (log scale); bin 0 is
    the unused codes: the zeros in ``counts`` plus ``unused`` (for codebooks too large to list, ``counts`` holds the
    seen codes only). The title states used / total."""
    w, h = size
    left, right, top, bottom = 60, 20, 40, 40
    occ = np.log2(1 + counts.astype(np.float64)).astype(np.int64)
    hist = np.bincount(occ, minlength=1).astype(np.float64)  # hist[b] = codes with log2(1+count) in [b, b+1)
    hist[0] += unused
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    draw.text((left, 10), title, fill="black")
    pw, ph = w - left - right, h - top - bottom
    ymax = math.log10(max(hist.max(), 1)) + 1
    bar = pw / len(hist)
    for b, n in enumerate(hist):
        if n:
            y = ph * (math.log10(n) + 1) / ymax
            x0 = left + b * bar
            draw.rectangle([x0 + 1, top + ph - y, x0 + max(bar - 1, 1), top + ph], fill=(200, 60, 60) if b == 0 else
                           (60, 90, 200))
    draw.line([left, top + ph, left + pw, top + ph], fill="black")
    draw.line([left, top, left, top + ph], fill="black")
    for b in range(0, len(hist), max(1, len(hist) // 8)):
        draw.text((left + b * bar, top + ph + 5), f"2^{b}", fill="black")
    draw.text((left, h - 15), "occurrences per code (log2 bins; red = unused)", fill="black")
    draw.text((5, top), f"1e{int(ymax) - 1}", fill="black")
    draw.text((5, top + ph - 10), "codes", fill="black")
    return save_image(np.asarray(img), path)


def _fit(im: np.ndarray, side: int) -> np.ndarray:
    """Letterbox an HWC uint8 image into side×side (keeps the aspect ratio)."""
    pil = Image.fromarray(im)
    pil.thumbnail((side, side), Image.BILINEAR)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(pil, ((side - pil.width) // 2, (side - pil.height) // 2))
    return np.asarray(canvas)


def worst_grid_png(path: str | Path, pairs: list[tuple[float, str, np.ndarray, np.ndarray]], side: int = 128) -> Path:
    """Original | reconstruction pairs of the lowest-PSNR images, four pairs per row, each labelled."""
    tiles = []
    for psnr, _name, gt, rec in pairs:
        a, b = _fit(gt, side), _fit(rec, side)
        label = Image.fromarray(np.ascontiguousarray(b))
        ImageDraw.Draw(label).text((2, 2), f"{psnr:.2f} dB", fill=(255, 255, 0))
        tiles += [a, np.asarray(label)]
    grid = image_grid(tiles, columns=8) if tiles else np.full((side, side, 3), 255, np.uint8)
    return save_image(grid, path)
