#!/usr/bin/env bash
# Installs libtorch 2.11.0 (CPU) into .libtorch/ of the checkout from PyPI's torch wheel.
# Prebuilt libtorch zips cannot be downloaded on our machines; the wheel carries the same libraries.
# Idempotent: a complete install is detected by a stamp file and the script returns at once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="$root/.libtorch"
stamp="$target/.cut-libtorch-2.11.0"
python="${PYTHON:-python3}"
# The CUDA runtime's crt/ headers (0.1 MB), which cut's CUDA shim (csrc/cuda_shim.cpp) compiles against.
crt=nvidia-cuda-crt==13.0.88
if [[ -f "$stamp" && -f "$target/torch/lib/libtorch_cpu.so" ]]; then
  if [[ ! -f "$target/nvidia/cu13/include/crt/host_config.h" ]]; then  # an install from before the shim
    rm -rf "$target.crt"
    "$python" -m pip install --quiet --disable-pip-version-check --no-deps --target "$target.crt" "$crt"
    cp -r "$target.crt/nvidia/cu13/include/crt" "$target/nvidia/cu13/include/"
    rm -rf "$target.crt"
  fi
  exit 0
fi
echo "cut: installing libtorch 2.11.0 (CPU) into $target (about 1.2 GB, once)" >&2
rm -rf "$target.partial"
# --no-deps skips ~3.4 GB of CUDA libraries; libtorch_cpu.so needs only cudart and cupti (RUNPATH ../../nvidia/cu13/lib).
"$python" -m pip install --quiet --disable-pip-version-check --no-deps --target "$target.partial" \
  torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 "$crt"
rm -rf "$target"
mv "$target.partial" "$target"
touch "$stamp"
