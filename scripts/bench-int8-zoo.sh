#!/usr/bin/env bash
# int8 on imported models: each ONNX file of ZOO (scripts/make-onnx-zoo.py) re-exported by cut in
# f32 and in int8 (calibrated on CALIB, a folder of images), then: the int8 file's share of the f32
# file, its fidelity to the original on TEST (another folder of images; cut eval --reference, in
# cut's interpreter), and batch-1 latency of both files in ONNX Runtime (interleaved, no spinning).
# Usage: scripts/bench-int8-zoo.sh ZOO CALIB TEST [CUT] [MODELS...]
# Models are random-weight builds from the packages' definitions: fidelity, not accuracy.
set -euo pipefail
zoo=$1 calib=$2 test=$3 cut=${4:-target/release/cut}
shift $(( $# < 4 ? $# : 4 ))
models=("$@")
if [[ ${#models[@]} -eq 0 ]]; then
  models=(timm_resnet18 tv_mobilenet_v2 tv_efficientnet_b0 timm_vit ultralytics_yolov8n)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
norm=(--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225)
echo "| model | f32 MB | int8 MB (share) | fidelity to the original (int8) | f32 ms | int8 ms | speed-up | int8 kernels |"
echo "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |"
for m in "${models[@]}"; do
  src="$zoo/$m.onnx"
  [[ -f $src ]] || { echo "| $m | absent |"; continue; }
  case $m in ultralytics*) n=();; *) n=("${norm[@]}");; esac
  "$cut" export "$src" -o "$work/$m.onnx" "${n[@]}" --force > /dev/null 2>&1
  "$cut" export "$src" -o "$work/$m.int8.onnx" --int8 --data "$calib" "${n[@]}" --force > /dev/null 2>&1
  fid=$("$cut" eval "$work/$m.int8.onnx" --data "$test" --reference "$src" "${n[@]}" --json 2> /dev/null |
    python3 -c "import json,sys; r=json.load(sys.stdin); print('; '.join(t['task']+' '+', '.join(f\"{x['name']} {x['value']:.4f}\" for x in t['metrics']) for t in r['fidelity']))")
  timing=$(PYTHONPATH=.onnx-env python3 scripts/bench-onnx.py "$work/$m.onnx" "$work/$m.int8.onnx" --batch 1 --rounds 100 --no-spin --kernels 2> /dev/null)
  kernels=$(echo "$timing" | grep "^kernels $work/$m.int8.onnx" | sed 's/^kernels [^:]*: //' | tr ',' '\n' | grep -E "QLinear|Integer|QGemm|Nhwc" | tr '\n' ',' | sed 's/,$//')
  f32ms=$(echo "$timing" | grep "$m.onnx: median" | sed 's/.*median \([0-9.]*\) ms.*/\1/')
  int8ms=$(echo "$timing" | grep "$m.int8.onnx: median" | sed 's/.*median \([0-9.]*\) ms.*/\1/')
  speed=$(echo "$timing" | grep "$m.int8.onnx: median" | sed 's/.*speed-up \([0-9.]*x\).*/\1/')
  a=$(stat -c %s "$work/$m.onnx") b=$(stat -c %s "$work/$m.int8.onnx")
  python3 -c "print(f'| $m | {$a/1e6:.1f} | {$b/1e6:.1f} ({100*$b/$a:.0f}%) | $fid | $f32ms | $int8ms | $speed | $kernels |')"
done
