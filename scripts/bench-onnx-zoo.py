#!/usr/bin/env python3
"""The ONNX zoo benchmark: for every model make-onnx-zoo.py wrote into ZOO_DIR, `cut import` (time
and peak memory), `cut predict` against ONNX Runtime at batch 1 and 4 (largest difference over each
output's largest magnitude), and `cut bench` against ONNX Runtime (median batch-1 latency, both
on the same threads, in interleaved rounds; cut/ORT is the median of the per-round ratios). Prints a Markdown table for docs/import.md.

  python3 scripts/make-onnx-zoo.py ZOO_DIR          # full-size models (needs torch, timm, ...)
  PYTHONPATH=.onnx-env python3 scripts/bench-onnx-zoo.py ZOO_DIR [CUT] [--runs 20] [--threads 2] [--rounds 3]
"""
import argparse, json, os, re, statistics, struct, subprocess, sys, tempfile, time
import numpy as np
import onnx
import onnxruntime as ort


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(data[a:b], dtype=np.float32).reshape(v["shape"])
    return out


def run_timed(cmd):
    """Runs cmd under /usr/bin/time -v; returns (stdout, peak RSS in MB)."""
    out = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    if out.returncode != 0:
        errors = [l for l in out.stderr.splitlines() if l.startswith("cut: error")]
        raise RuntimeError(errors[0].removeprefix("cut: error: ") if errors else "failed")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1))
    return out.stdout, peak_kb / 1024


def feeds_at(model, refs, batch):
    """The graph's inputs at `batch` from the references, integer inputs as int64."""
    kinds = {onnx.TensorProto.INT64: np.int64}
    initializers = {i.name for i in model.graph.initializer}
    return {i.name: refs[f"{i.name}.b{batch}"].astype(kinds.get(i.type.tensor_type.elem_type, np.float32))
            for i in model.graph.input if i.name not in initializers}


def ort_session(path, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def median_ms(session, feeds, runs):
    """The median of `runs` timed runs after 3 untimed ones, in ms."""
    for _ in range(3):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def ort_median(path, feeds, runs, threads):
    return median_ms(ort_session(path, threads), feeds, runs)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("zoo")
    p.add_argument("cut", nargs="?", default="target/release/cut")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    rows = []
    tmp = tempfile.mkdtemp()
    for name in sorted(f[:-5] for f in os.listdir(a.zoo) if f.endswith(".onnx")):
        path = os.path.join(a.zoo, name + ".onnx")
        refs = read_safetensors(os.path.join(a.zoo, name + ".ref.safetensors"))
        model = onnx.load(path, load_external_data=False)
        ops = sorted({n.op_type for n in model.graph.node})
        size_mb = os.path.getsize(path) / 1e6
        row = {"model": name, "ops": len(ops), "size_mb": size_mb}
        try:
            out, peak = run_timed([a.cut, "import", path, "-o", os.path.join(tmp, name + ".safetensors"), "--force", "--json"])
            row["import_s"] = json.loads(out)["import_s"]
            row["peak_mb"] = peak
            outputs = [o.name for o in model.graph.output]
            worst = 0.0
            for batch in (1, 4):
                np.savez(os.path.join(tmp, "x.npz"), **feeds_at(model, refs, batch))
                got_path = os.path.join(tmp, "y.npz")
                subprocess.run([a.cut, "predict", path, os.path.join(tmp, "x.npz"), "-o", got_path, "--force"],
                               check=True, capture_output=True)
                got = np.load(got_path)
                for o in outputs:
                    want = refs[f"{o}.b{batch}"]
                    worst = max(worst, float(np.abs(got[o] - want).max() / max(np.abs(want).max(), 1e-12)))
            row["rel_err"] = worst
            cut_ms, ort_ms = [], []
            for _ in range(a.rounds):  # interleaved, so machine noise hits both alike
                bench = json.loads(subprocess.run([a.cut, "bench", path, "--runs", str(a.runs), "--json"],
                                                  check=True, capture_output=True, text=True).stdout)
                cut_ms.append(bench["median_ms"])
                ort_ms.append(ort_median(path, feeds_at(model, refs, 1), a.runs, a.threads))
            row["cut_ms"] = statistics.median(cut_ms)
            row["ort_ms"] = statistics.median(ort_ms)
            row["ratio"] = statistics.median(c / o for c, o in zip(cut_ms, ort_ms))
        except Exception as e:  # an import cut refuses: its one-line reason
            row["error"] = str(e)[:120]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    print("| model | ONNX ops | file MB | import s | peak MB | predict vs ORT (rel., b1 and b4) | cut bench ms | ORT ms | cut/ORT |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['ops']} | {r['size_mb']:.1f} | refused: {r['error']} | | | | | |")
            continue
        print(f"| {r['model']} | {r['ops']} | {r['size_mb']:.1f} | {r['import_s']:.2f} | {r['peak_mb']:.0f} | "
              f"{r['rel_err']:.1e} | {r['cut_ms']:.1f} | {r['ort_ms']:.1f} | {r['ratio']:.2f} |")


if __name__ == "__main__":
    main()
