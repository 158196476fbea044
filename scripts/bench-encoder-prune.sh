#!/usr/bin/env bash
# Quality of head and FFN-neuron pruning on a real pretrained encoder with real multi-task text:
# all-MiniLM-L6-v2 at full depth (6 layers, 12 heads, FFN 1536; vocabulary cut to the committed
# text's sub-words, which changes no MAC) is fine-tuned with cut on the three tasks of
# assets/text-data (era, party, pos), then pruned to era,pos at half the selected-task model's MACs
# with each criterion, and fine-tuned. The unpruned reference goes through the same fine-tuning (a
# weight-granularity prune at 0.1% sparsity, so the loop, steps and data are the same).
# Prints one line per run; reports stay in $WORK. CRITERIA (snip taylor random magnitude) and FUSION
# (vote) choose the runs. Needs .text-demo/pkgs (scripts/setup-text-demo.sh).
# About 40 minutes on 2 CPU cores with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${WORK:-.bench-encoder}"
steps="${STEPS:-300}"
lr="${LR:-5e-5}"
calib="${CALIB_BATCHES:-128}" # x 16 sentences = 2,048
criteria="${CRITERIA:-snip taylor random magnitude}"
fusion="${FUSION:-vote}"
python="${PYTHON:-python3}"
cut=./target/release/cut
cargo build --release --quiet
mkdir -p "$work"
kinds=era:sequence,party:sequence-mean,pos:token
if [[ ! -f "$work/full.safetensors" ]]; then
  PYTHONPATH=.text-demo/pkgs "$python" scripts/make-text-demo.py --out "$work/base" --layers 6
  "$cut" train --from "$work/base" --task-kinds "$kinds" --data assets/text-data --steps 600 --batch 16 \
    --lr 1e-4 --step-size 500 --gamma 0.5 --val-every 50 --seed 0 -o "$work/full.safetensors" \
    --log "$work/full.log.json" --force
fi
common=(--tasks era,pos "$work/full.safetensors" --data assets/text-data --batch 16 --calib-batches "$calib"
  --finetune-steps "$steps" --lr "$lr" --val-every 50 --seed 0 --fusion "$fusion" --force --json)
summarise() {
  "$python" - "$1" "$2" <<'EOF'
import json, sys
name, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
a = r["accuracy"]
acc = lambda m: next(x["value"] for x in m["metrics"] if x["name"] == "accuracy")
row = lambda ms: " ".join(f"{m['task']}={acc(m):.4f}" for m in ms)
c = r.get("channels") or {}
t = r["timings"]
print(f"{name}: MACs removed {c.get('macs_removed', 0):.3f}; before {row(a['before'])}; pruned {row(a['pruned'])};"
      f" after {row(a['after'])}; delta_m {a['delta_m_before_finetune']:+.2f}% -> {a['delta_m']:+.2f}%;"
      f" time score {t['score_s']:.1f} s, select {t['mask_s']:.1f} s, fine-tune {t['finetune_s']:.1f} s")
EOF
}
"$cut" prune "${common[@]}" --granularity weight --sparsity 0.001 --criterion magnitude \
  -o "$work/unpruned.safetensors" > /dev/null
summarise unpruned "$work/unpruned.report.json"
for c in $criteria; do
  "$cut" prune "${common[@]}" --granularity channel --sparsity 0.5 --criterion "$c" \
    -o "$work/$c.safetensors" > /dev/null
  summarise "$c" "$work/$c.report.json"
done
