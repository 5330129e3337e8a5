"""Peak host memory of ``from_pretrained`` for a released AR file, loaded straight to its dtype.

A full-size official-format checkpoint is written from the key manifest of the released file (every key, shape
and dtype of ``AR_256_{B,L,XL}.ckpt``: transformer + first stage; zero values, the memory does not depend on them),
then a fresh process loads it with ``ImageGenerator.from_pretrained(path, dtype=...)``. Its peak resident memory
is the kernel's high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` right before the call) minus the
resident memory just before; the file is memory-mapped, so file pages count while they are resident.

``--old`` measures the previous loader in the same way (built on CPU in float32 with ``to_empty``, then
``load_state_dict``, then ``.to(dtype)``: the official way, a float32 model first) for contrast.

Time: wall clock of the call, at torch's default thread count, file pages already in the page cache (the file was
just written). No FLOP limit applies (loading computes nothing). Its limit is memory bandwidth: "GB/s" is the file
size over the wall clock, next to its fraction of ``limits.stream_bytes_per_s`` (``torch.sum`` read bandwidth,
measured in the same run) — loading reads the file once and writes the converted weights once, so 50 % of the
read bandwidth would already be near the limit.

Usage: ``.venv/bin/python benchmarks/bench_load.py [--preset B] [--dtype bf16] [--old] [--json]``; it needs
about 1.9 GB (B), 4.5 GB (L) or 8 GB (XL) of disk in the temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import limits

MANIFESTS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "official" / "manifests"

CHILD = r"""
import json, sys, time, torch
from open_magvit2.generator import ImageGenerator
from open_magvit2.checkpoints.official import load_official_state_dict

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

path, dtype, old = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark
before = status("VmRSS")
t0 = time.perf_counter()
if old:  # the previous loader: float32 model on the CPU, load_state_dict, then .to(dtype)
    model = ImageGenerator.from_official_state_dict(load_official_state_dict(path)).to(dtype)
else:
    model = ImageGenerator.from_pretrained(path, dtype=dtype)
seconds = time.perf_counter() - t0
peak = status("VmHWM")
params = sum(p.numel() * p.element_size() for p in model.parameters())
dtypes = sorted({str(p.dtype) for p in model.parameters()})
print(json.dumps({"before": before, "peak": peak, "seconds": seconds, "param_bytes": params, "dtypes": dtypes,
                  "rope": str(model.transformer.rope.dtype)}))
"""


def write_checkpoint(preset: str, path: Path) -> int:
    """An official-format ``{"state_dict": ...}`` file with the released key list of AR_256_``preset``."""
    import torch

    manifest = json.loads((MANIFESTS / f"imagenet_conditional_llama_{preset}.json").read_text())
    sd = {k: torch.zeros(shape, dtype=getattr(torch, dt)) for k, shape, dt in manifest["keys"]}
    torch.save({"state_dict": sd}, path)
    return sum(t.numel() for t in sd.values())


def measure(path: Path, dtype: str, old: bool = False) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), dtype, "1" if old else "0"], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="B", choices=("B", "L", "XL"))
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    ap.add_argument("--old", action="store_true", help="also measure the previous loader")
    ap.add_argument("--json", action="store_true", help="print one JSON line only")
    ap.add_argument("--tmpdir", default=None)
    args = ap.parse_args()
    if not args.json:
        print(limits.machine_header())
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as d:
        path = Path(d) / f"AR_256_{args.preset}.ckpt"
        numel = write_checkpoint(args.preset, path)
        new = measure(path, args.dtype)
        old = measure(path, args.dtype, old=True) if args.old else None
    result = {"preset": args.preset, "dtype": args.dtype, "numel": numel, "file_bytes": numel * 4, "new": new,
              "old": old}
    if args.json:
        print(json.dumps(result))
        return
    gib = 2**30
    bandwidth = limits.stream_bytes_per_s("cpu")
    print(f"AR_256_{args.preset}: {numel / 1e6:.1f} M float32 values, file {numel * 4 / gib:.2f} GiB; "
          f"target {args.dtype}: {new['param_bytes'] / gib:.2f} GiB of parameters")
    print(f"sum read bandwidth {bandwidth / 1e9:.1f} GB/s (FLOP limit: none, loading computes nothing)")
    print("| loader | wall s | × new (wall) | GB/s of file | fraction of read bandwidth | peak extra host memory | "
          "× target weight size |")
    print("|---|---|---|---|---|---|---|")
    for name, r in (("from_pretrained (meta → target, one tensor at a time)", new), ("previous (fp32 CPU copy)", old)):
        if r is not None:
            extra = r["peak"] - r["before"]
            rate = numel * 4 / r["seconds"]
            print(f"| {name} | {r['seconds']:.2f} | {r['seconds'] / new['seconds']:.2f} | {rate / 1e9:.2f} | "
                  f"{rate / bandwidth:.0%} | {extra / gib:.2f} GiB | {extra / new['param_bytes']:.2f} |")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
