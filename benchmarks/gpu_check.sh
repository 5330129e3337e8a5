#!/usr/bin/env bash
# The prepared GPU check of issue 11: one script, at most 8 minutes on one GPU, prints JSON and a markdown table
# (what it measures: benchmarks/gpu_check.py). Results go to stdout and, with $OUT set, to $OUT/gpu_check.json.
#
#   benchmarks/gpu_check.sh             # on a GPU machine
#   benchmarks/gpu_check.sh --dry-run   # anywhere: CPU, tiny presets (what the test suite runs)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
OUT_ARGS=()
if [ -n "${OUT:-}" ]; then OUT_ARGS=(--out "$OUT/gpu_check.json"); fi
exec timeout --signal=INT --kill-after=20 480 "$PY" benchmarks/gpu_check.py "${OUT_ARGS[@]}" "$@"
