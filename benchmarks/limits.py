"""The machine's limits, measured, so that every benchmark can say what fraction of them it reaches.

One implementation for every ``benchmarks/bench_*.py`` (and ``gpu_check.py``):

* :func:`gemm_flops_per_s` — the compute limit: a large square matmul (``n × n`` by ``n × n``, 2·n³ FLOPs) in
  the given dtype on the given device at the *current* thread count, median of a few calls after a warm-up. A
  convolution- or GEMM-bound workload's fraction of the limit is ``count_flops(fn) / seconds / gemm_flops_per_s``.
* :func:`stream_bytes_per_s` — the memory limit: **read** bandwidth of ``torch.sum`` over a float32 tensor far
  larger than the caches (bytes of the tensor / seconds, median). A memory-bound step (an AR decode step reads
  every weight once) cannot beat :func:`bandwidth_floor_s` = bytes it must read / this bandwidth.
* :func:`count_flops` — the FLOPs of one call, counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls,
  convolutions, attention: 2 FLOPs per multiply-add; element-wise ops and normalisations count 0, so for a
  convolutional network the count is the convolutions).
* :func:`machine_header` — one line (date, CPU model and cores, AMX-BF16, torch version, threads, load average)
  that every benchmark prints first, so each figure in BENCHMARKS.md says when, where and under what load.

Both limits are measured at the moment they are asked for (cached per dtype, device and thread count within a
process), under whatever else runs on the machine, like the benchmark itself: the fraction cancels part of the load.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import cache
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

Device = str | torch.device


def _device(device: Device) -> torch.device:
    return torch.device(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up: allocation, library set-up, thread pool start
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_flops_per_s(dtype: torch.dtype = torch.float32, device: Device = "cpu", n: int | None = None,
                     repeats: int = 3) -> float:
    """Measured FLOP/s of an ``n × n`` matmul in ``dtype`` on ``device`` at the current thread count.

    ``n`` defaults to the first power of two from 256 up whose matmul takes at least 0.2 s, at most 2048 on a CPU
    (17 GFLOPs per call: past the cache-blocking sizes) and 8192 on a GPU, so that a dtype without a fast kernel on
    this machine (bf16 on a CPU without AVX-512-BF16/AMX runs a scalar loop) is measured in seconds, not hours."""
    dev = _device(device)
    return _gemm(dtype, dev, n, repeats, torch.get_num_threads())


@cache
def _gemm(dtype: torch.dtype, device: torch.device, n: int | None, repeats: int, threads: int) -> float:
    if n is not None:
        return 2 * n**3 / _mm_seconds(dtype, device, n, repeats)
    largest = 8192 if device.type == "cuda" else 2048
    size = 256
    while size < largest and _mm_seconds(dtype, device, size, 1) < 0.2:
        size *= 2
    return 2 * size**3 / _mm_seconds(dtype, device, size, repeats)


def _mm_seconds(dtype: torch.dtype, device: torch.device, size: int, repeats: int) -> float:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    return _median_seconds(lambda: torch.mm(a, b), device, repeats)


def stream_bytes_per_s(device: Device = "cpu", mib: int = 512, repeats: int = 5) -> float:
    """Measured read bandwidth (bytes/s) of ``torch.sum`` over a ``mib`` MiB float32 tensor on ``device``."""
    return _stream(_device(device), mib, repeats, torch.get_num_threads())


@cache
def _stream(device: torch.device, mib: int, repeats: int, threads: int) -> float:
    x = torch.ones(mib * 2**18, device=device)  # mib MiB of float32, touched once so that it is resident
    seconds = _median_seconds(lambda: x.sum(), device, repeats)
    return x.numel() * x.element_size() / seconds


def bandwidth_floor_s(nbytes: int, device: Device = "cpu", mib: int = 512) -> float:
    """The least time a step that reads ``nbytes`` (e.g. every weight of a decode step) can take on ``device``:
    ``nbytes`` / :func:`stream_bytes_per_s`."""
    return nbytes / stream_bytes_per_s(device, mib)


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """FLOPs of one call ``fn(*args, **kwargs)`` as ``FlopCounterMode`` counts them (matmul of m×k by k×n:
    2·m·n·k)."""
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def fraction_of_gemm(flops: float, seconds: float, dtype: torch.dtype = torch.float32, device: Device = "cpu",
                     n: int | None = None) -> float:
    """Achieved FLOP/s (``flops / seconds``) over :func:`gemm_flops_per_s` of the same dtype, device and threads."""
    return flops / seconds / gemm_flops_per_s(dtype, device, n)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_amx_bf16() -> bool:
    """Whether the CPU has AMX-BF16 tiles (the ``amx_bf16`` flag of /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and "amx_bf16" in line.split() for line in f)
    except OSError:
        return False


def machine_header() -> str:
    """One line: UTC date, CPU model and cores, AMX-BF16, torch version, intra-op threads and the load average."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{now} | {cpu_model()}, {os.cpu_count()} cores, {platform.machine()}, "
            f"AMX-BF16 {'yes' if has_amx_bf16() else 'no'}{gpu} | torch {torch.__version__} | "
            f"threads {torch.get_num_threads()} | load average {load} (1, 5, 15 min)")


def limits_line(device: Device = "cpu", dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> str:
    """The measured limits at the current thread count, one line, for a benchmark's output."""
    dev = _device(device)
    parts = [f"{str(d).removeprefix('torch.')} GEMM {gemm_flops_per_s(d, dev) / 1e9:.1f} GFLOP/s" for d in dtypes]
    parts.append(f"sum read bandwidth {stream_bytes_per_s(dev) / 1e9:.1f} GB/s")
    return f"limits ({dev.type}, {torch.get_num_threads()} threads): " + ", ".join(parts)
