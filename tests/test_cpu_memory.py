"""cpu_memory.keep_freed_memory: a large freed tensor's memory is reused (no new page faults, at a bounded cost
in resident memory), the commands set it only with OPEN_MAGVIT2_CPU_MEMORY=keep, and a bad value is a one-line
error."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the thresholds are glibc's")

# Page faults and resident memory while a 128 MiB tensor is allocated, written and freed, 20 times over. Kept,
# glibc first carves each new block from fresh heap (the freed one is a few bytes short of an aligned request of
# the same size) until the freed blocks coalesce, after about 10 rounds; from then on nothing is faulted in.
CYCLES = """
import json, resource, sys, torch
from open_magvit2.cpu_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults, rss = [], []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.empty(32 * 2**20); x.fill_(1.0); del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    rss.append(int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20)
print(json.dumps({"faults": faults, "rss_mib": rss}))
"""


def _python(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_a_freed_large_tensor_is_reused_without_page_faults():
    plain = json.loads(_python(CYCLES, "plain").stdout)
    kept = json.loads(_python(CYCLES, "keep").stdout)
    assert min(plain["faults"][-5:]) > 20_000  # 128 MiB = 32,768 pages of 4 KiB, each faulted in again
    assert max(kept["faults"][-5:]) < 1_000, kept["faults"]
    # the price (docs/design.md, "CPU memory"): the resident size settles higher, here by a few such blocks
    extra = kept["rss_mib"][-1] - plain["rss_mib"][-1]
    assert 0 < extra < 10 * 128, extra
    assert kept["rss_mib"][-1] == kept["rss_mib"][-5]  # settled, not growing


def test_the_commands_set_it_only_when_asked():
    code = ("from open_magvit2.cli import main; from open_magvit2 import cpu_memory; "
            "main(['plot-run', 'no-such-run']); print(cpu_memory._state)")
    env = {k: v for k, v in os.environ.items() if k != "OPEN_MAGVIT2_CPU_MEMORY"}
    for value, state in ((None, "None"), ("default", "None"), ("keep", "True")):
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env=env if value is None else {**env, "OPEN_MAGVIT2_CPU_MEMORY": value})
        assert run.stdout.strip().splitlines()[-1] == state, (value, run.stdout, run.stderr)
    bad = _python(code, env={"OPEN_MAGVIT2_CPU_MEMORY": "fast"})
    assert bad.stderr.strip() == ("open-magvit2 plot-run: error: OPEN_MAGVIT2_CPU_MEMORY must be keep or default, "
                                  "got 'fast'")
