#!/usr/bin/env bash
# The ONNX checkers the tests use: the official `onnx` package (checker, shape inference) and ONNX
# Runtime, from PyPI into .onnx-env/ (about 60 MB, once). Nothing of cut's build needs them.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [[ -f .onnx-env/.complete ]]; then
  exit 0
fi
echo "cut: fetching onnx and onnxruntime from PyPI into .onnx-env/ (once)" >&2
rm -rf .onnx-env
"$python" -m pip install --quiet --disable-pip-version-check --target .onnx-env \
  onnx==1.23.2 onnxruntime==1.32.0 numpy==2.4.6
touch .onnx-env/.complete
