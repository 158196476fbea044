#!/usr/bin/env python3
"""Channel pruning on the ONNX zoo: for every model make-onnx-zoo.py wrote into ZOO_DIR, `cut prune
--granularity channel --sparsity 0.5` on all its outputs (weight magnitude, no data, default width
rules; `--fold approximate` only where the exact fold cannot reach the budget), then the exported
ONNX file: the checker, ONNX Runtime's output shapes against the original's, and ONNX Runtime's
batch-1 latency of the original and the pruned file in interleaved rounds (the speed-up is the
median of the per-round ratios). Prints a Markdown table for docs/pruning.md.

  PYTHONPATH=.onnx-env python3 scripts/bench-channel-zoo.py ZOO_DIR [CUT] [--runs 20] [--threads 2] [--rounds 5]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
import onnx

sys.path.insert(0, os.path.dirname(__file__))
from importlib import import_module

zoo_bench = import_module("bench-onnx-zoo")


def prune(cut, path, out, tasks, extra=()):
    """Runs cut prune; the report and which fold it took, or the one-line refusal."""
    base = [cut, "prune", path, "--tasks", ",".join(tasks), "--granularity", "channel", "--sparsity", "0.5",
            "--onnx", "-o", out, "--force", "--json", *extra]
    for fold in ("exact", "approximate"):
        run = subprocess.run(base + ["--fold", fold], capture_output=True, text=True)
        if run.returncode == 0:
            return json.loads(run.stdout), fold, None
        error = [l for l in run.stderr.splitlines() if l.startswith("cut: error")]
        error = error[0].removeprefix("cut: error: ") if error else "failed"
        if "budget cannot be met" not in error:
            break
    return None, None, error


def main():
    p = argparse.ArgumentParser()
    p.add_argument("zoo")
    p.add_argument("cut", nargs="?", default="target/release/cut")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--only", help="comma-separated model names (file stems) to run")
    p.add_argument("--extra", default="", help="more cut prune options, e.g. '--round-to 16'")
    a = p.parse_args()
    only = set(a.only.split(",")) if a.only else None
    tmp = tempfile.mkdtemp()
    rows = []
    for name in sorted(f[:-5] for f in os.listdir(a.zoo) if f.endswith(".onnx")):
        if only is not None and name not in only:
            continue
        path = os.path.join(a.zoo, name + ".onnx")
        model = onnx.load(path, load_external_data=False)
        refs = zoo_bench.read_safetensors(os.path.join(a.zoo, name + ".ref.safetensors"))
        tasks = [o.name for o in model.graph.output]
        row = {"model": name}
        t = time.perf_counter()
        report, fold, error = prune(a.cut, path, os.path.join(tmp, name + ".safetensors"), tasks, a.extra.split())
        row["prune_s"] = time.perf_counter() - t
        if report is None:
            row["error"] = error[:140]
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
            continue
        channels = report["channels"]
        row.update(fold=fold, macs_removed=channels["macs_removed"],
                   params_removed=1 - channels["after"]["params"] / channels["before"]["params"])
        pruned = os.path.join(tmp, name + ".onnx")
        onnx.checker.check_model(pruned, full_check=True)
        feeds = zoo_bench.feeds_at(model, refs, 1)
        original, smaller = zoo_bench.ort_session(path, a.threads), zoo_bench.ort_session(pruned, a.threads)
        want = dict(zip(tasks, original.run(None, feeds)))
        got = dict(zip([o.name for o in smaller.get_outputs()], smaller.run(None, feeds)))
        row["shapes_kept"] = all(got[t].shape == want[t].shape for t in tasks)
        before, after = [], []
        for _ in range(a.rounds):
            before.append(zoo_bench.median_ms(original, feeds, a.runs))
            after.append(zoo_bench.median_ms(smaller, feeds, a.runs))
        row.update(ort_ms=statistics.median(before), pruned_ms=statistics.median(after),
                   speedup=statistics.median(b / s for b, s in zip(before, after)))
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    print("| model | MACs removed | params removed | fold | output shapes kept | ORT ms | pruned ms | speed-up |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | refused: {r['error']} | | | | | | |")
            continue
        print(f"| {r['model']} | {r['macs_removed']:.1%} | {r['params_removed']:.1%} | {r['fold']} | "
              f"{'yes' if r['shapes_kept'] else 'NO'} | {r['ort_ms']:.2f} | {r['pruned_ms']:.2f} | {r['speedup']:.2f}x |")


if __name__ == "__main__":
    main()
