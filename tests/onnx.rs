//! `cut export` to ONNX, checked as a deployment reads the file: the official `onnx` checker (full
//! check) and ONNX Runtime from PyPI (scripts/setup-onnx.sh, run by the test command) on real test
//! inputs, against `cut`'s interpreter.

use assert_cmd::Command;
use cut::checkpoint::{Checkpoint, LoadOptions};
use cut::data::loader::Loader;
use cut::graph::interpreter::{forward_inputs, Mode};
use ndarray_npy::WriteNpyExt;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

const DEMO: &str = "assets/demo.safetensors";
const DEMO_DATA: &str = "assets/demo-data";
const TEXT_DEMO: &str = "assets/text-demo.safetensors";
const TEXT_DATA: &str = "assets/text-data";

fn cut() -> Command {
    Command::cargo_bin("cut").unwrap()
}

fn write_npy(path: &Path, t: &Tensor) {
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let file = std::fs::File::create(path).unwrap();
    if t.kind() == Kind::Int64 {
        let v = Vec::<i64>::try_from(t.flatten(0, -1)).unwrap();
        ndarray::ArrayD::from_shape_vec(shape, v)
            .unwrap()
            .write_npy(file)
            .unwrap();
    } else {
        let v = Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap();
        ndarray::ArrayD::from_shape_vec(shape, v)
            .unwrap()
            .write_npy(file)
            .unwrap();
    }
}

/// The checker's verdict on `onnx`: JSON with the per-output largest difference from the
/// expected values in `dir`, when given.
fn check(onnx: &Path, dir: Option<&Path>) -> serde_json::Value {
    let mut cmd = std::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()));
    cmd.env("PYTHONPATH", ".onnx-env")
        .arg("scripts/check-onnx.py")
        .arg(onnx);
    if let Some(d) = dir {
        cmd.arg(d);
    }
    let out = cmd.output().expect("python3 runs");
    assert!(
        out.status.success(),
        "check-onnx.py {}: {} (run scripts/setup-onnx.sh)",
        onnx.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes `count` test examples of `data` as the graph's inputs, and the interpreter's outputs of
/// `model` (with weights as `half` rounds them, when set) under expected/.
fn reference(model: &Path, data: &str, count: usize, half: bool, dir: &Path) {
    let ckpt = Checkpoint::open(model).unwrap();
    let mut m = ckpt.model(&LoadOptions::default()).unwrap().model;
    let mut params = ckpt.load_params(&m, Device::Cpu).unwrap();
    if half {
        // The export folds batch norms before rounding; so does the reference.
        let (graph, folded, _) = cut::graph::passes::fold_batch_norms(&m.graph, &params).unwrap();
        (m.graph, params) = (graph, folded);
        for t in params.values_mut() {
            if t.is_floating_point() {
                *t = t.to_kind(Kind::Half).to_kind(Kind::Float);
            }
        }
    }
    let (dataset, _) = cut::data::open_for(&m, Path::new(data), None, Some(128)).unwrap();
    let test = dataset.split(cut::data::Split::Test, 0.1).unwrap();
    let batch = Loader::sequential(test, count, Device::Cpu).next().unwrap().unwrap();
    let inputs = batch.graph_inputs(&m.graph).unwrap();
    let tasks: Vec<&str> = m.tasks.iter().map(|t| t.name.as_str()).collect();
    let outputs = tch::no_grad(|| forward_inputs(&m.graph, &params, &inputs, &tasks, Mode::Eval).unwrap());
    std::fs::create_dir_all(dir.join("expected")).unwrap();
    for (name, t) in &inputs {
        write_npy(&dir.join(format!("{name}.npy")), t);
    }
    for (name, t) in &outputs {
        write_npy(&dir.join("expected").join(format!("{name}.npy")), t);
    }
}

fn export(model: &Path, out: &Path, extra: &[&str]) {
    cut()
        .arg("export")
        .arg(model)
        .arg("-o")
        .arg(out)
        .args(extra)
        .assert()
        .success();
}

/// Exports `model`, runs both in ONNX Runtime and the interpreter on `count` test examples, and
/// returns the largest difference over the outputs relative to each output's largest magnitude
/// (at least 1): f32 keeps about 7 digits, and the demo's normals reach 276, where 1e-4 absolute
/// is a few units in the last place (asserting every task is there).
fn round_trip(model: &Path, data: &str, count: usize, extra: &[&str], dir: &Path) -> f64 {
    std::fs::create_dir_all(dir).unwrap();
    let onnx = dir.join("model.onnx");
    export(model, &onnx, extra);
    let half = extra.contains(&"f16");
    reference(model, data, count, half, dir);
    let verdict = check(&onnx, Some(dir));
    let outputs = verdict["outputs"].as_object().unwrap();
    let m = Checkpoint::open(model)
        .unwrap()
        .model(&LoadOptions::default())
        .unwrap()
        .model;
    let mut worst = 0f64;
    for t in &m.tasks {
        let o = outputs
            .get(&t.name)
            .unwrap_or_else(|| panic!("no output '{}' in {verdict}", t.name));
        let (diff, scale) = (o["diff"].as_f64(), o["scale"].as_f64());
        let (Some(diff), Some(scale)) = (diff, scale) else {
            panic!("{}: {o}", t.name)
        };
        eprintln!(
            "{}: {} largest difference {diff:.3e} (outputs up to {scale:.3})",
            model.display(),
            t.name
        );
        worst = worst.max(diff / scale.max(1.0));
    }
    worst
}

fn prune(args: &[&str], input: &str, out: &Path) {
    cut()
        .arg("prune")
        .args(args)
        .arg(input)
        .arg("-o")
        .arg(out)
        .assert()
        .success();
}

/// The image demo dense, weight-pruned (packed) and channel-pruned, each within 1e-4 of the
/// interpreter on real test images; f16 weights within the rounding of the weights.
#[test]
fn image_models_match_the_interpreter_in_onnx_runtime() {
    let t = tempfile::tempdir().unwrap();
    let dense = round_trip(Path::new(DEMO), DEMO_DATA, 4, &[], &t.path().join("dense"));
    assert!(dense < 1e-4, "dense: {dense}");

    let packed = t.path().join("packed.safetensors");
    prune(
        &[
            "--tasks",
            "seg,depth",
            "--sparsity",
            "0.8",
            "--packed",
            "--criterion",
            "magnitude",
        ],
        DEMO,
        &packed,
    );
    let d = round_trip(&packed, DEMO_DATA, 4, &[], &t.path().join("packed"));
    assert!(d < 1e-4, "weight-pruned: {d}");

    let narrow = t.path().join("narrow.safetensors");
    prune(
        &["--tasks", "seg,depth", "--granularity", "channel", "--onnx"],
        DEMO,
        &narrow,
    );
    let d = round_trip(&narrow, DEMO_DATA, 4, &[], &t.path().join("narrow"));
    assert!(d < 1e-4, "channel-pruned: {d}");
    // `cut prune --onnx` wrote the same file beside its output.
    assert_eq!(
        std::fs::read(t.path().join("narrow.onnx")).unwrap(),
        std::fs::read(t.path().join("narrow/model.onnx")).unwrap()
    );
    // The channel-pruned file is smaller than the dense one: widths really shrank.
    let size = |p: PathBuf| std::fs::metadata(p).unwrap().len();
    assert!(size(t.path().join("narrow/model.onnx")) < size(t.path().join("dense/model.onnx")) * 3 / 4);

    // f16 weights: half the bytes; outputs within the weights' rounding (against the interpreter
    // with the same rounded weights).
    let d = round_trip(
        Path::new(DEMO),
        DEMO_DATA,
        4,
        &["--dtype", "f16"],
        &t.path().join("half"),
    );
    assert!(d < 1e-4, "f16: {d}");
    assert!(size(t.path().join("half/model.onnx")) < size(t.path().join("dense/model.onnx")) * 6 / 10);
}

/// Opset 20 writes GELU as one node; the text model matches at opsets 17 and 20, with a dynamic
/// sequence length and a fixed one.
#[test]
fn text_model_matches_the_interpreter_in_onnx_runtime() {
    if !Path::new(TEXT_DEMO).exists() {
        panic!("{TEXT_DEMO} is missing: run scripts/setup-text-demo.sh");
    }
    let t = tempfile::tempdir().unwrap();
    let d = round_trip(Path::new(TEXT_DEMO), TEXT_DATA, 8, &[], &t.path().join("o17"));
    assert!(d < 1e-4, "opset 17: {d}");
    let d = round_trip(
        Path::new(TEXT_DEMO),
        TEXT_DATA,
        8,
        &["--opset", "20"],
        &t.path().join("o20"),
    );
    assert!(d < 1e-4, "opset 20: {d}");
    let v = check(&t.path().join("o20/model.onnx"), None);
    assert!(v["ops"].as_array().unwrap().iter().any(|o| o == "Gelu"), "{v}");
    let v17 = check(&t.path().join("o17/model.onnx"), None);
    assert!(!v17["ops"].as_array().unwrap().iter().any(|o| o == "Gelu"), "{v17}");

    // Heads and neurons pruned unevenly, one layer without heads at all.
    let narrow = t.path().join("narrow.safetensors");
    prune(
        &[
            "--tasks",
            "era,pos",
            "--granularity",
            "channel",
            "--sparsity",
            "0.6",
            "--min-heads",
            "0",
            "--round-to",
            "1",
            "--max-layer-ratio",
            "1",
        ],
        TEXT_DEMO,
        &narrow,
    );
    let d = round_trip(&narrow, TEXT_DATA, 8, &[], &t.path().join("narrow"));
    assert!(d < 1e-4, "pruned: {d}");
}

/// Heads pruned unevenly per layer on a two-layer encoder (one layer left with no heads).
#[test]
fn uneven_heads_export() {
    use cut::prune::{channels::channel_groups, structured::shrink};
    let t = tempfile::tempdir().unwrap();
    let fixture = Path::new("tests/fixtures/text/bert");
    let ckpt = Checkpoint::open(fixture).unwrap();
    let kinds = LoadOptions::from_flags(None, Some("pos:token,mood:sequence,topic:sequence-mean")).unwrap();
    let model = ckpt.model(&kinds).unwrap().model;
    let params = ckpt.load_params(&model, Device::Cpu).unwrap();
    let groups = channel_groups(&model.graph).unwrap();
    // The prunable groups are each layer's heads, then its FFN neurons.
    let mut layer = 0;
    let keep: Vec<Option<Vec<i64>>> = groups
        .iter()
        .map(|g| {
            if !g.prunable() {
                return None;
            }
            layer += 1;
            let units: Vec<usize> = match layer {
                1 => vec![1, 3],
                3 => vec![],
                _ => (0..g.units()).step_by(3).collect(),
            };
            Some(g.channels_of(&units))
        })
        .collect();
    let shrunk = shrink(&model, &params, &groups, &keep).unwrap();
    let (small, small_params) = (shrunk.model, shrunk.params);
    let path = t.path().join("uneven.safetensors");
    cut::checkpoint::writer::save_model(&path, &small, &small_params, cut::checkpoint::DType::F32, false, None)
        .unwrap();
    let data = "tests/fixtures/text/data";
    let d = round_trip(&path, data, 2, &[], &t.path().join("uneven"));
    assert!(d < 1e-4, "uneven heads: {d}");
    // A Hugging Face config cannot describe uneven layers: the folder export says so and points to
    // ONNX instead of writing a config that loads wrong.
    let out = cut()
        .args(["export", "--format", "hf-folder"])
        .arg(&path)
        .arg("-o")
        .arg(t.path().join("hf"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("differ in attention heads") && e.contains("--format onnx"),
        "{e}"
    );
    assert!(!t.path().join("hf").exists());
}

/// Weights above the threshold go to OUT.data, which ONNX Runtime reads; `--tasks` exports a
/// subset of outputs.
#[test]
fn external_data_and_task_subsets() {
    let t = tempfile::tempdir().unwrap();
    let ckpt = Checkpoint::open(DEMO).unwrap();
    let model = ckpt
        .model(&LoadOptions::default())
        .unwrap()
        .model
        .keep_tasks(&["depth"]);
    let params = ckpt.load_params(&model, Device::Cpu).unwrap();
    let opts = cut::onnx::ExportOptions {
        external_threshold: 0,
        ..Default::default()
    };
    let out = t.path().join("big.onnx");
    let mut outputs = cut::fsio::Outputs::new(false);
    cut::onnx::stage(&model, &params, &opts, &out, &[Path::new(DEMO)], false, &mut outputs).unwrap();
    outputs.commit().unwrap();
    assert!(t.path().join("big.onnx.data").exists());
    assert!(std::fs::metadata(&out).unwrap().len() < 100_000);
    let v = check(&out, None);
    assert_eq!(v["opset"], 17);

    let subset = t.path().join("depth.onnx");
    export(Path::new(DEMO), &subset, &["--tasks", "depth", "--batch", "2"]);
    let v = check(&subset, None);
    assert!(v["outputs"].as_object().unwrap().is_empty());
    let names = std::process::Command::new("python3")
        .env("PYTHONPATH", ".onnx-env")
        .args([
            "-c",
            "import sys, onnx; m = onnx.load(sys.argv[1]); print([o.name for o in m.graph.output], m.graph.input[0].type.tensor_type.shape.dim[0].dim_value)",
        ])
        .arg(&subset)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&names.stdout).trim(), "['depth'] 2");
}

/// Bad requests: one line naming the problem, a failing exit code, nothing written.
#[test]
fn bad_exports_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("m.onnx");
    let err = |args: &[&str]| {
        let o = cut()
            .arg("export")
            .arg(DEMO)
            .arg("-o")
            .arg(&out)
            .args(args)
            .output()
            .unwrap();
        assert!(!o.status.success());
        let e = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        e
    };
    assert!(err(&["--opset", "12"]).contains("--opset 12 is not one cut writes"));
    assert!(err(&["--tasks", "nope"]).contains("nope"));
    assert!(!out.exists());
    std::fs::write(&out, b"keep").unwrap();
    assert!(err(&[]).contains("--force"));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    let unwritable = t.path().join("missing-folder/m.onnx");
    let o = cut()
        .arg("export")
        .arg(DEMO)
        .arg("-o")
        .arg(&unwritable)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing-folder"));
    // An opset too old for an op names the node.
    let text_out = t.path().join("t.onnx");
    let o = cut()
        .args([
            "export",
            "tests/fixtures/text/bert",
            "--task-kinds",
            "pos:token,mood:sequence,topic:sequence-mean",
        ])
        .args(["--opset", "16", "-o"])
        .arg(&text_out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("LayerNormalization needs opset 17"), "{e}");
    assert!(!text_out.exists());
}

/// Fixed sizes: a text model exported for batch 8 at the data's padded length matches the
/// interpreter; an image model exported at another input size declares and runs it.
#[test]
fn fixed_sizes() {
    if !Path::new(TEXT_DEMO).exists() {
        panic!("{TEXT_DEMO} is missing: run scripts/setup-text-demo.sh");
    }
    let t = tempfile::tempdir().unwrap();
    let probe = t.path().join("probe");
    reference(Path::new(TEXT_DEMO), TEXT_DATA, 8, false, &probe);
    let ids = ndarray_npy::read_npy::<_, ndarray::ArrayD<i64>>(probe.join("input_ids.npy")).unwrap();
    let len = ids.shape()[1].to_string();
    let d = round_trip(
        Path::new(TEXT_DEMO),
        TEXT_DATA,
        8,
        &["--batch", "8", "--seq-len", &len],
        &t.path().join("fixed"),
    );
    assert!(d < 1e-4, "fixed sizes: {d}");
    let dims = |path: &Path| {
        let out = std::process::Command::new("python3")
            .env("PYTHONPATH", ".onnx-env")
            .args([
                "-c",
                "import sys, onnx; m = onnx.load(sys.argv[1]); print([[d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in m.graph.input])",
            ])
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        dims(&t.path().join("fixed/model.onnx")),
        format!("[[8, {len}], [8, {len}]]")
    );
    let small = t.path().join("small.onnx");
    export(Path::new(DEMO), &small, &["--size", "64x96"]);
    assert_eq!(dims(&small), "[['batch', 3, 64, 96]]");
    check(&small, None);
}

/// A split's two parts, pooled so that the seam's ops are in them (token pooling, mask pooling and
/// unpooling; 2x2 pooling and the resize back), in ONNX Runtime against the interpreter: the device
/// part on real test inputs, the cloud part on what the device part outputs.
#[test]
fn split_parts_match_the_interpreter_in_onnx_runtime() {
    let t = tempfile::tempdir().unwrap();
    for (model, data, tasks, at) in [
        (DEMO, DEMO_DATA, "seg,depth", "backbone.blocks.2.1.relu2"),
        (
            TEXT_DEMO,
            TEXT_DATA,
            "era,pos",
            "encoder.layer.0.attention.output.LayerNorm",
        ),
    ] {
        let dir = t.path().join(Path::new(model).file_stem().unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = dir.join("split");
        cut()
            .args(["split", model, "--tasks", tasks, "--data", data, "--at", at])
            .args(["--pool", "2", "--wire", "f32", "--finetune-steps", "0", "--runs", "1"])
            .arg("-o")
            .arg(&prefix)
            .assert()
            .success();
        let device = dir.join("split.device.safetensors");
        let worst = round_trip(&device, data, 4, &[], &dir.join("device"));
        assert!(worst <= 1e-4, "{model} device part: {worst:.2e}");
        // The cloud part's inputs: the device part's features (from the interpreter) and the mask.
        let cloud = dir.join("split.cloud.safetensors");
        let cloud_dir = dir.join("cloud");
        std::fs::create_dir_all(cloud_dir.join("expected")).unwrap();
        let features = tch::Tensor::read_npy(dir.join("device/expected/features.npy")).unwrap();
        let ckpt = Checkpoint::open(&cloud).unwrap();
        let m = ckpt.model(&LoadOptions::default()).unwrap().model;
        let params = ckpt.load_params(&m, Device::Cpu).unwrap();
        let mut inputs = std::collections::BTreeMap::from([("features".to_string(), features)]);
        for decl in m.graph.inputs.iter().skip(1) {
            let v = tch::Tensor::read_npy(dir.join("device").join(format!("{}.npy", decl.name))).unwrap();
            inputs.insert(decl.name.clone(), v);
        }
        let names: Vec<&str> = m.tasks.iter().map(|t| t.name.as_str()).collect();
        let outputs = tch::no_grad(|| forward_inputs(&m.graph, &params, &inputs, &names, Mode::Eval).unwrap());
        for (name, v) in &inputs {
            write_npy(&cloud_dir.join(format!("{name}.npy")), v);
        }
        for (name, v) in &outputs {
            write_npy(&cloud_dir.join("expected").join(format!("{name}.npy")), v);
        }
        let onnx = cloud_dir.join("model.onnx");
        export(&cloud, &onnx, &[]);
        let verdict = check(&onnx, Some(&cloud_dir));
        for name in &names {
            let o = &verdict["outputs"][name];
            let (Some(diff), Some(scale)) = (o["diff"].as_f64(), o["scale"].as_f64()) else {
                panic!("{model} cloud {name}: {verdict}")
            };
            assert!(
                diff / scale.max(1.0) <= 1e-4,
                "{model} cloud {name}: {diff:.2e} of {scale}"
            );
        }
    }
}
