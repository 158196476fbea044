#!/usr/bin/env bash
# The checks only a GPU machine can run, for one without Rust (binaries built on this one):
#   tests  the CUDA tests that CI ignores (tests/cuda.rs: a CUDA graph replay equals an eager
#          forward; the GPU peak-memory statistic counts an allocation)
#   eager  scripts/bench-channels.sh cuda, as before CUDA graphs
#   graph  the same with CUDA graph replays (CUDA_GRAPH=1)
# Usage: scripts/gpu-check.sh [tests] [eager] [graph] (default: all three, in that order).
# Before carrying: cargo build --release && cargo test --release --test cuda --no-run, then
#   cp "$(ls target/release/deps/cuda-* | grep -v '\.d$')" target/release/cuda-tests
# and carry target/release/cut and target/release/cuda-tests. libtorch comes from the machine's
# PyTorch 2.11 (TORCH_LIB, else found through python3 or /opt/torch/.venv/bin/python).
# RUNS, FULL_RUNS and ROUNDS pass on to bench-channels.sh (defaults here: 100, 50, 1).
set -euo pipefail
cd "$(dirname "$0")/.."
lib="${TORCH_LIB:-}"
for python in python3 /opt/torch/.venv/bin/python; do
  [ -n "$lib" ] && break
  lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null) || lib=""
done
if [ -z "$lib" ]; then
  echo "gpu-check: no PyTorch found for libtorch; set TORCH_LIB to a torch/lib folder" >&2
  exit 1
fi
export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CUT_PREBUILT=1 RUNS="${RUNS:-100}" FULL_RUNS="${FULL_RUNS:-50}" ROUNDS="${ROUNDS:-1}"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(tests eager graph)
for step in "${steps[@]}"; do
  case "$step" in
    tests)
      echo "== CUDA tests"
      target/release/cuda-tests --ignored --test-threads 1 ;;
    eager)
      echo "== bench-channels, eager"
      bash scripts/bench-channels.sh cuda ;;
    graph)
      echo "== bench-channels, CUDA graph replays"
      CUDA_GRAPH=1 bash scripts/bench-channels.sh cuda ;;
    *)
      echo "gpu-check: unknown step '$step' (tests, eager or graph)" >&2
      exit 2 ;;
  esac
done
