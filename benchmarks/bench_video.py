"""Video tokenizer on CPU: encode + decode time and peak memory of one 17×128×128 clip on the full ``ucf101_128_L``
preset (370.5 M parameters, random init, batch 1), and the peak memory of a 5× longer clip through the windowed
path (``encode_windows`` / ``decode_windows``, window 17), which should stay flat.

Peak memory. torch's CPU allocator is invisible to tracemalloc, so every case runs in a fresh subprocess that
(1) builds the model (on 'meta', then ``to_empty`` + N(0, 0.02) init; values do not change speed) and the input,
(2) runs the model once on a 1-frame 2f×2f clip (one-time oneDNN / thread-pool set-up), (3) reads
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` as the baseline (weights + input + runtime), (4) runs the measured
call and reads ru_maxrss again. "Δ peak" is the increase of the process's high-water RSS: the extra memory of the
measured call (activations, im2col buffers, outputs). glibc serves these large tensors with mmap, so freed memory
does not hide a later peak. Times are wall clock of the measured call (``torch.inference_mode``).

* ``single``: ``encode`` then ``decode`` of a 17-frame clip (the released model's window) — times reported apart;
* ``windowed``: ``encode_windows`` + ``decode_windows`` of 5 × 17 = 85 frames (5 independent windows);
* ``unwindowed`` (only with ``--unwindowed``): the same 85 frames (a valid 4k+1 count) in one ``encode`` +
  ``decode`` call, to show what the windows save.

Usage: ``.venv/bin/python benchmarks/bench_video.py [--preset ucf101_128_L] [--size 128] [--frames 17]
[--factor 5] [--unwindowed]``. On 2 CPU cores one full-size 17-frame encode+decode takes minutes, so the default
run takes about half an hour; ``--preset ucf101_128_L_tiny --size 32`` is a quick smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


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
    t = frames if case == "single" else frames * factor
    if case == "unwindowed":
        t = 1 + (t - 1) // tok.frame_step * tok.frame_step  # largest valid count ≤ factor·frames (85 stays 85)
    video = torch.rand(1, 3, t, size, size) * 2 - 1
    f = tok.config.spatial_factor
    res: dict[str, float | int | str] = {"case": case, "frames": t}
    with torch.inference_mode():
        tok.decode(tok.encode(torch.zeros(1, 3, 1, 2 * f, 2 * f)))  # one-time library set-up
        res["baseline_mib"] = _rss_mib()
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
    res.update(encode_s=t1 - t0, decode_s=t2 - t1, peak_mib=_rss_mib())
    res["delta_mib"] = res["peak_mib"] - res["baseline_mib"]
    res["params_m"] = sum(p.numel() for p in tok.parameters()) / 1e6
    Path(out).write_text(json.dumps(res))


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
    p.add_argument("--frames", type=int, default=17, help="window / single-clip length (4k+1)")
    p.add_argument("--factor", type=int, default=5, help="the long clip has factor × frames frames")
    p.add_argument("--unwindowed", action="store_true", help="also run the long clip in one call")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.preset, args.size, args.frames, args.factor, args.out)
        return

    import torch

    cases = ["single", "windowed"] + (["unwindowed"] if args.unwindowed else [])
    results = {}
    for case in cases:
        print(f"running {case} …", file=sys.stderr, flush=True)
        results[case] = run_case(case, args)
    single = results["single"]
    print(f"\n{args.preset} ({single['params_m']:.1f} M parameters, random init), batch 1, {args.size}×{args.size}; "
          f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| case | frames | encode s | decode s | total s | s / frame | baseline RSS MiB | Δ peak MiB "
          "| Δ peak / single |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case, r in results.items():
        total = r["encode_s"] + r["decode_s"]
        print(f"| {case} | {r['frames']} | {r['encode_s']:.1f} | {r['decode_s']:.1f} | {total:.1f} | "
              f"{total / r['frames']:.2f} | {r['baseline_mib']:.0f} | {r['delta_mib']:.0f} | "
              f"{r['delta_mib'] / single['delta_mib']:.2f}× |")
    w = results["windowed"]
    ratio_t = (w["encode_s"] + w["decode_s"]) / (single["encode_s"] + single["decode_s"])
    print(f"\nwindowed / single: time {ratio_t:.2f}× for {w['frames'] / single['frames']:.0f}× the frames; "
          f"Δ peak memory {w['delta_mib'] / single['delta_mib']:.2f}×")


if __name__ == "__main__":
    main()
