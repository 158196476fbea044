#!/bin/bash
# Labels withheld on both demos: each budget pruned once from the labelled data and once by
# distillation from the same inputs without their labels (the demo's images in train/ and test/
# folders; the text demo's lines with only their words), then both outputs evaluated on the real
# test labels against the unpruned model (delta_m, positive is better). Then the wall time of the
# labelled and the distilled channel run, interleaved, ROUNDS times (medians and their ratio).
#
#   scripts/bench-distill-demo.sh [CUT] [WORK]      (ROUNDS=3 by default; TEXT=0 skips the text demo)
set -euo pipefail
cd "$(dirname "$0")/.."
CUT=${1:-target/release/cut}
W=${2:-.bench-distill}
ROUNDS=${ROUNDS:-3}
mkdir -p "$W/images/train" "$W/images/test" "$W/texts"
cp assets/demo-data/train/img/*.png "$W/images/train/"
cp assets/demo-data/test/img/*.png "$W/images/test/"

eval_delta() { # model data baseline -> "delta_m metric=value ..."
  "$CUT" eval "$1" --data "$2" --baseline "$3" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
print("%+.2f%%" % d["delta_m"], " ".join("%s %s %.4f" % (t["task"], m["name"], m["value"]) for t in d["tasks"] for m in t["metrics"][:2]))'
}

compare() { # model tasks labelled unlabelled budgets...
  local model=$1 tasks=$2 labelled=$3 unlabelled=$4; shift 4
  "$CUT" eval "$model" --data "$labelled" --tasks "$tasks" --json > "$W/base.json"
  echo "| model | budget | data | delta_m on the test labels | metrics |"
  echo "| --- | --- | --- | --- | --- |"
  for budget in "$@"; do
    set -- ${budget/:/ }
    for kind in labelled unlabelled; do
      data=$labelled; [ $kind = unlabelled ] && data=$unlabelled
      out="$W/$(basename "$model" .safetensors).$1.$kind.safetensors"
      "$CUT" prune "$model" --tasks "$tasks" --data "$data" --granularity "$1" --sparsity "$2" -o "$out" --force --json > /dev/null 2>&1
      echo "| $(basename "$model") | $1 $2 | $kind | $(eval_delta "$out" "$labelled" "$W/base.json" | sed 's/ / | /') |"
    done
  done
}

compare assets/demo.safetensors seg,depth assets/demo-data "$W/images" channel:0.5 weight:0.9
if [ "${TEXT:-1}" = 1 ] && [ -f assets/text-demo.safetensors ]; then
  for split in train test; do
    python3 -c 'import json, sys
for line in open(sys.argv[1]):
    print(json.dumps({"tokens": json.loads(line)["tokens"]}))' "assets/text-data/$split.jsonl" > "$W/texts/$split.jsonl"
  done
  compare assets/text-demo.safetensors era,pos assets/text-data "$W/texts" channel:0.5 weight:0.9
fi

echo
echo "| round | labelled s | distilled s | ratio |"
echo "| --- | --- | --- | --- |"
ratios=()
for r in $(seq 1 "$ROUNDS"); do
  times=()
  for data in assets/demo-data "$W/images"; do
    start=$(date +%s.%N)
    "$CUT" prune assets/demo.safetensors --tasks seg,depth --data "$data" --granularity channel --sparsity 0.5 \
      -o "$W/timed.safetensors" --force --json > /dev/null 2>&1
    times+=("$(echo "$(date +%s.%N) - $start" | bc)")
  done
  ratio=$(echo "scale=3; ${times[1]} / ${times[0]}" | bc)
  ratios+=("$ratio")
  printf "| %d | %.1f | %.1f | %.2f |\n" "$r" "${times[0]}" "${times[1]}" "$ratio"
done
printf "median ratio %s\n" "$(printf '%s\n' "${ratios[@]}" | sort -n | sed -n "$(( (ROUNDS + 1) / 2 ))p")"
