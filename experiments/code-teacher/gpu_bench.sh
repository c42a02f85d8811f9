#!/usr/bin/env bash
# Benchmark the bundled model on a CUDA GPU (a short call on a lent GPU machine): the cost of one call
# over q query tokens, then ar-hf / ar / draft-verify / pqd / pld side by side at the settings.
# Usage: OUT=dir scripts/gpu_bench.sh     (writes OUT/bench.json, .md, plots; prints the tables)
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-runs/bench-gpu}
PY=${PY:-python3}
PTP=${PTP:-$PY -m ptp.cli}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
$PTP tune --device cuda --num-prompts 4 --budgets 4 8 16 32 64 --max-new-tokens 64
$PTP bench --device cuda --methods ar-hf ar draft-verify pqd pld --num-prompts ${PROMPTS:-16} \
  --max-new-tokens 128 --slot-budget ${BUDGET:-16} --json "$OUT/bench.json"
