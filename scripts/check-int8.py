#!/usr/bin/env python3
"""Checks an int8 (QDQ) ONNX file as deployments read it: the official checker (full check, shape
inference), the op types and domains the file uses, and the kernels ONNX Runtime runs after its
graph optimisations (where QDQ groups become QLinearConv, MatMulIntegerToFloat, ...). Prints JSON.

Usage: PYTHONPATH=.onnx-env python3 scripts/check-int8.py MODEL.onnx
"""
import collections, json, os, sys, tempfile
import onnx
import onnxruntime as ort

path = sys.argv[1]
model = onnx.load(path)
onnx.checker.check_model(model, full_check=True)
with tempfile.TemporaryDirectory() as tmp:
    options = ort.SessionOptions()
    options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    kernels = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
print(json.dumps({
    "ops": collections.Counter(n.op_type for n in model.graph.node),
    "domains": sorted({n.domain for n in model.graph.node}),
    "kernels": kernels,
}))
