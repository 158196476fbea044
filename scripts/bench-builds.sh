#!/usr/bin/env bash
# Two builds of cut, timed on one model in alternation: OLD, NEW, OLD, NEW, ... so that machine
# noise hits both alike. Prints each run's median latency and, per round, NEW's speed relative to
# OLD, then the median of the per-round ratios. For checking that a change costs no speed.
# Usage: scripts/bench-builds.sh OLD_BINARY NEW_BINARY [MODEL] (ROUNDS, RUNS and ARGS from the
# environment; ARGS are extra `cut bench` arguments such as "--tasks seg,depth").
set -euo pipefail
old=$1
new=$2
model=${3:-assets/demo.safetensors}
rounds=${ROUNDS:-8}
runs=${RUNS:-200}
read -r -a extra <<< "${ARGS:-}"
median() { "$1" bench "$model" --runs "$runs" "${extra[@]}" --json | python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["median_ms"])'; }
ratios=()
for r in $(seq 1 "$rounds"); do
  a=$(median "$old")
  b=$(median "$new")
  ratio=$(python3 -c "print(f'{$a / $b:.3f}')")
  ratios+=("$ratio")
  echo "round $r: old ${a} ms, new ${b} ms, old/new ${ratio}x"
done
python3 -c "import statistics,sys; r=[float(x) for x in sys.argv[1:]]; print(f'median old/new {statistics.median(r):.3f}x over {len(r)} rounds (range {min(r):.3f}-{max(r):.3f}); above 1 means the new build is faster')" "${ratios[@]}"
