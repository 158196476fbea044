#!/usr/bin/env bash
# Runs every command on the demos with explicit settings and prints a checksum per output, so two
# builds can be compared byte for byte (a refactor must not change what cut writes):
#
#   scripts/same-outputs.sh OUT_DIR [CUT_BINARY] > sums-a.txt
#   diff sums-a.txt sums-b.txt
#
# Models and ONNX files are hashed as written; JSON reports and summaries with their timings
# (fields ending in _s or _ms, latencies, machine descriptions) removed first. Fine-tuning is
# shortened (40 steps) to keep a run to a few minutes on 2 cores; needs the text demo
# (scripts/setup-text-demo.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:?usage: same-outputs.sh OUT_DIR [CUT_BINARY]}"
cut="${2:-$root/target/release/cut}"
mkdir -p "$out"
cd "$root"
demo=assets/demo.safetensors
text=assets/text-demo.safetensors
common=(--lr 1e-4 --finetune-steps 40 --seed 0 --batch 8 --val-fraction 0.1 --force)

"$cut" prune --tasks seg,depth "$demo" --data assets/demo-data "${common[@]}" \
  --granularity weight --sparsity 0.9 --criterion snip -o "$out/weight.safetensors" > "$out/weight.txt"
"$cut" prune --tasks seg,depth "$demo" --data assets/demo-data "${common[@]}" \
  --granularity weight --sparsity 0.9 --packed -o "$out/packed.safetensors" > "$out/packed.txt"
"$cut" prune --tasks seg,depth "$demo" --data assets/demo-data "${common[@]}" \
  --granularity channel --sparsity 0.5 --onnx -o "$out/channel.safetensors" > "$out/channel.txt"
"$cut" prune --tasks era,pos "$text" --data assets/text-data "${common[@]}" \
  --sparsity 0.5 -o "$out/text.safetensors" > "$out/text.txt"
"$cut" split "$demo" --tasks seg,depth --data assets/demo-data --at backbone.blocks.1.0.relu2 \
  --finetune-steps 20 --runs 2 --force -o "$out/split" > "$out/split.txt"
"$cut" plan "$demo" --devices examples/devices/edge-mix.json --blocks 3 --server-flops 20T --json > "$out/plan.json"
"$cut" eval "$demo" --data assets/demo-data --json > "$out/eval.json"
"$cut" eval "$text" --data assets/text-data --json > "$out/eval-text.json"
"$cut" inspect "$demo" --json > "$out/inspect.json"
"$cut" inspect "$text" --json > "$out/inspect-text.json"
"$cut" export "$demo" --force -o "$out/demo.onnx" > /dev/null
"$cut" export "$text" --force -o "$out/text.onnx" > /dev/null
"$cut" new --tasks seg:segmentation:5,depth:depth --blocks 1,1,1,1 --widths 8,8,16,16 --stem-width 8 \
  --head-width 16 --force -o "$out/new.safetensors" > /dev/null
"$cut" train --from "$demo" --data assets/demo-data --steps 20 --lr 1e-4 --seed 0 --force \
  -o "$out/train.safetensors" > /dev/null 2>&1

cd "$out"
python3 - <<'PY'
import hashlib, json, os, re
timing = re.compile(r"(_s$|_ms$|seconds|latency|machine|threads|peak_memory|images_per_s|beats_cloud|pareto)")
def clean(v):
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items() if not timing.search(k)}
    if isinstance(v, list):
        return [clean(x) for x in v]
    return v
for name in sorted(os.listdir(".")):
    data = open(name, "rb").read()
    if name.endswith(".json"):
        try:
            data = json.dumps(clean(json.loads(data)), sort_keys=True).encode()
        except ValueError:
            pass
    elif name.endswith((".txt", ".md")):
        # Summaries and Markdown reports: lines with a time in them are left out.
        data = b"\n".join(l for l in data.splitlines() if not re.search(rb"\d ?(ms|s)\b|/s\b", l))
    print(hashlib.sha256(data).hexdigest()[:16], name)
PY
