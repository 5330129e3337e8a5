#!/usr/bin/env bash
# The prepared GPU check (issues 11 and 19): one script, at most 8 minutes on one GPU (gpu_check.py keeps to a
# 420 s budget, skipping with a recorded reason what no longer fits; this wrapper interrupts it at 480 s, and it
# still prints what it measured). Prints JSON, a markdown table and the filled-in "What a run costs" table of
# docs/training.md. Results go to stdout and, with $OUT set, to $OUT/gpu_check.json (rewritten after each section).
#
#   benchmarks/gpu_check.sh             # on a GPU machine
#   benchmarks/gpu_check.sh --dry-run   # anywhere: CPU, tiny presets (what `make test-slow` runs; run it first)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
OUT_ARGS=()
if [ -n "${OUT:-}" ]; then OUT_ARGS=(--out "$OUT/gpu_check.json"); fi
exec timeout --signal=INT --kill-after=20 480 "$PY" benchmarks/gpu_check.py "${OUT_ARGS[@]}" "$@"
