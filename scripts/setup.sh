#!/usr/bin/env bash
# Create .venv and install idhhpc with its test extras. Idempotent: a second run only checks.
# torch is installed first and pinned, so pip never swaps in a multi-GB build on a CPU machine;
# set TORCH_SPEC (e.g. "torch==2.13.0" or a CUDA wheel) to choose another.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python -c "import torch" 2>/dev/null || python -m pip install -q "$TORCH_SPEC"
python -m pip install -q -e ".[dev]"
python -c "import idhhpc, torch, monai; print(f'idhhpc ready: torch {torch.__version__}, monai {monai.__version__}')"
