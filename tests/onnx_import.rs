//! ONNX import against ONNX Runtime: every fixture in tests/fixtures/onnx (built from torchvision
//! and timm definitions with seeded random weights by scripts/make-onnx-zoo.py, with ONNX Runtime's
//! outputs on the original file beside it) imports, and the interpreter gives ORT's outputs at
//! batch 1 and 4: largest difference within 1e-4 of each output's largest magnitude.

use cut::graph::interpreter::forward_inputs;
use cut::graph::ops::Mode;
use cut::onnx::import::{import, ImportOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    files
}

/// The reference tensors ("image.b1", "logits.b4", ...) written beside a fixture.
fn references(model: &Path) -> BTreeMap<String, Tensor> {
    let path = model.with_extension("ref.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            (name, Tensor::from_slice(&values).view(shape.as_slice()))
        })
        .collect()
}

/// The graph's inputs at `batch` from the references ("image.b4", "input_ids.b1", ...), integer
/// inputs as int64.
fn inputs_at(model: &cut::graph::Model, refs: &BTreeMap<String, Tensor>, batch: usize) -> BTreeMap<String, Tensor> {
    model
        .graph
        .inputs
        .iter()
        .map(|decl| {
            let t = &refs[&format!("{}.b{batch}", decl.name)];
            let t = match decl.dtype {
                cut::graph::inputs::InputDType::I64 => t.to_kind(Kind::Int64),
                cut::graph::inputs::InputDType::F32 => t.shallow_clone(),
            };
            (decl.name.clone(), t)
        })
        .collect()
}

/// Largest |a - b| over the largest |b|.
fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]).max(1e-12);
    (a - b).abs().max().double_value(&[]) / scale
}

#[test]
fn the_zoo_matches_onnx_runtime_at_batch_1_and_4() {
    let files = fixtures();
    assert!(files.len() >= 6, "fixtures missing: {files:?}");
    for file in files {
        let imported = import(&file, &ImportOptions::default()).unwrap_or_else(|e| panic!("{}: {e:#}", file.display()));
        let refs = references(&file);
        let tasks: Vec<&str> = imported.model.tasks.iter().map(|t| t.name.as_str()).collect();
        for batch in [1, 4] {
            let inputs = inputs_at(&imported.model, &refs, batch);
            let outputs = forward_inputs(&imported.model.graph, &imported.params, &inputs, &tasks, Mode::Eval).unwrap();
            for task in &tasks {
                let want = &refs[&format!("{task}.b{batch}")];
                let got = outputs[*task].to_kind(Kind::Float);
                assert_eq!(got.size(), want.size(), "{} {task} batch {batch}", file.display());
                let err = relative_error(&got, want);
                assert!(
                    err < 1e-4,
                    "{} output '{task}' at batch {batch}: relative error {err:e}",
                    file.display()
                );
            }
        }
    }
}

fn write_npy(path: &Path, t: &Tensor) {
    use ndarray_npy::WriteNpyExt;
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let v = Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap();
    let file = std::fs::File::create(path).unwrap();
    ndarray::ArrayD::from_shape_vec(shape, v)
        .unwrap()
        .write_npy(file)
        .unwrap();
}

/// Every zoo model, weight-pruned by magnitude (no data) and exported back to ONNX: the file passes
/// the ONNX checker, and ONNX Runtime gives the interpreter's outputs of the pruned checkpoint.
#[test]
fn pruned_zoo_models_export_back_to_onnx() {
    let tmp = tempfile::tempdir().unwrap();
    for file in fixtures() {
        let stem = file.file_stem().unwrap().to_string_lossy().to_string();
        let dir = tmp.path().join(&stem);
        std::fs::create_dir_all(dir.join("expected")).unwrap();
        let imported = import(&file, &ImportOptions::default()).unwrap();
        let tasks: Vec<String> = imported.model.tasks.iter().map(|t| t.name.clone()).collect();
        let pruned = dir.join("pruned.safetensors");
        let run = |args: &[&str]| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_cut"))
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "cut {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let (file_s, pruned_s) = (file.to_str().unwrap(), pruned.to_str().unwrap());
        let task_list = tasks.join(",");
        run(&[
            "prune",
            file_s,
            "--tasks",
            &task_list,
            "--sparsity",
            "0.5",
            "-o",
            pruned_s,
        ]);
        let onnx = dir.join("pruned.onnx");
        run(&["export", pruned_s, "-o", onnx.to_str().unwrap()]);

        let ckpt = cut::checkpoint::Checkpoint::open(&pruned).unwrap();
        let model = ckpt.model(&Default::default()).unwrap().model;
        let params = ckpt.load_params(&model, tch::Device::Cpu).unwrap();
        let zeros: i64 = params
            .values()
            .map(|t| t.eq(0.0).sum(Kind::Int64).int64_value(&[]))
            .sum();
        assert!(zeros > 0, "{stem}: nothing was pruned");
        let inputs = inputs_at(&model, &references(&file), 4);
        for (name, t) in &inputs {
            write_npy(&dir.join(format!("{name}.npy")), t);
        }
        let names: Vec<&str> = tasks.iter().map(String::as_str).collect();
        let outputs = forward_inputs(&model.graph, &params, &inputs, &names, Mode::Eval).unwrap();
        for (name, t) in &outputs {
            write_npy(&dir.join("expected").join(format!("{name}.npy")), t);
        }
        let out = std::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .env("PYTHONPATH", ".onnx-env")
            .args(["scripts/check-onnx.py", onnx.to_str().unwrap(), dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{stem}: check-onnx.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for task in &tasks {
            let o = &verdict["outputs"][task];
            let (diff, scale) = (o["diff"].as_f64().unwrap(), o["scale"].as_f64().unwrap());
            assert!(
                diff <= 1e-4 * scale.max(1e-6),
                "{stem} '{task}': ONNX Runtime differs by {diff:e} (scale {scale})"
            );
        }
    }
}

/// A one-node model: input "x" [batch, 3, 4, 4], `op` with a weight initializer "w" (external,
/// in `external`, when given).
fn tiny_model(op: &str, external: Option<&str>) -> Vec<u8> {
    use cut::onnx::proto::*;
    use prost::Message;
    let dim = |d: tensor_shape_proto::dimension::Value| tensor_shape_proto::Dimension {
        value: Some(d),
        ..Default::default()
    };
    let image = ValueInfoProto {
        name: "x".into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: vec![
                        dim(tensor_shape_proto::dimension::Value::DimParam("batch".into())),
                        dim(tensor_shape_proto::dimension::Value::DimValue(3)),
                        dim(tensor_shape_proto::dimension::Value::DimValue(4)),
                        dim(tensor_shape_proto::dimension::Value::DimValue(4)),
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut weight = TensorProto {
        name: "w".into(),
        dims: vec![2, 3, 1, 1],
        data_type: 1,
        raw_data: vec![0u8; 24].into(),
        ..Default::default()
    };
    if let Some(location) = external {
        weight.raw_data = Default::default();
        weight.data_location = 1;
        weight.external_data = vec![StringStringEntryProto {
            key: "location".into(),
            value: location.into(),
        }];
    }
    let node = NodeProto {
        name: "the_node".into(),
        op_type: op.into(),
        input: vec!["x".into(), "w".into()],
        output: vec!["y".into()],
        ..Default::default()
    };
    let y = ValueInfoProto {
        name: "y".into(),
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            node: vec![node],
            initializer: vec![weight],
            input: vec![image],
            output: vec![y],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// Bad files are one-line errors naming the file and the node, with a non-zero exit, and nothing
/// is written.
#[test]
fn bad_onnx_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &[&str]); 4] = [
        (
            "unsupported.onnx",
            tiny_model("Hardmax", None),
            &[
                "op 'Hardmax' is not supported",
                "node 'the_node'",
                "opset 17",
                "cut imports: Add,",
            ],
        ),
        (
            "garbage.onnx",
            b"\xff\xff\xff\xff not protobuf".to_vec(),
            &["garbage.onnx: not an ONNX model"],
        ),
        (
            "external.onnx",
            tiny_model("Conv", Some("weights.bin")),
            &["external.onnx", "tensor 'w'", "weights.bin"],
        ),
        (
            "escape.onnx",
            tiny_model("Conv", Some("../weights.bin")),
            &["must lie beside the model"],
        ),
    ];
    for (name, bytes, wants) in cases {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out_path = tmp.path().join(format!("{name}.safetensors"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cut"))
            .args(["import", path.to_str().unwrap(), "-o", out_path.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert_eq!(stderr.trim().lines().count(), 1, "{name}: {stderr}");
        for want in wants {
            assert!(stderr.contains(want), "{name}: '{want}' not in {stderr}");
        }
        assert!(!out_path.exists(), "{name}: an output was written");
    }
    // The same Conv with its weights beside it imports.
    std::fs::write(tmp.path().join("weights.bin"), vec![0u8; 24]).unwrap();
    let model = import(&tmp.path().join("external.onnx"), &ImportOptions::default()).unwrap();
    assert_eq!(model.params.values().map(|t| t.numel()).sum::<usize>(), 6);
}

/// `--input` fixes a symbolic size, `--task-kinds` names an output's kind, and a wrong name is an
/// error that lists the outputs.
#[test]
fn import_options() {
    let file = fixtures()
        .into_iter()
        .find(|f| f.ends_with("tv_mobilenet_v2_three_heads.onnx"))
        .unwrap();
    let kinds = BTreeMap::from([
        ("seg".to_string(), cut::graph::TaskKind::Segmentation),
        ("depth".to_string(), cut::graph::TaskKind::Depth),
        ("cls".to_string(), cut::graph::TaskKind::Classification),
    ]);
    let sizes = BTreeMap::from([("image".to_string(), vec![3, 64, 48])]);
    let imported = import(
        &file,
        &ImportOptions {
            input_sizes: sizes,
            task_kinds: kinds,
        },
    )
    .unwrap();
    let kinds: Vec<&str> = imported.model.tasks.iter().map(|t| t.kind.as_str()).collect();
    assert_eq!(kinds, ["segmentation", "depth", "classification"]);
    assert_eq!(imported.model.graph.sizes["height"], 64);
    assert_eq!(imported.model.graph.sizes["width"], 48);
    let wrong = BTreeMap::from([("normals".to_string(), cut::graph::TaskKind::Normal)]);
    let err = import(
        &file,
        &ImportOptions {
            task_kinds: wrong,
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("outputs: seg, depth, cls"), "{err}");
}

/// `cut predict` on an ONNX file writes each task's outputs, named by task, in .npz and
/// .safetensors: ONNX Runtime's values within 1e-4 (three outputs, batch 4).
#[test]
fn predict_writes_outputs_by_task() {
    let file = fixtures()
        .into_iter()
        .find(|f| f.ends_with("tv_mobilenet_v2_three_heads.onnx"))
        .unwrap();
    let refs = references(&file);
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image.npy");
    write_npy(&image, &refs["image.b4"]);
    for out in ["out.npz", "out.safetensors"] {
        let out = tmp.path().join(out);
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_cut"))
            .args([
                "predict",
                file.to_str().unwrap(),
                image.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
        let got: BTreeMap<String, Tensor> = if out.extension().unwrap() == "npz" {
            let mut npz = ndarray_npy::NpzReader::new(std::fs::File::open(&out).unwrap()).unwrap();
            npz.names()
                .unwrap()
                .into_iter()
                .map(|k| {
                    let a: ndarray::ArrayD<f32> = npz.by_name(&k).unwrap();
                    let shape: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
                    let v: Vec<f32> = a.iter().copied().collect();
                    (
                        k.trim_end_matches(".npy").to_string(),
                        Tensor::from_slice(&v).view(shape.as_slice()),
                    )
                })
                .collect()
        } else {
            let bytes = std::fs::read(&out).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            st.tensors()
                .into_iter()
                .map(|(k, v)| {
                    let vals: Vec<f32> = v
                        .data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect();
                    let shape: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
                    (k, Tensor::from_slice(&vals).view(shape.as_slice()))
                })
                .collect()
        };
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            ["cls", "depth", "seg"],
            "{}",
            out.display()
        );
        for task in ["seg", "depth", "cls"] {
            let err = relative_error(&got[task], &refs[&format!("{task}.b4")]);
            assert!(err < 1e-4, "{task}: {err:e}");
        }
    }
    // A wrong input is a one-line error; nothing is written.
    let bad = tmp.path().join("bad.npy");
    write_npy(&bad, &Tensor::zeros([2, 4, 32, 32], tch::kind::FLOAT_CPU));
    let out = tmp.path().join("bad.npz");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_cut"))
        .args([
            "predict",
            file.to_str().unwrap(),
            bad.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert_eq!(status.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("input 'image' is [2, 4, 32, 32]: dimension 1 must be 3"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// Training runs through the imported ops: on the three-head torchvision model with labelled kinds
/// for two outputs, snip scores both tasks, cuts 90% of the weights, and 10 fine-tuning steps lower
/// the validation loss; the third output (no kind, not selected) is dropped.
#[test]
fn imported_model_prunes_and_fine_tunes_with_labelled_kinds() {
    let file = fixtures()
        .into_iter()
        .find(|f| f.ends_with("tv_mobilenet_v2_three_heads.onnx"))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cut = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cut"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let data_arg = data.to_str().unwrap();
    cut(&[
        "data", "synth", "-o", data_arg, "--train", "16", "--test", "8", "--input", "32x32",
    ]);
    let pruned = tmp.path().join("pruned.safetensors");
    let stdout = cut(&[
        "prune",
        file.to_str().unwrap(),
        "--tasks",
        "seg,depth",
        "--task-kinds",
        "seg:segmentation,depth:depth",
        "--data",
        data_arg,
        "--criterion",
        "snip",
        "--finetune-steps",
        "10",
        "--lr",
        "1e-3",
        "--batch",
        "4",
        "-o",
        pruned.to_str().unwrap(),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    let reached = report["sparsity"]["reached"].as_f64().unwrap();
    assert!((reached - 0.9).abs() < 0.01, "sparsity {reached}");
    let log = report["finetune_log"].as_array().unwrap();
    let first = log[0]["val_total"].as_f64().unwrap();
    let last = log.last().unwrap()["val_total"].as_f64().unwrap();
    assert!(last < first, "validation loss {first} -> {last}");
    let tasks: Vec<&str> = report["accuracy"]["after"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task"].as_str().unwrap())
        .collect();
    assert_eq!(tasks, ["seg", "depth"]);
    let checkpoint = cut::checkpoint::Checkpoint::open(&pruned).unwrap();
    let model = checkpoint.model(&Default::default()).unwrap().model;
    let names: Vec<&str> = model.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["seg", "depth"]);
}

/// A text model whose mask arithmetic is not one `cut` reads (the mask added to the embeddings
/// as a number) is refused, naming the node and the value. (The forms it reads are covered by the
/// BERT and RoBERTa fixtures.)
#[test]
fn mask_arithmetic_cut_does_not_read_is_refused() {
    use cut::onnx::proto::*;
    use prost::Message;
    let ints = |name: &str| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 7,
                shape: Some(TensorShapeProto {
                    dim: [
                        tensor_shape_proto::dimension::Value::DimParam("batch".into()),
                        tensor_shape_proto::dimension::Value::DimValue(4),
                    ]
                    .into_iter()
                    .map(|d| tensor_shape_proto::Dimension {
                        value: Some(d),
                        ..Default::default()
                    })
                    .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let node = |op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>| NodeProto {
        name: output.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute,
        ..Default::default()
    };
    let to_float = AttributeProto {
        name: "to".into(),
        r#type: 2,
        i: 1,
        ..Default::default()
    };
    let tensor = |name: &str, dims: Vec<i64>, data_type: i32, bytes: Vec<u8>| TensorProto {
        name: name.into(),
        dims,
        data_type,
        raw_data: bytes.into(),
        ..Default::default()
    };
    let table: Vec<u8> = (0..40).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            node: vec![
                node("Gather", &["table", "ids"], "tokens", vec![]),
                node("Cast", &["mask"], "mask_f", vec![to_float]),
                node("Unsqueeze", &["mask_f", "axis2"], "mask_col", vec![]),
                node("Add", &["tokens", "mask_col"], "y", vec![]),
            ],
            initializer: vec![
                tensor("table", vec![10, 4], 1, table),
                tensor("axis2", vec![1], 7, 2i64.to_le_bytes().to_vec()),
            ],
            input: vec![ints("ids"), ints("mask")],
            output: vec![ValueInfoProto {
                name: "y".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("text.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    let err = import(&path, &ImportOptions::default()).err().unwrap();
    let msg = format!("{err:#}");
    assert!(msg.contains("node 'y' (Add, opset 17)"), "{msg}");
    assert!(
        msg.contains("the index arithmetic on the integer inputs that computes 'mask_col'"),
        "{msg}"
    );
    assert!(msg.contains("not the additive bias"), "{msg}");
}

/// `cut predict` on image files: pixels scaled to [0, 1], reordered with --bgr and normalised with
/// --mean/--std give the outputs of the same values given as an array; the same normalisation
/// recorded by `cut import` (and kept through `cut export`) gives the same outputs without flags.
#[test]
fn predict_reads_images() {
    let file = fixtures()
        .into_iter()
        .find(|f| f.ends_with("tv_mobilenet_v2_three_heads.onnx"))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..32 * 32 * 3).map(|i| ((i * 37) % 256) as u8).collect();
    let png = tmp.path().join("scene.png");
    image::RgbImage::from_raw(32, 32, pixels.clone())
        .unwrap()
        .save(&png)
        .unwrap();
    let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
    // By hand: channel c of the model's input is BGR channel c, (p / 255 - mean[c]) / std[c].
    let mut by_hand = vec![0f32; 3 * 32 * 32];
    for (i, px) in pixels.chunks_exact(3).enumerate() {
        for c in 0..3 {
            by_hand[c * 1024 + i] = (px[2 - c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    let npy = tmp.path().join("scene.npy");
    write_npy(&npy, &Tensor::from_slice(&by_hand).view([1, 3, 32, 32]));
    let predict = |input: &Path, out: &str, model: &Path, flags: bool| -> BTreeMap<String, Tensor> {
        let out = tmp.path().join(out);
        let norm = ["--bgr", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"];
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_cut"))
            .args([
                "predict",
                model.to_str().unwrap(),
                input.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ])
            .args(if flags { &norm[..] } else { &[] })
            .output()
            .unwrap();
        assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
        let mut npz = ndarray_npy::NpzReader::new(std::fs::File::open(&out).unwrap()).unwrap();
        ["seg", "depth", "cls"]
            .iter()
            .map(|k| {
                let a: ndarray::ArrayD<f32> = npz.by_name(k).unwrap();
                let shape: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
                let v: Vec<f32> = a.iter().copied().collect();
                (k.to_string(), Tensor::from_slice(&v).view(shape.as_slice()))
            })
            .collect()
    };
    let from_image = predict(&png, "image.npz", &file, true);
    let from_array = predict(&npy, "array.npz", &file, true);
    for (task, t) in &from_image {
        let err = relative_error(t, &from_array[task]);
        assert!(err < 1e-5, "{task}: {err:e}");
    }
    // `cut import` records the normalisation, so the checkpoint's images need no flags, and a
    // round trip through `cut export` keeps it.
    let imported = tmp.path().join("imported.safetensors");
    let exported = tmp.path().join("exported.onnx");
    let norm = ["--bgr", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"];
    for args in [
        [
            &["import", file.to_str().unwrap(), "-o", imported.to_str().unwrap()][..],
            &norm,
        ]
        .concat(),
        vec!["export", imported.to_str().unwrap(), "-o", exported.to_str().unwrap()],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cut"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (model, out) in [(&imported, "recorded.npz"), (&exported, "round_trip.npz")] {
        let recorded = predict(&png, out, model, false);
        for (task, t) in &recorded {
            assert_eq!(t, &from_image[task], "{}: {task}", model.display());
        }
    }
}

/// Every command reads an ONNX file where it reads a checkpoint: inspect, bench, plan, eval,
/// train --from (refusing, by name, a task the data has no labels for) and split on the three-head
/// model (prune, export and predict are tested above).
#[test]
fn every_command_reads_onnx() {
    let file = fixtures()
        .into_iter()
        .find(|f| f.ends_with("tv_mobilenet_v2_three_heads.onnx"))
        .unwrap();
    let model = file.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let at = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let cut = |args: &[&str]| -> serde_json::Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cut"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    };
    let (data, devices) = (at("data"), at("devices.json"));
    cut(&[
        "data", "synth", "-o", &data, "--train", "8", "--test", "4", "--input", "32x32",
    ]);
    let kinds = ["--task-kinds", "seg:segmentation,depth:depth,cls:classification"];
    let inspect = cut(&["inspect", model, "--json"]);
    assert_eq!(inspect["tasks"].as_array().unwrap().len(), 3, "{inspect}");
    let bench = cut(&["bench", model, "--runs", "2", "--json"]);
    assert!(bench["median_ms"].as_f64().unwrap() > 0.0, "{bench}");
    std::fs::write(
        &devices,
        r#"{"devices": [{"name": "a", "flops": "1T", "memory": "4G", "snr_db": 20, "samples": 64}]}"#,
    )
    .unwrap();
    let plan = cut(&["plan", model, "--devices", &devices, "--json"]);
    assert!(plan.is_object(), "{plan}");
    let eval = cut(&[
        &["eval", model, "--data", &data, "--tasks", "seg,depth", "--json"][..],
        &kinds,
    ]
    .concat());
    assert!(eval.is_object(), "{eval}");
    // train --from fine-tunes every task, and the scenes have no labels for cls.
    let trained = at("trained.safetensors");
    let train = [
        "train", "--from", model, "--data", &data, "--steps", "2", "--batch", "4", "-o", &trained,
    ];
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_cut"))
        .args([&train[..], &kinds].concat())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("no classification labels"),
        "{err}"
    );
    assert!(!Path::new(&trained).exists());
    let prefix = at("split");
    let split = [
        &[
            "split",
            model,
            "--tasks",
            "seg,depth",
            "--data",
            &data,
            "--finetune-steps",
            "2",
            "--batch",
            "4",
        ][..],
        &["-o", &prefix],
        &kinds,
    ]
    .concat();
    cut(&split);
    assert!(Path::new(&at("split.device.safetensors")).exists());
}

/// The three-head model with its height and width left symbolic, as exporters write them with
/// `dynamic_axes`.
fn symbolic_copy(dir: &Path) -> PathBuf {
    use cut::onnx::proto::{tensor_shape_proto::dimension::Value as D, type_proto::Value as T, ModelProto};
    use prost::Message;
    let file = fixtures()
        .into_iter()
        .find(|f| f.ends_with("tv_mobilenet_v2_three_heads.onnx"))
        .unwrap();
    let mut model = ModelProto::decode(std::fs::read(&file).unwrap().as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let Some(T::TensorType(t)) = graph.input[0].r#type.as_mut().and_then(|t| t.value.as_mut()) else {
        panic!("the image input is not a tensor")
    };
    let dims = &mut t.shape.as_mut().unwrap().dim;
    dims[2].value = Some(D::DimParam("height".into()));
    dims[3].value = Some(D::DimParam("width".into()));
    let out = dir.join("symbolic.onnx");
    std::fs::write(&out, model.encode_to_vec()).unwrap();
    out
}

/// `--input [NAME:]SIZE` sizes an ONNX file's symbolic input on every command that reads a model:
/// without it each refuses in one line that names the flag; with it inspect, bench, predict, plan,
/// prune, export, eval and train --from run at that size. A name that is not an input, and a size
/// given for a checkpoint, are refused.
#[test]
fn every_command_sizes_symbolic_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let model = symbolic_copy(tmp.path());
    let model = model.to_str().unwrap();
    let at = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cut"))
            .args(args)
            .output()
            .unwrap()
    };
    let cut = |args: &[&str]| -> serde_json::Value {
        let out = run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    };
    let refused = |args: &[&str], want: &str| {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: '{want}' not in {err}");
    };
    refused(&["inspect", model], "leaves dimension 2 symbolic");
    refused(
        &["inspect", model, "--input", "img:3x40x48"],
        "'img', which is not an input (inputs: image)",
    );

    let inspect = cut(&["inspect", model, "--input", "image:3x40x48", "--json"]);
    assert_eq!(inspect["input"], serde_json::json!([3, 40, 48]), "{inspect}");
    let bench = cut(&[
        "bench", model, "--input", "3x40x48", "--runs", "1", "--warmup", "0", "--json",
    ]);
    assert!(bench["median_ms"].as_f64().unwrap() > 0.0, "{bench}");

    let x = at("x.npy");
    write_npy(Path::new(&x), &Tensor::zeros([2, 3, 40, 48], tch::kind::FLOAT_CPU));
    let out = at("out.npz");
    let predicted = cut(&["predict", model, &x, "--input", "image:40x48", "-o", &out, "--json"]);
    assert_eq!(
        predicted["outputs"]["depth"],
        serde_json::json!([2, 1, 40, 48]),
        "{predicted}"
    );

    let devices = at("devices.json");
    std::fs::write(
        &devices,
        r#"{"devices": [{"name": "a", "flops": "1T", "memory": "4G", "snr_db": 20, "samples": 64}]}"#,
    )
    .unwrap();
    cut(&[
        "plan",
        model,
        "--input",
        "image:3x40x48",
        "--devices",
        &devices,
        "--json",
    ]);
    let pruned = at("pruned.safetensors");
    let sized = ["--input", "image:3x40x48"];
    cut(&[
        &[
            "prune",
            model,
            "--tasks",
            "seg,depth",
            "--sparsity",
            "0.5",
            "-o",
            &pruned,
        ][..],
        &sized,
    ]
    .concat());
    cut(&[&["export", model, "-o", &at("sized.onnx")][..], &sized].concat());

    let data = at("data");
    cut(&[
        "data", "synth", "-o", &data, "--train", "8", "--test", "4", "--input", "32x32",
    ]);
    let kinds = "seg:segmentation,depth:depth";
    let eval_with = |norm: &[&str]| {
        let base = [
            "eval",
            model,
            "--input",
            "3x32x32",
            "--data",
            &data,
            "--tasks",
            "seg,depth",
            "--task-kinds",
            kinds,
            "--json",
        ];
        cut(&[&base[..], norm].concat())
    };
    let eval = eval_with(&[]);
    assert!(eval.is_object(), "{eval}");
    // A model that records no normalisation reads the layout's images as the reference does;
    // stating the reference's gives the same metrics, and another normalisation other ones.
    let eval_with = |norm: &[&str]| eval_with(norm)["tasks"].clone();
    let reference = [
        "--pixel-range",
        "255",
        "--bgr",
        "--mean",
        "104.00699,116.66877,122.67892",
    ];
    assert_eq!(eval_with(&reference), eval["tasks"]);
    assert_ne!(eval_with(&["--mean", "0.5,0.5,0.5"]), eval["tasks"]);
    let trained = at("trained.safetensors");
    cut(&[
        "train",
        "--from",
        model,
        "--input",
        "3x32x32",
        "--task-kinds",
        kinds,
        "--train-tasks",
        "seg,depth",
        "--data",
        &data,
        "--steps",
        "1",
        "--batch",
        "4",
        "-o",
        &trained,
    ]);
    // The checkpoint records its sizes; --input NAME:SIZE is for ONNX files.
    refused(
        &[
            "prune",
            &pruned,
            "--tasks",
            "seg",
            "--sparsity",
            "0.5",
            "-o",
            &at("again.safetensors"),
            "--input",
            "image:3x8x8",
        ],
        "--input image:SIZE sets the size an ONNX file leaves symbolic",
    );
}

/// Channel groups from the graph's dependencies on every zoo model: removing every other unit (a
/// channel, neuron or convolution group) of every prunable group (keeping those whose constant a
/// padded convolution would see) gives a
/// smaller model whose outputs keep their shapes and equal, within 1e-4, those of the model with
/// the removed channels zeroed (their constants folded into the consumers' biases).
#[test]
fn zoo_models_shrink_to_their_masked_outputs() {
    use cut::prune::{channels::channel_groups, structured};
    let mut shrunk_some = Vec::new();
    for file in fixtures() {
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        let imported = import(&file, &ImportOptions::default()).unwrap();
        let (model, params) = (&imported.model, &imported.params);
        let groups = channel_groups(&model.graph).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let hazards = structured::fold_hazards(model, params, &groups).unwrap();
        let keep: Vec<Option<Vec<i64>>> = groups
            .iter()
            .zip(&hazards)
            .map(|(g, h)| {
                (g.prunable() && !g.producers.is_empty() && g.units() > 1).then(|| {
                    let w = g.unit.width();
                    let units: Vec<usize> = (0..g.units())
                        .filter(|&u| u % 2 == 0 || h[u * w..(u + 1) * w].contains(&true))
                        .collect();
                    g.channels_of(&units)
                })
            })
            .collect();
        if keep.iter().all(Option::is_none) {
            continue;
        }
        let masked = structured::zero_removed(model, params, &groups, &keep).unwrap();
        let shrunk = structured::shrink(model, params, &groups, &keep).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(shrunk.inexact.is_empty(), "{name}: {:?}", shrunk.inexact);
        let before: usize = params.values().map(|t| t.numel()).sum();
        let after: usize = shrunk.params.values().map(|t| t.numel()).sum();
        assert!(after < before, "{name}: {after} parameters of {before}");
        let refs = references(&file);
        let inputs = inputs_at(model, &refs, 4);
        let tasks: Vec<&str> = model.tasks.iter().map(|t| t.name.as_str()).collect();
        let want = forward_inputs(&model.graph, &masked, &inputs, &tasks, Mode::Eval).unwrap();
        let got = forward_inputs(&shrunk.model.graph, &shrunk.params, &inputs, &tasks, Mode::Eval).unwrap();
        for task in &tasks {
            assert_eq!(got[*task].size(), want[*task].size(), "{name}: {task}");
            let err = relative_error(&got[*task], &want[*task]);
            assert!(err < 1e-4, "{name}: {task}: {err:e}");
        }
        shrunk_some.push(name);
    }
    // Every architecture has channels to remove.
    assert_eq!(shrunk_some.len(), fixtures().len(), "{shrunk_some:?}");
}

/// Attention heads through reshapes, transposes and products: timm's fused projection writes one
/// group of heads at three offsets (queries, keys, values), Hugging Face's three projections write
/// it side by side; the output projection reads it, and every reshape of heads follows its count.
#[test]
fn attention_heads_are_groups_of_imported_models() {
    use cut::graph::ops::Unit;
    use cut::prune::channels::{channel_groups, ChannelGroup};
    let groups = |name: &str| -> Vec<ChannelGroup> {
        let imported = import(&Path::new("tests/fixtures/onnx").join(name), &ImportOptions::default()).unwrap();
        channel_groups(&imported.model.graph).unwrap()
    };
    let heads = |gs: &[ChannelGroup]| -> Vec<ChannelGroup> {
        gs.iter()
            .filter(|g| matches!(g.unit, Unit::Head { .. }))
            .cloned()
            .collect()
    };
    let vit = heads(&groups("timm_vit.onnx"));
    assert_eq!(vit.len(), 2, "{vit:?}");
    let block = &vit[0];
    assert_eq!(
        (block.unit, block.units(), block.prunable()),
        (Unit::Head { width: 16 }, 3, true)
    );
    assert_eq!(block.producers, ["/blocks/blocks.0/attn/qkv/MatMul"]);
    assert_eq!(block.producer_offsets_of(&block.producers[0]), [0, 48, 96]);
    assert_eq!(block.consumers, ["/blocks/blocks.0/attn/proj/MatMul"]);
    // The split into parts and heads, three squeezes, and the merge back into channels.
    assert_eq!(block.reshapes.len(), 5, "{:?}", block.reshapes);
    assert_eq!(block.reshapes["/blocks/blocks.0/attn/Reshape_1"], (1, 1));

    let bert = heads(&groups("hf_bert.onnx"));
    assert_eq!(bert.len(), 2, "{bert:?}");
    let names: Vec<&str> = bert[0]
        .producers
        .iter()
        .map(|p| p.rsplit('/').nth(1).unwrap())
        .collect();
    assert_eq!(names, ["query", "key", "value"]);
    assert!(bert[0].prunable() && bert[0].producer_offsets.is_empty());

    // Swin's relative position bias, a constant [heads, N, N] added to the scores, loses a removed
    // head's entry.
    let swin = heads(&groups("timm_swin.onnx"));
    assert_eq!(swin.len(), 1, "{swin:?}");
    let bias = "/layers/layers.1/blocks/blocks.0/attn/Add/const1";
    assert!(swin[0].prunable());
    assert_eq!(swin[0].constants.get(bias), Some(&(3, 16)), "{swin:?}");
}
