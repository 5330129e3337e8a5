"""Keep freed CPU memory for reuse instead of returning it to the system on every free (glibc ``mallopt``).

glibc's malloc serves a block larger than its mmap threshold (at most 32 MiB by default) with a fresh ``mmap``
and unmaps it on ``free``. A video tensor of a batch is often larger (16 clips × 32 channels × 17 × 64 × 64 float32
is 142 MiB), so every such activation is mapped, zero-filled page by page by the kernel, and unmapped again:
measured on the 2-core machine, encoding the demo moving-digit clips spent a quarter of its CPU time in the kernel
(23,000 page faults per clip). With the threshold at 1 GiB and the heap's trim threshold as high, the freed blocks
are reused: 0.144 → 0.099 s per clip, the same tokens (``benchmarks/bench_cpu_memory.py``, BENCHMARKS.md).

The cost: a process keeps the memory of its peak until it exits instead of shrinking after it, and glibc's
fragmentation can hold a few large blocks more: a loop that allocates and frees one 128 MiB tensor settles 256 MiB
above glibc's default resident size after about 10 rounds (the first rounds still fault, until freed blocks
coalesce; ``tests/test_cpu_memory.py``); in the demo video workloads the high-water mark rose 2–6%.

Opt-in: ``OPEN_MAGVIT2_CPU_MEMORY=keep`` makes the commands (``open-magvit2 …``) and ``make demo-models`` set it
when they start; unset (or ``default``) they leave glibc's defaults. It was the default for a day; a CI hang
then (forked video DataLoader workers) turned out to be PyAV 18.1.1's threaded frame conversion, not this
(``data.video_io.frame_to_rgb``), but the change to opt-in stands until longer runs have measured its resident
memory. The library never sets it on its own (an application that imports it keeps its allocator as it is) and
may call :func:`keep_freed_memory` itself. Off glibc (macOS, Windows, musl) nothing changes.
No library does this (PyTorch's CPU allocator is plain malloc; jemalloc or tcmalloc would need ``LD_PRELOAD``
before the interpreter starts), hence the few lines here (docs/design.md, "CPU memory").
"""

from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 1 << 30

_state: bool | None = None


def requested() -> bool:
    """Whether ``OPEN_MAGVIT2_CPU_MEMORY`` asks the commands to keep freed memory (``keep``; unset or ``default``:
    no). Any other value is an error."""
    choice = os.environ.get("OPEN_MAGVIT2_CPU_MEMORY", "default")
    if choice not in ("keep", "default"):
        raise ValueError(f"OPEN_MAGVIT2_CPU_MEMORY must be keep or default, got {choice!r}")
    return choice == "keep"


def keep_freed_memory_if_requested() -> bool:
    """What the commands and ``make demo-models`` call first: :func:`keep_freed_memory` when
    ``OPEN_MAGVIT2_CPU_MEMORY=keep`` (:func:`requested`). Returns whether the thresholds are set."""
    return requested() and keep_freed_memory()


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to 1 GiB for this process (once). Returns whether they are set:
    False off glibc."""
    global _state
    if _state is None:
        _state = _set_thresholds()
    return _state


def _set_thresholds() -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, THRESHOLD_BYTES)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, THRESHOLD_BYTES))
