"""Peak resident memory of one measured call, for the benchmarks (Linux).

torch's CPU allocator is invisible to tracemalloc, so the benchmarks read the kernel's counters. ``ru_maxrss`` is a
high-water mark since the process started: a large temporary during set-up (building a model, creating an input)
hides a smaller peak of the measured call. :func:`reset` therefore clears the high-water mark (``clear_refs`` 5,
Linux ≥ 4.0) and returns the resident size at that moment; :func:`peak_since` is the rise of the high-water mark
over it, i.e. the extra memory the measured call needed at its peak.
"""

from __future__ import annotations


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {key}")


def reset() -> float:
    """Clear the process's peak-RSS mark; return the current RSS in MiB (the baseline)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mib("VmRSS")


def peak_since(baseline_mib: float) -> float:
    """Peak RSS since :func:`reset`, above ``baseline_mib``, in MiB."""
    return _status_mib("VmHWM") - baseline_mib


def peak_mib() -> float:
    """The process's peak RSS since start (or since the last :func:`reset`), in MiB."""
    return _status_mib("VmHWM")
