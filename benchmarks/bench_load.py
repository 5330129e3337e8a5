"""Peak host memory of ``from_pretrained`` for a released AR file, loaded straight to its dtype.

A full-size official-format checkpoint is written from the key manifest of the released file (every key, shape
and dtype of ``AR_256_{B,L,XL}.ckpt``: transformer + first stage; zero values, the memory does not depend on them),
then a fresh process loads it with ``ImageGenerator.from_pretrained(path, dtype=...)``. Its peak resident memory
is the kernel's high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` right before the call) minus the
resident memory just before; the file is memory-mapped, so file pages count while they are resident.

``--old`` measures the previous loader in the same way (built on CPU in float32 with ``to_empty``, then
``load_state_dict``, then ``.to(dtype)``) for contrast.

Usage: ``.venv/bin/python benchmarks/bench_load.py [--preset B] [--dtype bf16] [--old] [--json]``; it needs
about 1.9 GB (B), 4.5 GB (L) or 8 GB (XL) of disk in the temporary folder.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MANIFESTS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "official" / "manifests"

CHILD = r"""
import json, sys, torch
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
if old:  # the previous loader: float32 model on the CPU, load_state_dict, then .to(dtype)
    model = ImageGenerator.from_official_state_dict(load_official_state_dict(path)).to(dtype)
else:
    model = ImageGenerator.from_pretrained(path, dtype=dtype)
peak = status("VmHWM")
params = sum(p.numel() * p.element_size() for p in model.parameters())
dtypes = sorted({str(p.dtype) for p in model.parameters()})
print(json.dumps({"before": before, "peak": peak, "param_bytes": params, "dtypes": dtypes,
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
    print(f"AR_256_{args.preset}: {numel / 1e6:.1f} M float32 values, file {numel * 4 / gib:.2f} GiB; "
          f"target {args.dtype}: {new['param_bytes'] / gib:.2f} GiB of parameters")
    print("| loader | peak extra host memory | × target weight size |")
    print("|---|---|---|")
    for name, r in (("from_pretrained (meta → target, one tensor at a time)", new), ("previous (fp32 CPU copy)", old)):
        if r is not None:
            extra = r["peak"] - r["before"]
            print(f"| {name} | {extra / gib:.2f} GiB | {extra / new['param_bytes']:.2f} |")


if __name__ == "__main__":
    main()
