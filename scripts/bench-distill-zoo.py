#!/usr/bin/env python3
"""Labels optional on the ONNX zoo: for every model in ZOO_DIR, channel pruning at half the MACs
by distillation on unlabelled inputs, then the pruned model's fidelity to the original on
held-back inputs. Prints a Markdown table for docs/distill.md.

Inputs: synthetic indoor scenes (`cut data synth`) at the model's input size, normalised as
torchvision and timm models expect (ImageNet mean and std; Ultralytics models read [0, 1]),
written as one .npz per example into train/ (the first 80%) and test/ (the rest).

Per model:
- the yardstick: ONNX Runtime's top-1 agreement of the original with itself when the test inputs
  get Gaussian noise of 1% of their standard deviation (for dense outputs, the relative L2 change
  under that noise);
- `cut prune --granularity channel --sparsity 0.5 --finetune-steps 0` with each criterion: the
  fidelity before fine-tuning;
- the same with snip and --finetune-steps STEPS: the fidelity after fine-tuning.
Outputs of rank 2 ([N, classes]) are imported as classification; others stay values.

  PYTHONPATH=.onnx-env:PILLOW python3 scripts/bench-distill-zoo.py ZOO_DIR [CUT] [--images 300]
      [--steps 300] [--criteria snip,taylor,random] [--only a,b] [--extra '--round-to 1']
"""
import argparse, json, os, subprocess, sys, tempfile, time
import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

IMAGENET = (np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32))


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        err = [l for l in r.stderr.splitlines() if l.startswith("cut: error")]
        raise RuntimeError(err[0] if err else r.stderr[-300:])
    return r.stdout


def scenes(cut, count, h, w, tmp):
    """`count` synthetic scene images of h x w, as [count, 3, h, w] in [0, 1]."""
    out = os.path.join(tmp, f"synth{h}x{w}")
    if not os.path.exists(out):
        run([cut, "data", "synth", "--train", str(count), "--test", "1", "--input", f"{h}x{w}", "-o", out])
    files = sorted(os.listdir(os.path.join(out, "train", "img")))[:count]
    pixels = [np.asarray(Image.open(os.path.join(out, "train", "img", f)).convert("RGB")) for f in files]
    return np.stack(pixels).transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def write_split(folder, name, x, start):
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    for k, row in enumerate(x):
        np.savez(os.path.join(folder, name, f"{start + k:05d}.npz"), **{INPUT: row})


def yardstick(session, x, rng):
    """Per output: top-1 agreement (classes) or relative L2 change (values) under 1% noise."""
    noisy = x + rng.standard_normal(x.shape).astype(np.float32) * 0.01 * x.std()
    names = [o.name for o in session.get_outputs()]
    clean, shaken = [], []
    for k in range(0, len(x), 16):
        clean.append(session.run(names, {INPUT: x[k:k + 16]}))
        shaken.append(session.run(names, {INPUT: noisy[k:k + 16]}))
    out = {}
    for i, n in enumerate(names):
        a = np.concatenate([c[i] for c in clean])
        b = np.concatenate([s[i] for s in shaken])
        if a.ndim == 2:
            out[n] = ("agreement", float((a.argmax(1) == b.argmax(1)).mean()))
        else:
            out[n] = ("relative_l2", float(np.linalg.norm(b - a) / np.linalg.norm(a)))
    return out


def fidelity(report, task, metric):
    for t in report["accuracy"]["fidelity"]:
        if t["task"] == task:
            return next(m["value"] for m in t["metrics"] if m["name"] == metric)


def main():
    global INPUT
    p = argparse.ArgumentParser()
    p.add_argument("zoo")
    p.add_argument("cut", nargs="?", default="target/release/cut")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--criteria", default="snip,taylor,random")
    p.add_argument("--only")
    p.add_argument("--extra", default="", help="more cut prune options, e.g. '--min-channels 1 --round-to 1'")
    a = p.parse_args()
    cut = os.path.abspath(a.cut)
    only = set(a.only.split(",")) if a.only else None
    tmp = tempfile.mkdtemp()
    rng = np.random.default_rng(0)
    print(f"| model | output | metric | 1% noise | " + " | ".join(f"{c}, no fine-tuning" for c in a.criteria.split(","))
          + f" | snip + {a.steps} steps | seconds |")
    print("|" + " --- |" * (6 + len(a.criteria.split(","))))
    for name in sorted(f[:-5] for f in os.listdir(a.zoo) if f.endswith(".onnx")):
        if only is not None and name not in only:
            continue
        path = os.path.join(a.zoo, name + ".onnx")
        graph = onnx.load(path, load_external_data=False).graph
        if len(graph.input) != 1 or graph.input[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            continue  # text models: see docs/distill.md for the text demo
        INPUT = graph.input[0].name
        dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
        h, w = (dims[2] or 224), (dims[3] or 224)
        x = scenes(cut, a.images, h, w, tmp)
        if not name.startswith("ultralytics"):
            x = (x - IMAGENET[0][None, :, None, None]) / IMAGENET[1][None, :, None, None]
        data = os.path.join(tmp, name)
        held = len(x) // 5
        write_split(data, "train", x[:-held], 0)
        write_split(data, "test", x[-held:], len(x) - held)
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        stick = yardstick(session, x[-held:], rng)
        kinds = ",".join(f"{n}:classification" for n, (m, _) in stick.items() if m == "agreement")
        base = [cut, "prune", path, "--tasks", ",".join(stick), "--data", data, "--granularity", "channel",
                "--sparsity", "0.5", "--json", "--force", "-o", os.path.join(tmp, name + ".p.safetensors")]
        if kinds:
            base += ["--task-kinds", kinds]
        base += a.extra.split()
        t = time.perf_counter()
        before, after = {}, {}
        try:
            for c in a.criteria.split(","):
                before[c] = json.loads(run(base + ["--criterion", c, "--finetune-steps", "0"]))
            after = json.loads(run(base + ["--criterion", "snip", "--finetune-steps", str(a.steps)]))
        except RuntimeError as e:
            print(f"| {name} | | | | {str(e)[:120]} |")
            continue
        seconds = time.perf_counter() - t
        for out, (metric, noise) in stick.items():
            cells = [f"{fidelity(before[c], out, metric):.3f}" for c in a.criteria.split(",")]
            print(f"| {name} | {out} | {metric} | {noise:.3f} | " + " | ".join(cells)
                  + f" | {fidelity(after, out, metric):.3f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
