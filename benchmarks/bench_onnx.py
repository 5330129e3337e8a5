"""ONNX Runtime vs PyTorch: encode and decode images/s on this CPU, for the demo tokenizer and the tiny 256 preset,
in the same run, with the outputs compared.

* PyTorch: ``tok.encode(x)`` and ``tok.decode(indices)`` under ``torch.inference_mode`` — what ``open-magvit2
  reconstruct`` runs (channels-last convolutions on CPU, in-place SiLU and residual adds);
* onnxruntime: the graphs of ``open-magvit2 export-onnx`` (``export_onnx.py``: opset 18, dynamic batch), CPU
  execution provider, graph optimisations on (ORT's default).

Models: ``--checkpoint`` (default ``demo``, the bundled demo image tokenizer) at its native size (16 × its factor),
and the ``imagenet_256_L_tiny`` preset (random weights: speed does not depend on values) at 256². Until the demo
model is installed, ``demo`` stands in with random weights of its recipe's architecture
(``configs/demo/image_tokenizer.yaml``; without it, the 8× ``imagenet_128_L_tiny`` with 2^14 codes), and the
output says so. Inputs: ``--batch`` of scikit-image's photos, resized and centre-cropped.

Time: both runtimes get the same intra-op thread count, torch's default unless ``--threads`` says otherwise; wall
clock first, then process CPU time, runtimes interleaved, medians of ``--repeats``. Fraction of the limit: FLOPs of
the part (``limits.count_flops`` on the PyTorch call: the convolutions; both runtimes compute the same graph) /
wall clock / the float32 GEMM rate measured in the same run at the same thread count (``benchmarks/limits.py``).
Parity columns: encoder indices that differ (and how many of those have a latent channel within 1e-4 of zero),
and the decoders' max |Δ| on the same indices.

Usage: ``.venv/bin/python benchmarks/bench_onnx.py [--checkpoint demo] [--batch 4] [--repeats 5] [--threads N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import limits
from open_magvit2.checkpoints.hub import native_size
from open_magvit2.export_onnx import export_onnx, index_parity, onnx_session, run_onnx
from open_magvit2.imaging import center_crop, pil_to_tensor, resize_shorter_side
from open_magvit2.tokenizer import ImageTokenizer, TokenizerConfig, tokenizer_config

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def photos(batch: int, size: int) -> torch.Tensor:
    """(batch, 3, size, size) in [−1, 1]: scikit-image's photos (cycled), the official resize + centre-crop."""
    from skimage import data

    ims = [Image.fromarray(getattr(data, PHOTOS[i % len(PHOTOS)])()).convert("RGB") for i in range(batch)]
    return torch.cat([pil_to_tensor(center_crop(resize_shorter_side(im, size), size)) for im in ims])


def load(checkpoint: str) -> tuple[ImageTokenizer, str]:
    """The tokenizer to measure, and how to name it."""
    try:
        return ImageTokenizer.from_pretrained(checkpoint).eval(), checkpoint
    except FileNotFoundError:
        if checkpoint != "demo":
            raise
    recipe = REPO / "configs" / "demo" / "image_tokenizer.yaml"
    if recipe.is_file():
        from open_magvit2.train.config import load_recipe
        from open_magvit2.train.tokenizer import TokenizerTrainConfig

        config: TokenizerConfig = load_recipe(TokenizerTrainConfig, recipe).tokenizer_config()
        name = f"demo stand-in ({recipe.name} architecture, random weights)"
    else:
        config = tokenizer_config("imagenet_128_L_tiny").replace(z_channels=14)
        name = "demo stand-in (imagenet_128_L_tiny with 2^14 codes, random weights)"
    torch.manual_seed(0)
    return ImageTokenizer(config).eval(), name


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def measure(tok: ImageTokenizer, name: str, size: int, args: argparse.Namespace, work: Path) -> list[str]:
    x = photos(args.batch, size)
    t0 = time.perf_counter()
    enc = onnx_session(export_onnx(tok, "encoder", work / f"{size}_enc.onnx", size=size), threads=args.threads)
    dec = onnx_session(export_onnx(tok, "decoder", work / f"{size}_dec.onnx", size=size), threads=args.threads)
    export_s = time.perf_counter() - t0
    with torch.inference_mode():
        idx = tok.encode(x)
        z = tok.encode_latent(x)

    def torch_encode() -> torch.Tensor:
        with torch.inference_mode():
            return tok.encode(x)

    def torch_decode() -> torch.Tensor:
        with torch.inference_mode():
            return tok.decode(idx)

    variants = {
        ("encode", "PyTorch"): torch_encode, ("encode", "onnxruntime"): lambda: run_onnx(enc, x),
        ("decode", "PyTorch"): torch_decode, ("decode", "onnxruntime"): lambda: run_onnx(dec, idx),
    }
    flops = {"encode": limits.count_flops(torch_encode), "decode": limits.count_flops(torch_decode)}
    gemm = limits.gemm_flops_per_s(torch.float32)
    for fn in variants.values():  # warm-up: first-call allocations, ORT's arena
        fn()
    wall: dict = {k: [] for k in variants}
    cpu: dict = {k: [] for k in variants}
    out: dict = {}
    for _ in range(args.repeats):
        for k, fn in variants.items():
            w, c, out[k] = timed(fn)
            wall[k].append(w)
            cpu[k].append(c)
    parity = index_parity(out[("encode", "onnxruntime")], out[("encode", "PyTorch")], z)
    diff = float(np.abs(out[("decode", "onnxruntime")] - out[("decode", "PyTorch")].numpy()).max())
    c = tok.config
    params = sum(p.numel() for p in tok.parameters()) / 1e6
    print(f"{name}: {c.spatial_factor}×, ch {c.ch}, ch_mult {list(c.ch_mult)}, {c.num_res_blocks} res blocks, "
          f"2^{c.z_channels} codes, {params:.1f} M params; export of both graphs {export_s:.1f} s; GFLOP per batch: "
          f"encode {flops['encode'] / 1e9:.2f}, decode {flops['decode'] / 1e9:.2f}; fp32 GEMM {gemm / 1e9:.1f} GFLOP/s")
    rows = []
    for part in ("encode", "decode"):
        pt, ort = (statistics.median(wall[(part, r)]) for r in ("PyTorch", "onnxruntime"))
        pt_c, ort_c = (statistics.median(cpu[(part, r)]) for r in ("PyTorch", "onnxruntime"))
        check = (f"{parity.mismatched}/{parity.cells} indices differ ({parity.unexplained} not near 0)"
                 if part == "encode" else f"max abs Δ {diff:.1e}")
        rows.append(f"| {name} | {size}² | {part} | {args.batch / pt:.1f} | {args.batch / ort:.1f} | "
                    f"**{pt / ort:.2f}×** | {flops[part] / pt / gemm:.0%} / {flops[part] / ort / gemm:.0%} | "
                    f"{pt_c / ort_c:.2f}× | {check} |")
    print("all runs (wall s): " + "; ".join(f"{'/'.join(k)}: {', '.join(f'{v:.3f}' for v in wall[k])}"
                                            for k in variants))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="demo", help="image tokenizer to measure (default: the demo model)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads of both runtimes (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    torch.set_float32_matmul_precision("highest")
    import onnxruntime

    print(limits.machine_header())
    print(f"onnxruntime {onnxruntime.__version__}, {args.threads} intra-op threads for both runtimes, "
          f"batch {args.batch}")
    tok, name = load(args.checkpoint)
    torch.manual_seed(0)
    tiny = ImageTokenizer(tokenizer_config("imagenet_256_L_tiny")).eval()
    rows = ["| model | size | part | PyTorch img/s | onnxruntime img/s | ORT / PyTorch (wall) | fraction of fp32 GEMM, "
            "PyTorch / ORT | ORT / PyTorch (CPU) | outputs |", "|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as work:
        rows += measure(tok, name, native_size(tok.config.spatial_factor), args, Path(work))
        rows += measure(tiny, "imagenet_256_L_tiny (random weights)", 256, args, Path(work))
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
