#!/usr/bin/env bash
# Regenerates the bundled demo: a synthetic dataset (assets/demo-data) and a small three-task
# SceneNet trained on it (assets/demo.safetensors). Deterministic: same bytes on the same machine.
# Takes about 8 minutes on 2 CPU cores; pass --device auto to train on a GPU when there is one.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-libtorch.sh
cargo build --release --quiet
cut=./target/release/cut
rm -rf assets/demo-data
$cut data synth assets/demo-data --train 150 --test 40 --size 96x128 --seed 1
$cut train --data assets/demo-data \
  --tasks seg:segmentation:12,normal:normal,depth:depth \
  --blocks 2,2,2,2 --widths 16,32,64,96 --stem-width 16 --head-width 48 --input-size 96x128 \
  --steps 2000 --step-size 700 --gamma 0.5 --lr 1e-3 --batch 8 --val-every 100 \
  --lambdas seg=1,normal=20,depth=3 --seed 0 "$@" \
  -o assets/demo.safetensors --log assets/demo.train-log.json --force
$cut eval assets/demo.safetensors --data assets/demo-data --json > assets/demo.eval.json
$cut eval assets/demo.safetensors --data assets/demo-data --constant --json > assets/demo.constant.eval.json
$cut eval assets/demo.safetensors --data assets/demo-data
