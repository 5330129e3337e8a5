"""Video tokenizer on CPU: what windows save. Encode + decode time and peak memory of a long clip through the
windowed path (``encode_windows`` / ``decode_windows``, window 17) against one ``encode`` + ``decode`` call on the
same frames and on the same number of latent frames, on the full ``ucf101_128_L`` preset (370.5 M parameters,
random init, batch 1).

Peak memory. torch's CPU allocator is invisible to tracemalloc, so every case runs in a fresh subprocess that
(1) builds the model (on 'meta', then ``to_empty`` + N(0, 0.02) init; values do not change speed) and the input,
(2) runs the model once on a 1-frame 2f×2f clip (one-time oneDNN / thread-pool set-up), (3) clears the peak-RSS
mark and reads the resident size (weights + input + runtime; ``benchmarks/peak_memory.py``), (4) runs the measured
call. "Δ peak" is the rise of the peak RSS over that resident size: the extra memory of the measured call
(activations, im2col buffers, outputs). Times are wall clock of the measured call (``torch.inference_mode``) at
torch's default thread count. Fraction of the limit: FLOPs of the case (``limits.count_flops`` of encoder + decoder
run on 'meta' tensors, i.e. counted from the shapes: the convolutions) / total wall clock / the float32 GEMM rate
measured by the parent process before the cases, at the same thread count (``benchmarks/limits.py``).

Windows cannot match a single call in both frames and latent frames at once (n windows of 4k+1 frames give n more
latent frames than one call on the same frames), so the windowed run is compared with each in turn:

* ``window``: one 17-frame window (``encode`` + ``decode``) — what the windowed path should cost at any length;
* ``windowed``: ``encode_windows`` + ``decode_windows`` of 5 × 17 = 85 frames → 5 × 5 = 25 latent frames;
* ``same frames``: the same 85 frames in one call (a valid 4k+1 count) → 22 latent frames;
* ``same latents``: 97 frames in one call → the same 25 latent frames as the windowed run.

Usage: ``.venv/bin/python benchmarks/bench_video.py [--preset ucf101_128_L] [--size 128] [--frames 17]
[--factor 5]``. On 2 CPU cores one full-size 17-frame encode+decode takes minutes; ``--size 64`` quarters every
cost, ``--preset ucf101_128_L_tiny --size 32`` is a quick smoke test. No GPU was available for these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import limits
import peak_memory


def worker(case: str, preset: str, size: int, frames: int, factor: int, out: str) -> None:
    import torch

    from open_magvit2.tokenizer.presets import tokenizer_config
    from open_magvit2.tokenizer.video import VideoTokenizer

    torch.manual_seed(0)
    with torch.device("meta"):
        tok = VideoTokenizer(tokenizer_config(preset))
    tok = tok.to_empty(device="cpu").eval()
    with torch.no_grad():
        for p in tok.parameters():
            p.normal_(0, 0.02)
    windowed_latents = factor * tok.latent_frames(frames)
    t = {"window": frames, "windowed": frames * factor, "same frames": frames * factor,
         "same latents": tok.output_frames(windowed_latents)}[case]
    if case == "same frames" and (t - 1) % tok.frame_step:
        raise ValueError(f"{factor} × {frames} frames is not a valid clip length for one call; pick another --factor")
    video = torch.rand(1, 3, t, size, size) * 2 - 1
    f = tok.config.spatial_factor
    res: dict[str, float | int | str] = {"case": case, "frames": t}
    res["latents"] = windowed_latents if case == "windowed" else tok.latent_frames(t)
    with torch.inference_mode():
        tok.decode(tok.encode(torch.zeros(1, 3, 1, 2 * f, 2 * f)))  # one-time library set-up
        res["baseline_mib"] = peak_memory.reset()
        t0 = time.perf_counter()
        if case == "windowed":
            w = tok.encode_windows(video, window=frames)
            t1 = time.perf_counter()
            rec = tok.decode_windows(w)
        else:
            indices = tok.encode(video)
            t1 = time.perf_counter()
            rec = tok.decode(indices)
        t2 = time.perf_counter()
    assert rec.shape == video.shape
    res.update(encode_s=t1 - t0, decode_s=t2 - t1, delta_mib=peak_memory.peak_since(res["baseline_mib"]))
    res["params_m"] = sum(p.numel() for p in tok.parameters()) / 1e6
    Path(out).write_text(json.dumps(res))


def case_flops(preset: str, frames: int, size: int) -> int:
    """FLOPs of one encode + decode of a (1, 3, frames, size, size) clip, counted on 'meta' tensors (no compute)."""
    import torch

    from open_magvit2.tokenizer.presets import tokenizer_config
    from open_magvit2.tokenizer.video import VideoTokenizer

    with torch.device("meta"):
        tok = VideoTokenizer(tokenizer_config(preset))
        x = torch.empty(1, 3, frames, size, size)
    with torch.inference_mode():
        return limits.count_flops(lambda: tok.decode_codes(tok.encode_latent(x)))


def run_case(case: str, args: argparse.Namespace) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = tmp.name
    cmd = [sys.executable, __file__, "--worker", case, "--preset", args.preset, "--size", str(args.size),
           "--frames", str(args.frames), "--factor", str(args.factor), "--out", out]
    try:
        subprocess.run(cmd, check=True)
        return json.loads(Path(out).read_text())
    finally:
        os.unlink(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="ucf101_128_L")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, default=17, help="window length (4k+1)")
    p.add_argument("--factor", type=int, default=5, help="the long clip has factor windows (1 mod 4 keeps the "
                   "same-frames clip valid)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.preset, args.size, args.frames, args.factor, args.out)
        return

    import torch

    print(limits.machine_header())
    gemm = limits.gemm_flops_per_s(torch.float32)
    results = {}
    for case in ("window", "windowed", "same frames", "same latents"):
        print(f"running {case} …", file=sys.stderr, flush=True)
        results[case] = run_case(case, args)
        r = results[case]
        one = case_flops(args.preset, args.frames if case == "windowed" else r["frames"], args.size)
        r["flops"] = one * (args.factor if case == "windowed" else 1)
    w = results["windowed"]
    print(f"\n{args.preset} ({w['params_m']:.1f} M parameters, random init), batch 1, {args.size}×{args.size}; "
          f"{torch.get_num_threads()} threads; float32 GEMM {gemm / 1e9:.1f} GFLOP/s measured before the cases\n")
    print("| case | frames | latent frames | encode s | decode s | total s (wall) | GFLOP | fraction of fp32 GEMM | "
          "Δ peak MiB | one call / windowed: time | one call / windowed: Δ peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case, r in results.items():
        total = r["encode_s"] + r["decode_s"]
        ratios = ("", "") if case in ("window", "windowed") else (
            f"{total / (w['encode_s'] + w['decode_s']):.2f}×", f"{r['delta_mib'] / w['delta_mib']:.2f}×")
        print(f"| {case} | {r['frames']} | {r['latents']} | {r['encode_s']:.1f} | {r['decode_s']:.1f} | {total:.1f} | "
              f"{r['flops'] / 1e9:.0f} | {r['flops'] / total / gemm:.0%} | {r['delta_mib']:.0f} | {ratios[0]} | "
              f"{ratios[1]} |")
    one = results["window"]
    print(f"\nwindowed / one window: Δ peak memory {w['delta_mib'] / one['delta_mib']:.2f}× for "
          f"{w['frames'] / one['frames']:.0f}× the frames")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
