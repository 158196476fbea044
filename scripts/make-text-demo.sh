#!/usr/bin/env bash
# Regenerates the text demo: rewrites the committed text data (assets/text-data; needs npm and node)
# and rebuilds the model (scripts/setup-text-demo.sh). With --scratch, also trains the same shapes
# from random weights with the same settings, for the comparison in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
./scripts/setup-libtorch.sh
./scripts/setup-text-demo.sh  # fetches the Python packages the data step also uses
PYTHONPATH=.text-demo/pkgs "$python" scripts/make-text-demo.py --data-only --data assets/text-data
./scripts/setup-text-demo.sh --force
cut=./target/release/cut
$cut eval assets/text-demo.safetensors --data assets/text-data
if [[ "${1:-}" == "--scratch" ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  PYTHONPATH=.text-demo/pkgs "$python" scripts/make-text-demo.py --data assets/text-data --out "$work/base" --scratch "$work/scratch"
  $cut train --from "$work/scratch" --task-kinds era:sequence,party:sequence-mean,pos:token \
    --data assets/text-data --steps 600 --batch 16 --lr 1e-4 --step-size 500 --gamma 0.5 --val-every 50 \
    --seed 0 --dtype f16 -o "$work/scratch.safetensors" --force
  echo "from scratch, same shapes and settings:"
  $cut eval "$work/scratch.safetensors" --data assets/text-data
fi
