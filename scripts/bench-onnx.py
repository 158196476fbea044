#!/usr/bin/env python3
"""Times exported models in ONNX Runtime on the CPU, interleaved: what a deployment of a pruned
model gains over the dense one. Each round runs every model once at each batch size, in turn, so
that machine noise hits them alike; prints per model and batch the median latency and, against the
first model, the median of the per-round ratios.

Usage: PYTHONPATH=.onnx-env python3 scripts/bench-onnx.py DENSE.onnx PRUNED.onnx [...]
         [--batch 1 --batch 8] [--rounds 20] [--threads 2] [--seq 128] [--kernels] [--no-spin]
Inputs are random: images uniform in [0, 1), token ids uniform below 1000 with a full mask.
--no-spin stops ONNX Runtime's idle threads from spinning: each session has its own thread pool,
and spinning threads of one model's session take cores from the next model's run (the default
spins, as ONNX Runtime does). --kernels prints, per model, the op types of the graph ONNX Runtime runs after its optimisations
(QLinearConv, QLinearMatMul, ... where it fused an int8 file's QDQ groups).
"""
import argparse, collections, os, statistics, tempfile, time
import numpy as np
import onnxruntime as ort


def feeds(session, batch, seq, rng):
    out = {}
    for i in session.get_inputs():
        dims = [batch] + [d if isinstance(d, int) else seq for d in i.shape[1:]]
        if i.type == "tensor(int64)":
            if "mask" in i.name:
                out[i.name] = np.ones(dims, dtype=np.int64)
            else:
                out[i.name] = rng.integers(1, 1000, size=dims, dtype=np.int64)
        else:
            out[i.name] = rng.random(dims, dtype=np.float32)
    return out


def print_kernels(models, threads):
    import onnx
    with tempfile.TemporaryDirectory() as tmp:
        for k, m in enumerate(models):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.optimized_model_filepath = os.path.join(tmp, f"{k}.onnx")
            ort.InferenceSession(m, options, providers=["CPUExecutionProvider"])
            ops = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
            print(f"kernels {m}: " + ", ".join(f"{op} {n}" for op, n in ops.most_common()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--batch", type=int, action="append")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--kernels", action="store_true")
    ap.add_argument("--no-spin", action="store_true")
    a = ap.parse_args()
    batches = a.batch or [1, 8]
    options = ort.SessionOptions()
    options.intra_op_num_threads = a.threads
    options.inter_op_num_threads = 1
    if a.no_spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = [ort.InferenceSession(m, options, providers=["CPUExecutionProvider"]) for m in a.models]
    rng = np.random.default_rng(0)
    if a.kernels:
        print_kernels(a.models, a.threads)
    print(f"onnxruntime {ort.__version__}, {a.threads} threads, {a.rounds} rounds, interleaved")
    for batch in batches:
        inputs = [feeds(s, batch, a.seq, rng) for s in sessions]
        for s, f in zip(sessions, inputs):  # warm-up
            s.run(None, f)
        times = [[] for _ in sessions]
        for _ in range(a.rounds):
            for k, (s, f) in enumerate(zip(sessions, inputs)):
                t = time.perf_counter()
                s.run(None, f)
                times[k].append(time.perf_counter() - t)
        base = times[0]
        for m, ts in zip(a.models, times):
            ratios = [b / t for b, t in zip(base, ts)]
            print(f"batch {batch}: {m}: median {statistics.median(ts) * 1e3:.2f} ms,"
                  f" speed-up {statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
