#!/usr/bin/env bash
# Channel pruning: what it buys in latency. Prints, per setting, the MACs removed, delta_m before
# fine-tuning (demo only) and the batch-1 speed-up of the pruned model over the dense input model
# with all heads (medians, runs interleaved so machine noise hits both alike).
# Usage: scripts/bench-channels.sh [cpu|cuda]. Set RUNS / FULL_RUNS for more or fewer timed runs,
# ROUNDS for more or fewer comparisons per demo row, FULL_SIZE for the full-size model's input
# (default 321x321), FULL_BATCHES for the full-size model's batch sizes (default 1 on cpu, 1 8 32
# on cuda; the verdict reads batch 1), CUDA_GRAPH=1 to time CUDA graph replays on cuda (`cut bench
# --cuda-graph`, not yet run on a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
device="${1:-cpu}"
runs="${RUNS:-200}"
rounds="${ROUNDS:-3}"  # interleaved comparisons per demo row, one after another; their median counts
full_runs="${FULL_RUNS:-3}"
if [ "$device" = cuda ]; then default_batches="1 8 32"; else default_batches="1"; fi
full_batches="${FULL_BATCHES:-$default_batches}"
graph_flag=()
timing="eager"
if [ "${CUDA_GRAPH:-0}" = 1 ]; then graph_flag=(--cuda-graph); timing="CUDA graph replays"; fi
if [ -z "${CUT_PREBUILT:-}" ]; then  # set on a machine without Rust, with the binaries carried
  ./scripts/setup-libtorch.sh
  cargo build --release --quiet
fi
cut=./target/release/cut
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

row() { # label pruned-report speedups-file bench-json...
  python3 - "$@" <<'PY'
import json, statistics, sys
label, report, out = sys.argv[1:4]
r = json.load(open(report)); benches = [json.load(open(f)) for f in sys.argv[4:]]
acc = r.get("accuracy")
dm = f'{acc["delta_m_before_finetune"]:+7.2f}%' if acc else "      -"
ratios = [b["speedup"] for b in benches]
speedup = statistics.median(ratios)
b = sorted(benches, key=lambda b: b["speedup"])[len(benches) // 2]
rounds = f' (rounds: {", ".join(f"{x:.2f}x" for x in ratios)})' if len(ratios) > 1 else ""
print(f'{label:<48} MACs {r["channels"]["before"]["macs"]/1e6:9.1f}M -> {r["channels"]["after"]["macs"]/1e6:9.1f}M '
      f'({100*r["channels"]["macs_removed"]:4.1f}% removed, cap {r["channels"]["rules"]["max_layer_ratio"]})  delta_m {dm}  '
      f'dense all heads {b["baseline"]["median_ms"]:8.2f} ms  pruned {b["model"]["median_ms"]:8.2f} ms  '
      f'speed-up {speedup:.2f}x{rounds} (per round 10-90% {b["speedup_per_round"]["p10"]:.2f}-{b["speedup_per_round"]["p90"]:.2f}x)')
with open(out, "a") as f:
    f.write(f'{label}\t{speedup:.2f}\n')
PY
}
speedups="$work/speedups"
# The issue's target: at half the MACs, batch-1 latency at least 1.6x lower than the dense model.
verdict() { # label-in-speedups what
  awk -F'\t' -v label="$1" -v what="$2" '$1 == label {
    printf "target: %s at least 1.60x faster: %.2fx, %s\n", what, $2, ($2 >= 1.6 ? "met" : "missed") }' "$speedups"
}

echo "== demo model (seg+depth of seg/normal/depth, 3x96x128), $device ($timing), batch 1, $rounds rounds of $runs runs, snip scores"
# fold, share of MACs removed, per-layer cap ("-": the default, 0.5 widened only as far as needed)
for setting in "exact 0.5 -" "exact 0.5 0.75" "exact 0.65 -" "exact 0.8 -" \
  "approximate 0.5 -" "approximate 0.65 -" "approximate 0.8 -"; do
  read -r fold s cap <<< "$setting"
  label="sparsity $s, fold $fold"
  cap_flag=()
  if [ "$cap" != - ]; then cap_flag=(--max-layer-ratio "$cap"); label="$label, max-layer-ratio $cap"; fi
  out="$work/demo.$fold.$s.$cap.safetensors"
  if ! $cut prune --tasks seg,depth assets/demo.safetensors --data assets/demo-data --granularity channel \
    --sparsity "$s" --fold "$fold" "${cap_flag[@]}" --finetune-steps 0 --device "$device" -o "$out" --force --json \
    > "$work/r.json" 2> "$work/err"; then
    echo "$label: $(cat "$work/err")"
    continue
  fi
  benches=()
  for round in $(seq "$rounds"); do
    $cut bench "$out" --baseline assets/demo.safetensors --runs "$runs" --warmup 20 --device "$device" "${graph_flag[@]}" --json > "$work/b$round.json"
    benches+=("$work/b$round.json")
  done
  cp "$work/r.json" "$work/r.$fold.$s.$cap.json"
  row "$label" "$work/r.json" "$speedups" "${benches[@]}"
done

if [ "$device" = cpu ] && [ -f "$work/demo.exact.0.5.-.safetensors" ]; then
  # One thread: no waiting on a second core that another process may hold.
  $cut bench "$work/demo.exact.0.5.-.safetensors" --baseline assets/demo.safetensors --runs "$runs" --warmup 20 --threads 1 --json > "$work/b1.json"
  row "sparsity 0.5, fold exact, 1 thread" "$work/r.exact.0.5.-.json" /dev/null "$work/b1.json"
fi

size="${FULL_SIZE:-321x321}"
echo "== full-size SceneNet-ResNet34 (random weights, 3 heads, 3x$size), $device ($timing), batch ${full_batches// /, }, $full_runs runs, magnitude scores"
$cut new --tasks seg:segmentation:13,normal:normal,depth:depth --input "$size" -o "$work/sn34.safetensors" > /dev/null
for cap in - 0.75; do
  out="$work/sn34.$cap.safetensors"
  cap_flag=()
  label="sparsity 0.5, default rules"
  if [ "$cap" != - ]; then cap_flag=(--max-layer-ratio "$cap"); label="sparsity 0.5, max-layer-ratio $cap"; fi
  $cut prune --tasks seg,depth "$work/sn34.safetensors" --criterion magnitude --granularity channel \
    --sparsity 0.5 "${cap_flag[@]}" --finetune-steps 0 --device "$device" -o "$out" --force --json > "$work/r.json"
  for batch in $full_batches; do
    batch_label="$label"
    [ "$batch" = 1 ] || batch_label="$label, batch $batch"
    $cut bench "$out" --baseline "$work/sn34.safetensors" --batch "$batch" --runs "$full_runs" --warmup 1 \
      --device "$device" "${graph_flag[@]}" --json > "$work/b.json"
    row "$batch_label" "$work/r.json" "$speedups" "$work/b.json"
  done
done
verdict "sparsity 0.5, fold exact" "demo, half the MACs removed (default fold),"
verdict "sparsity 0.5, default rules" "full-size SceneNet-ResNet34, half the MACs removed (default rules),"
