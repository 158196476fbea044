#!/usr/bin/env python3
"""The ONNX test zoo: models built from the definitions in torchvision, timm, Ultralytics and
transformers (PyPI), with seeded random weights made "trained-like" (batch-norm statistics
recomputed on a few random inputs, norm scales perturbed, so no two tensors are equal and the
exporter folds nothing away), exported with torch.onnx.export (dynamo=False, opset 17, dynamic
batch; a few also with dynamo=True, opset 18, as "<name>_dynamo"), with reference outputs from ONNX
Runtime on the exported file at batch 1 and 4.

  python3 scripts/make-onnx-zoo.py OUT_DIR [--small]
  python3 scripts/make-onnx-zoo.py OUT_DIR --only-yolo --side 640 --no-dynamo   # YOLO at 640

--small writes the tiny variants the tests read (committed under tests/fixtures/onnx/, each well
under 1 MB); without it, the benchmark zoo (docs/benchmarks.md). Needs torch, torchvision, timm,
onnx and onnxruntime (and onnxscript for the dynamo exports; --no-dynamo skips them); the tests
themselves need none of them.
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn


def trained_like(model, inputs, seed):
    """Perturbs every norm scale and shift, then recomputes batch-norm statistics on `inputs`."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
            with torch.no_grad():
                m.weight.mul_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.add_(0.1 * torch.randn(m.bias.shape, generator=g))
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for x in inputs:
            model(x)
    return model.eval()


class TwoHeads(nn.Module):
    """A multi-task model: a torchvision backbone's features, a segmentation head and a depth head
    (both upsampled to the input, as the synthetic scenes of `cut data synth` label them), and a
    classification head."""

    def __init__(self, features, channels, classes, seg_classes):
        super().__init__()
        self.features = features
        self.seg = nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, seg_classes, 1))
        self.depth = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))
        self.cls = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))

    def forward(self, x):
        f = self.features(x)
        up = lambda y: nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return up(self.seg(f)), up(self.depth(f)), self.cls(f)


def zoo(small):
    torch.manual_seed(0)  # random initialisation: the same files on every run
    import timm
    import torchvision.models as tvm

    side = 32 if small else 224
    mv2 = tvm.mobilenet_v2(num_classes=10, width_mult=0.1 if small else 1.0)
    mv3 = tvm.mobilenet_v3_small(num_classes=10, width_mult=0.25 if small else 1.0)
    eff_conf = tvm.efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25 if small else 1.0,
                                                   depth_mult=0.25 if small else 1.0)
    eff = tvm.efficientnet.EfficientNet(eff_conf[0], 0.2, last_channel=eff_conf[1], num_classes=10)
    regnet = tvm.regnet.RegNet(tvm.regnet.BlockParams.from_init_params(depth=4, w_0=8, w_a=8.0, w_m=2.0, group_width=8),
                               num_classes=10) if small else tvm.regnet_x_400mf(num_classes=10)
    resnet = timm.create_model("resnet18", pretrained=False, num_classes=10,
                               **({"channels": (8, 16, 24, 32), "stem_width": 8} if small else {}))
    if small:
        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=side, patch_size=8,
                                embed_dim=48, depth=2, num_heads=3)
        deit = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, num_classes=10, img_size=side,
                                 patch_size=8, embed_dim=48, depth=2, num_heads=3)
        convnext = timm.create_model("convnext_atto", pretrained=False, num_classes=10, dims=(8, 16, 24, 32),
                                     depths=(1, 1, 1, 1))
        swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10, img_size=side,
                                 patch_size=4, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2))
    else:
        vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=10)
        deit = timm.create_model("deit_small_distilled_patch16_224", pretrained=False, num_classes=10)
        convnext = timm.create_model("convnext_tiny", pretrained=False, num_classes=10)
        swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=10)
    if small:
        shuffle = tvm.ShuffleNetV2([2, 2, 2], [8, 16, 32, 64, 64], num_classes=10)
        mnas = tvm.MNASNet(0.1, num_classes=10)
        dense = tvm.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=8, bn_size=2, num_classes=10)
    else:
        shuffle = tvm.shufflenet_v2_x1_0(num_classes=10)
        mnas = tvm.mnasnet1_0(num_classes=10)
        dense = tvm.densenet121(num_classes=10)
    two = TwoHeads(tvm.mobilenet_v2(width_mult=0.25 if small else 1.0).features[:7], 32 if not small else 8, 10, 13)
    models = {
        "tv_mobilenet_v2": (mv2, ["logits"]),
        "tv_mobilenet_v3_small": (mv3, ["logits"]),
        "tv_efficientnet_b0": (eff, ["logits"]),
        "tv_regnet": (regnet, ["logits"]),
        "timm_resnet18": (resnet, ["logits"]),
        "tv_shufflenet_v2": (shuffle, ["logits"]),
        "tv_mnasnet": (mnas, ["logits"]),
        "tv_densenet": (dense, ["logits"]),
        "tv_mobilenet_v2_three_heads": (two, ["seg", "depth", "cls"]),
        "timm_vit": (vit, ["logits"]),
        "timm_deit_distilled": (deit, ["logits"]),
        "timm_convnext": (convnext, ["logits"]),
        "timm_swin": (swin, ["logits"]),
    }
    return side, models


def yolo_models(small):
    """Ultralytics detect, segment and pose models from their YAML definitions (no download),
    with the heads in export form (one concatenated output, as Ultralytics' exporter sets them).
    The small variants scale widths to 1/32 and use 4 distribution bins instead of 16."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "cut-yolo-config"))
    import ultralytics.nn.modules.head as heads
    from ultralytics.nn.tasks import DetectionModel, PoseModel, SegmentationModel, yaml_model_load

    torch.manual_seed(1)
    models = {}
    for name, cls, outputs in [
        ("yolov8n.yaml", DetectionModel, ["boxes"]),
        ("yolo11n.yaml", DetectionModel, ["boxes"]),
        ("yolov8n-seg.yaml", SegmentationModel, ["boxes", "protos"]),
        ("yolo11n-pose.yaml", PoseModel, ["boxes"]),
    ]:
        cfg = yaml_model_load(name)
        if small:
            cfg["scales"] = {"n": [0.33, 0.03125, 1024]}
            cfg["scale"] = "n"
            cfg["reg_max"] = 4
        model = cls(cfg, nc=3, verbose=False).eval()
        for m in model.modules():
            if isinstance(m, heads.Detect):
                m.export, m.format = True, "onnx"
        models["ultralytics_" + name.removesuffix(".yaml").replace("-", "_")] = (model, outputs)
    return models


def hf_models(small):
    """Hugging Face transformers models built from configurations (no download)."""
    import transformers

    torch.manual_seed(2)
    if small:
        config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=64, num_labels=10)
    else:
        config = transformers.ViTConfig(num_labels=10)
    vit = transformers.ViTForImageClassification(config)
    return {"hf_vit": (Logits(vit), ["logits"])}


def hf_text_models(small):
    """Hugging Face BERT and RoBERTa for sequence classification from configurations (no download):
    inputs input_ids and attention_mask of a fixed length (dynamic batch), references with padding."""
    import transformers

    torch.manual_seed(3)
    tiny = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=64, num_labels=3) if small else dict(num_labels=3)
    bert = transformers.BertForSequenceClassification(transformers.BertConfig(**tiny))
    roberta = transformers.RobertaForSequenceClassification(transformers.RobertaConfig(**tiny))
    return {"hf_bert": (TextLogits(bert), ["logits"]), "hf_roberta": (TextLogits(roberta), ["logits"])}


class TextLogits(nn.Module):
    """A Hugging Face text model's logits from token ids and an attention mask."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_text(name, model, outputs, out_dir, seed, seq=16):
    """Exports a text model at sequence length `seq` with ONNX Runtime's outputs on random ids and
    masks that pad some samples."""
    torch.manual_seed(seed)
    model = trained_like(model.eval(), [], seed)
    vocab = model.model.config.vocab_size
    path = os.path.join(out_dir, f"{name}.onnx")
    ids = torch.randint(0, vocab, (1, seq))
    inputs = ["input_ids", "attention_mask"]
    torch.onnx.export(model, (ids, torch.ones_like(ids)), path, dynamo=False, opset_version=17,
                      input_names=inputs, output_names=outputs,
                      dynamic_axes={**{i: {0: "batch"} for i in inputs}, **{o: {0: "batch"} for o in outputs}})
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    refs = {}
    for batch in (1, 4):
        ids = rng.integers(0, vocab, (batch, seq), dtype=np.int64)
        mask = np.ones((batch, seq), dtype=np.int64)
        for b in range(1, batch):
            mask[b, seq - 3 * b:] = 0  # padded tails of different lengths
        ids[mask == 0] = model.model.config.pad_token_id or 0
        refs[f"input_ids.b{batch}"], refs[f"attention_mask.b{batch}"] = ids, mask
        for o, y in zip(outputs, session.run(outputs, {"input_ids": ids, "attention_mask": mask})):
            refs[f"{o}.b{batch}"] = y
    save_safetensors(os.path.join(out_dir, f"{name}.ref.safetensors"), refs)
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {params} parameters, {os.path.getsize(path)} bytes")


class Logits(nn.Module):
    """A Hugging Face model's logits as a plain output."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


# Models also exported with the dynamo exporter (torch.onnx.export's default since PyTorch 2.9),
# which writes attention differently (heads folded into the batch for a batched matmul, unbind as
# Slice): "<name>_dynamo".
DYNAMO = ["timm_resnet18", "tv_mobilenet_v3_small", "timm_vit", "timm_swin", "hf_vit"]


def export(name, model, outputs, side, out_dir, seed, dynamo=False):
    torch.manual_seed(seed)
    calib = [torch.randn(4, 3, side, side) for _ in range(3)]
    model = trained_like(model, calib, seed)
    if dynamo:
        name += "_dynamo"
    path = os.path.join(out_dir, f"{name}.onnx")
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=64)
        torch.onnx.export(model, (torch.randn(2, 3, side, side),), path, dynamo=True, opset_version=18,
                          input_names=["image"], output_names=outputs, dynamic_shapes=({0: batch},),
                          external_data=False)
    else:
        torch.onnx.export(model, torch.randn(1, 3, side, side), path, dynamo=False, opset_version=17,
                          input_names=["image"], output_names=outputs,
                          dynamic_axes={"image": {0: "batch"}, **{o: {0: "batch"} for o in outputs}})
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    refs = {}
    for batch in (1, 4):
        x = rng.standard_normal((batch, 3, side, side), dtype=np.float32)
        refs[f"image.b{batch}"] = x
        for o, y in zip(outputs, session.run(outputs, {"image": x})):
            refs[f"{o}.b{batch}"] = y
    save_safetensors(os.path.join(out_dir, f"{name}.ref.safetensors"), refs)
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {params} parameters, {os.path.getsize(path)} bytes")


def save_safetensors(path, tensors):
    """Writes a safetensors file with numpy only (no torch needed by readers)."""
    import json
    import struct
    header, blobs, offset = {}, [], 0
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k], dtype=np.float32)
        header[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    out_dir = sys.argv[1]
    small = "--small" in sys.argv
    os.makedirs(out_dir, exist_ok=True)
    side, models = zoo(small)
    if "--only-yolo" in sys.argv:
        # YOLO at another size than the zoo's (its native 640, say): --only-yolo --side 640.
        models = {}
        side = int(sys.argv[sys.argv.index("--side") + 1]) if "--side" in sys.argv else side
    if "--no-yolo" not in sys.argv:
        models.update(yolo_models(small))
    if "--no-hf" not in sys.argv and "--only-yolo" not in sys.argv:
        models.update(hf_models(small))
    for i, (name, (model, outputs)) in enumerate(models.items()):
        export(name, model, outputs, side, out_dir, seed=i)
    for i, (name, (model, outputs)) in enumerate(models.items()):
        if name in DYNAMO and "--no-dynamo" not in sys.argv:
            export(name, model, outputs, side, out_dir, seed=i, dynamo=True)
    if "--no-hf" not in sys.argv and "--only-yolo" not in sys.argv:
        for i, (name, (model, outputs)) in enumerate(hf_text_models(small).items()):
            export_text(name, model, outputs, out_dir, seed=len(models) + i, seq=16 if small else 128)


if __name__ == "__main__":
    main()
