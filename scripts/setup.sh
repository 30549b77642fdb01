#!/usr/bin/env bash
# Creates ./.venv (once) and installs FaceQC with its test extras. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first, pinned: this build is served from local disk on the project's machines (other versions download GBs).
if ! python -c 'import torch, torchvision' 2>/dev/null; then
  python -m pip install -q torch==2.14.1 torchvision==0.29.1
fi
python -m pip install -q -e '.[test]'
