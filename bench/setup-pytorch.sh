#!/usr/bin/env bash
# Installs what the PyTorch side of bench/Peft.Perf needs on Debian 12: Debian's PyTorch and ONNX packages and
# OpenBLAS (without it Debian's PyTorch uses the reference BLAS and the comparison means nothing).
set -euo pipefail
if /usr/bin/python3 -c "import torch, onnx" 2>/dev/null && ldconfig -p | grep -q libopenblas; then
  echo "python3-torch, python3-onnx and OpenBLAS are installed."
  exit 0
fi
apt-get update
apt-get install -y python3-torch python3-onnx libopenblas0-pthread
