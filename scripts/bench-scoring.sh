#!/usr/bin/env bash
# Benchmarks SNIP scoring (seconds per calibration batch), shared forward vs the reference's
# per-task loop, on the demo model and on a full-size ResNet-34 SceneNet with three heads.
# Usage: scripts/bench-scoring.sh [cpu|cuda]. The full-size model at 321x321, batch 16 takes minutes
# per batch on a 2-core CPU; set FULL_BATCH to use smaller batches there.
set -euo pipefail
cd "$(dirname "$0")/.."
device="${1:-cpu}"
if [ -z "${CUT_PREBUILT:-}" ]; then  # set on a machine without Rust, with the binaries carried
  ./scripts/setup-libtorch.sh
  cargo build --release --quiet --example bench_scoring
fi
bench=./target/release/examples/bench_scoring
$bench assets/demo.safetensors 128 8 5 seg,depth "$device"
$bench scenenet34 321 "${FULL_BATCH:-16}" "${FULL_BATCHES:-3}" seg,normal,depth "$device"
