#!/usr/bin/env python3
"""Checks an ONNX file the way a deployment would read it: the official checker (full check, with
shape inference) and ONNX Runtime on the CPU. With a folder of inputs (<input name>.npy) and
expected outputs (expected/<task>.npy), prints per output the largest absolute difference between
ONNX Runtime and the expected values and the expected values' largest magnitude, as JSON:
{"outputs": {"task": {"diff": d, "scale": s}}, "nodes": n, "ops": [...], "opset": o}.

Usage: check-onnx.py MODEL.onnx [DIR]   (PYTHONPATH=.onnx-env, set up by scripts/setup-onnx.sh)
"""
import json, os, sys
import numpy as np
import onnx
import onnxruntime as ort


def main():
    path = sys.argv[1]
    onnx.checker.check_model(path, full_check=True)
    model = onnx.load(path, load_external_data=False)
    ops = sorted({n.op_type for n in model.graph.node})
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    out = {"nodes": len(model.graph.node), "ops": ops, "opset": model.opset_import[0].version, "outputs": {}}
    if len(sys.argv) > 2:
        folder = sys.argv[2]
        kinds = {"tensor(int64)": np.int64}  # token ids and masks; everything else is float
        feeds = {i.name: np.load(os.path.join(folder, i.name + ".npy")).astype(kinds.get(i.type, np.float32))
                 for i in session.get_inputs()}
        names = [o.name for o in session.get_outputs()]
        for name, got in zip(names, session.run(names, feeds)):
            want = np.load(os.path.join(folder, "expected", name + ".npy"))
            if got.shape != want.shape:
                out["outputs"][name] = f"shape {list(got.shape)} != {list(want.shape)}"
            else:
                diff = float(np.abs(got.astype(np.float64) - want).max())
                out["outputs"][name] = {"diff": diff, "scale": float(np.abs(want).max())}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
