#!/usr/bin/env python3
"""f32, f16 and int8 ONNX of a model, dense and channel-pruned: file sizes, every task's metrics in
ONNX Runtime on the test split (f32 and int8), and batch-1 latency in ONNX Runtime on the CPU
(interleaved, idle threads not spinning), with the kernels ONNX Runtime picked for the int8 file.
Prints one markdown table per model.

Usage: PYTHONPATH=.onnx-env python3 scripts/bench-int8.py [--cut target/release/cut] [--work DIR]
         [--only demo,text,minilm] [--rounds 300] [--threads 2]
Models: demo (assets/demo.safetensors, seg,depth kept), text (assets/text-demo.safetensors,
era,pos kept) and minilm (.bench-encoder/full.safetensors from scripts/bench-encoder-prune.sh,
era,pos kept; skipped when absent). Pruning: --granularity channel --sparsity 0.5 with the prune
defaults (and the MiniLM benchmark's batch 16, lr 5e-5, 128 scoring batches).
"""
import argparse, collections, json, os, statistics, subprocess, tempfile, time
import numpy as np
import onnx
import onnxruntime as ort

MODELS = {
    "demo": ("assets/demo.safetensors", "assets/demo-data", "seg,depth", []),
    "text": ("assets/text-demo.safetensors", "assets/text-data", "era,pos", []),
    "minilm": (".bench-encoder/full.safetensors", "assets/text-data", "era,pos",
               ["--batch", "16", "--lr", "5e-5", "--calib-batches", "128"]),
}


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {out.stderr.strip()}")
    return out.stdout


def session(path, threads):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    o.log_severity_level = 3
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def feeds(s, seq):
    rng = np.random.default_rng(0)
    out = {}
    for i in s.get_inputs():
        dims = [1] + [d if isinstance(d, int) else seq for d in i.shape[1:]]
        if i.type == "tensor(int64)":
            out[i.name] = np.ones(dims, np.int64) if "mask" in i.name else rng.integers(1, 1000, dims, dtype=np.int64)
        else:
            out[i.name] = rng.random(dims, dtype=np.float32)
    return out


def latency(paths, rounds, threads, seq):
    sessions = [session(p, threads) for p in paths]
    inputs = [feeds(s, seq) for s in sessions]
    for s, f in zip(sessions, inputs):
        s.run(None, f)
    times = [[] for _ in paths]
    for _ in range(rounds):
        for k, (s, f) in enumerate(zip(sessions, inputs)):
            t = time.perf_counter()
            s.run(None, f)
            times[k].append(time.perf_counter() - t)
    medians = [statistics.median(t) * 1e3 for t in times]
    speedups = [statistics.median(b / t for b, t in zip(times[0], ts)) for ts in times]
    return medians, speedups


def kernels(path, threads):
    with tempfile.TemporaryDirectory() as tmp:
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.log_severity_level = 3
        o.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
        ops = collections.Counter(n.op_type for n in onnx.load(o.optimized_model_filepath).graph.node)
    return ", ".join(f"{op} {n}" for op, n in ops.most_common() if op.startswith(("QLinear", "MatMulInteger", "QGemm", "Nhwc", "Conv", "MatMul", "Gemm")))


def metrics_line(tasks):
    return "; ".join(f"{t['task']} " + ", ".join(f"{m['name']} {m['value']:.4f}" for m in t["metrics"]) for t in tasks)


def measure(a, name):
    model, data, keep, extra = MODELS[name]
    if not os.path.exists(model):
        print(f"{name}: {model} is absent, skipped")
        return
    w = os.path.join(a.work, name)
    os.makedirs(w, exist_ok=True)
    rows = []
    # Dense: the selected tasks' heads, exported by cut export; metrics from cut eval in ONNX Runtime.
    dense = {k: os.path.join(w, f"dense.{k}.onnx") for k in ("f32", "f16", "int8")}
    common = ["--tasks", keep, "--force"]
    run([a.cut, "export", model, "-o", dense["f32"]] + common)
    run([a.cut, "export", model, "-o", dense["f16"], "--dtype", "f16"] + common)
    run([a.cut, "export", model, "-o", dense["int8"], "--int8", "--data", data] + common)
    ev = lambda extra_eval: json.loads(run([a.cut, "eval", model, "--data", data, "--tasks", keep, "--runtime", "onnxruntime", "--json"] + extra_eval))["tasks"]
    rows.append(("dense", dense, ev([]), ev(["--int8"])))
    # Pruned: channels at half the MACs, fine-tuned; the report has both ONNX files' metrics.
    out = os.path.join(w, "pruned.safetensors")
    report = json.loads(run([a.cut, "prune", "--tasks", keep, model, "--data", data, "--granularity", "channel",
                             "--sparsity", "0.5", "--onnx", "--int8", "--json", "--force", "-o", out] + extra))
    # --onnx writes the output's own dtype (f16 for an f16 checkpoint): export both explicitly.
    pruned = {"f32": os.path.join(w, "pruned.f32.onnx"), "f16": os.path.join(w, "pruned.f16.onnx"),
              "int8": os.path.join(w, "pruned.int8.onnx")}
    run([a.cut, "export", out, "-o", pruned["f32"], "--force"])
    run([a.cut, "export", out, "-o", pruned["f16"], "--dtype", "f16", "--force"])
    rows.append(("pruned", pruned, report["int8"]["f32"], report["int8"]["int8"]))
    seq = 128
    print(f"\n### {name}: {model}, tasks {keep} ({a.threads} threads, batch 1, {a.rounds} rounds{', 128 tokens' if name != 'demo' else ''})\n")
    print("| model | f32 MB | f16 MB | int8 MB (share) | f32 ms | f16 | int8 | int8 speed-up | metrics f32 | metrics int8 | int8 kernels |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
    for label, files, m32, m8 in rows:
        sizes = {k: os.path.getsize(p) / 1e6 for k, p in files.items()}
        ms, speed = latency([files["f32"], files["f16"], files["int8"]], a.rounds, a.threads, seq)
        print(f"| {label} | {sizes['f32']:.2f} | {sizes['f16']:.2f} | {sizes['int8']:.2f} ({100 * sizes['int8'] / sizes['f32']:.0f}%) "
              f"| {ms[0]:.2f} | {ms[1]:.2f} | {ms[2]:.2f} | {speed[2]:.2f}x | {metrics_line(m32)} | {metrics_line(m8)} | {kernels(files['int8'], a.threads)} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cut", default="target/release/cut")
    ap.add_argument("--work", default=".bench-int8")
    ap.add_argument("--only", default="demo,text,minilm")
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    print(f"onnxruntime {ort.__version__}")
    for name in a.only.split(","):
        measure(a, name)


if __name__ == "__main__":
    main()
