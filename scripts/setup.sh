#!/usr/bin/env bash
# Create .venv and install ptp with pinned dependencies (CPU PyTorch; no GPU needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -d .venv ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned: a looser requirement would pull a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet -c constraints.txt torch==2.13.0
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
echo "ptp installed in .venv ($(.venv/bin/python -c 'import ptp; print(ptp.__version__)'))"
