"""benchmarks/limits.py: the FLOP count, the measured limits and the header line every benchmark prints."""

import os
import re
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import limits


def test_count_flops_of_a_matmul_is_two_m_n_k():
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    assert limits.count_flops(torch.mm, a, b) == 2 * 3 * 5 * 7


def test_count_flops_of_a_convolution_is_two_macs_per_output():
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    x = torch.randn(2, 4, 8, 8)
    with torch.inference_mode():
        assert limits.count_flops(conv, x) == 2 * (2 * 6 * 8 * 8) * (4 * 3 * 3)


def test_gemm_and_stream_limits_are_measured_rates():
    flops = limits.gemm_flops_per_s(torch.float32, "cpu", n=128)
    assert 1e6 < flops < 1e14  # a real rate: a 128² matmul takes between ~40 ns and ~4 s
    bw = limits.stream_bytes_per_s("cpu", mib=8)
    assert 1e7 < bw < 1e13
    assert limits.bandwidth_floor_s(8 * 2**20, "cpu", mib=8) == 8 * 2**20 / bw  # the same (cached) measurement
    assert limits.fraction_of_gemm(flops, 1.0, n=128) == 1.0


def test_machine_header_names_the_load_threads_and_torch():
    line = limits.machine_header()
    load = re.search(r"load average ([\d.]+) ([\d.]+) ([\d.]+)", line)
    assert load is not None, line
    assert all(abs(float(v) - now) < 2.0 for v, now in zip(load.groups(), os.getloadavg()))
    assert f"threads {torch.get_num_threads()}" in line and f"torch {torch.__version__}" in line
    assert f"{os.cpu_count()} cores" in line and ("AMX-BF16 yes" in line) == limits.has_amx_bf16()
