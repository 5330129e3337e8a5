"""``sample-fid``'s final merge: peak memory and time of our streaming merge vs merging in memory.

The samples of a FID-50k run are 1000 classes × 50 images. ``sample-fid`` keeps one ``.npy`` per finished class
(so a killed run resumes) and merges them into the ADM ``.npz`` with :func:`open_magvit2.generator.fid.merge_npz`,
which streams one class at a time into the zip entry. The baseline is what the previous ``sample-fid`` and the
official ``combine_npz.py`` do: read every part into memory, ``np.concatenate``, ``np.savez`` (the whole array
twice in memory: 2 × 9.8 GB at 256²).

Each variant runs in a fresh subprocess; peak = rise of the process's peak RSS over its resident size after
imports (``benchmarks/peak_memory.py``). Both outputs are checked to hold the same ``arr_0`` and ``labels``.

No FLOP limit applies (the merge copies bytes and computes nothing). Its limit is memory bandwidth: "GB/s" is the
size of the samples over the wall clock, and its fraction of ``limits.stream_bytes_per_s`` (``torch.sum`` read
bandwidth, measured in the same run); the class files are fresh in the page cache, so this is a memory-to-memory
copy (plus the zip CRC), not a disk benchmark.

Usage: ``.venv/bin/python benchmarks/bench_fid_merge.py [--classes 1000 --per-class 50 --size 64]``. The default
writes 614 MB of class files to a temporary folder; ``--size 256`` is the real FID-50k size (9.8 GB, twice).
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


def worker(variant: str, parts: str, out: str, classes: int) -> None:
    import numpy as np

    from open_magvit2.generator.fid import merge_npz

    files = [Path(parts) / f"class_{c:06d}.npy" for c in range(classes)]
    base = peak_memory.reset()
    t0 = time.perf_counter()
    if variant == "ours":
        merge_npz(out, files, list(range(classes)))
    else:  # in memory: every part loaded, concatenated, saved
        arrays = [np.load(f) for f in files]
        labels = np.repeat(np.arange(classes, dtype=np.int64), [len(a) for a in arrays])
        np.savez(out, arr_0=np.concatenate(arrays), labels=labels)
    seconds = time.perf_counter() - t0
    print(json.dumps({"variant": variant, "seconds": seconds, "peak_mib": peak_memory.peak_since(base)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--worker", nargs=4, metavar=("VARIANT", "PARTS", "OUT", "CLASSES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        variant, parts, out, classes = args.worker
        worker(variant, parts, out, int(classes))
        return

    import numpy as np

    print(limits.machine_header())
    bandwidth = limits.stream_bytes_per_s("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        parts = Path(tmp) / "parts"
        parts.mkdir()
        rng = np.random.default_rng(0)
        for c in range(args.classes):
            np.save(parts / f"class_{c:06d}.npy",
                    rng.integers(0, 256, (args.per_class, args.size, args.size, 3), dtype=np.uint8))
        total = args.classes * args.per_class * args.size * args.size * 3 / 2**20
        rows = {}
        for variant in ("in-memory", "ours"):
            out = Path(tmp) / f"{variant}.npz"
            run = subprocess.run([sys.executable, __file__, "--worker", variant, str(parts), str(out),
                                  str(args.classes)], capture_output=True, text=True, check=True)
            rows[variant] = json.loads(run.stdout.strip().splitlines()[-1])
        with np.load(Path(tmp) / "in-memory.npz") as a, np.load(Path(tmp) / "ours.npz") as b:
            same = np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["labels"], b["labels"])

    print(f"\nmerge of {args.classes} classes × {args.per_class} images of {args.size}² ({total:.0f} MiB of samples); "
          f"identical arr_0 and labels: {same}; sum read bandwidth {bandwidth / 1e9:.1f} GB/s (FLOP limit: none, "
          "the merge computes nothing)\n")
    print("| merge | wall s | × ours (wall) | GB/s of samples | fraction of read bandwidth | peak MiB | "
          "peak / samples size |")
    print("|---|---|---|---|---|---|---|")
    for name, label in (("in-memory", "in memory (previous sample-fid, official combine_npz.py)"),
                        ("ours", "streaming, one class at a time (ours)")):
        r = rows[name]
        rate = total * 2**20 / r["seconds"]
        print(f"| {label} | {r['seconds']:.2f} | {r['seconds'] / rows['ours']['seconds']:.2f} | {rate / 1e9:.2f} | "
              f"{rate / bandwidth:.0%} | {r['peak_mib']:.1f} | {r['peak_mib'] / total:.3f} |")
    a, b = rows["in-memory"], rows["ours"]
    print(f"\npeak memory in-memory / ours: {a['peak_mib'] / max(b['peak_mib'], 1e-3):.0f}×; time ratio "
          f"{a['seconds'] / b['seconds']:.2f}×")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
