//! `cut split`: the device part then the cloud part equals the whole model; payload bytes are the
//! serialised tensor's; the checkpoints it writes are ordinary; bad input is refused in one line.

use assert_cmd::Command;
use cut::checkpoint::{Checkpoint, LoadOptions};
use cut::data::loader::Loader;
use cut::graph::interpreter::{forward_inputs, Mode};
use cut::graph::ops::{ScaleGranularity, Wire, WireFormat};
use cut::graph::{Model, Params};
use cut::split::{cut_after, cuts, joined, payload, separate, Compression, FEATURES};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

const DEMO: &str = "assets/demo.safetensors";
const DEMO_DATA: &str = "assets/demo-data";
const TEXT_DEMO: &str = "assets/text-demo.safetensors";
const TEXT_DATA: &str = "assets/text-data";

fn load(path: &str, tasks: &[&str]) -> (Model, Params) {
    let ckpt = Checkpoint::open(path).unwrap();
    let full = ckpt.model(&LoadOptions::default()).unwrap().model;
    let model = full.keep_tasks(tasks);
    let params = ckpt.load_params(&model, Device::Cpu).unwrap();
    (model, params)
}

fn test_batch(model: &Model, data: &str, count: usize) -> BTreeMap<String, Tensor> {
    let (dataset, _) = cut::data::open_for(model, Path::new(data), None, Some(128)).unwrap();
    let test = dataset.split(cut::data::Split::Test, 0.1).unwrap();
    let batch = Loader::sequential(test, count, Device::Cpu).next().unwrap().unwrap();
    batch.graph_inputs(&model.graph).unwrap()
}

fn run(model: &Model, params: &Params, inputs: &BTreeMap<String, Tensor>) -> BTreeMap<String, Tensor> {
    let tasks = model.task_names();
    tch::no_grad(|| forward_inputs(&model.graph, params, inputs, &tasks, Mode::Eval).unwrap())
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// Device part, then cloud part on what it sends.
fn through_parts(
    model: &Model,
    params: &Params,
    at: &str,
    c: &Compression,
    inputs: &BTreeMap<String, Tensor>,
) -> BTreeMap<String, Tensor> {
    let cut = cut_after(model, at).unwrap();
    let parts = separate(&joined(model, &cut, c).unwrap(), params).unwrap();
    let features = parts.features(inputs).unwrap();
    let mut cloud_inputs = BTreeMap::from([(FEATURES.to_string(), features)]);
    for d in parts.cloud.graph.inputs.iter().skip(1) {
        cloud_inputs.insert(d.name.clone(), inputs[&d.name].shallow_clone());
    }
    run(&parts.cloud, &parts.cloud_params, &cloud_inputs)
}

/// Every non-empty combination of a model's tasks, in task order.
fn task_combinations(path: &str) -> Vec<Vec<String>> {
    let ckpt = Checkpoint::open(path).unwrap();
    let model = ckpt.model(&LoadOptions::default()).unwrap().model;
    let names = model.task_names();
    (1..1usize << names.len())
        .map(|bits| {
            names
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, n)| n.to_string())
                .collect()
        })
        .collect()
}

/// With no compression and f32 on the wire, the two parts give the whole model's outputs (within
/// 1e-5) at every cut of the image demo and of the text demo (padded batches included), for every
/// combination of their tasks (a token task beside a pooled sequence task once offered cuts after
/// the pooler, where the token task's output would have stayed on the device).
#[test]
fn device_then_cloud_equals_the_whole_model() {
    for (path, data) in [(DEMO, DEMO_DATA), (TEXT_DEMO, TEXT_DATA)] {
        let combinations = task_combinations(path);
        assert_eq!(combinations.len(), 7, "{path}: three tasks");
        for tasks in &combinations {
            let tasks: Vec<&str> = tasks.iter().map(String::as_str).collect();
            let (model, params) = load(path, &tasks);
            let inputs = test_batch(&model, data, 4);
            let whole = run(&model, &params, &inputs);
            let all = cuts(&model).unwrap();
            assert!(all.len() >= 4, "{path} {tasks:?}: {} cuts", all.len());
            for cut in &all {
                let split = through_parts(&model, &params, &cut.after, &Compression::NONE, &inputs);
                for t in &tasks {
                    let d = max_diff(&whole[*t], &split[*t]);
                    assert!(d <= 1e-5, "{path} {tasks:?} at {}: {t} differs by {d}", cut.after);
                }
            }
        }
    }
}

/// Through the serialised payload (pooled x2, int8 per channel), the cloud part computes exactly
/// what the joined graph that `cut split` evaluates and fine-tunes computes.
#[test]
fn the_payload_carries_what_the_evaluated_graph_sees() {
    let c = Compression {
        pool: 2,
        wire: WireFormat::Int8,
        scale: ScaleGranularity::Channel,
    };
    for (path, data, tasks, at) in [
        (DEMO, DEMO_DATA, vec!["seg", "depth"], "backbone.blocks.2.1.relu2"),
        (
            TEXT_DEMO,
            TEXT_DATA,
            vec!["era", "pos"],
            "encoder.layer.0.attention.output.LayerNorm",
        ),
    ] {
        let (model, params) = load(path, &tasks);
        let cut = cut_after(&model, at).unwrap();
        let split = joined(&model, &cut, &c).unwrap();
        let parts = separate(&split, &params).unwrap();
        let mut inputs = test_batch(&model, data, 1);
        if let Some(mask) = inputs.get(cut::families::bert::MASK) {
            // Batch 1 without padding, as a device sends it.
            let n = mask.sum(Kind::Int64).int64_value(&[]);
            inputs = inputs.into_iter().map(|(k, t)| (k, t.narrow(1, 0, n))).collect();
        }
        let expected = run(&split, &params, &inputs);
        let features = parts.features(&inputs).unwrap();
        let tokens = inputs.get(cut::families::bert::MASK).map(|m| m.size()[1] as usize);
        let bytes = payload::encode(&features, c.wire, c.scale, tokens).unwrap();
        let (received, count) = payload::decode(&bytes, &features.size(), c.wire, c.scale, tokens.is_some()).unwrap();
        assert_eq!(count, tokens);
        let mut cloud_inputs = BTreeMap::from([(FEATURES.to_string(), received)]);
        for d in parts.cloud.graph.inputs.iter().skip(1) {
            cloud_inputs.insert(
                d.name.clone(),
                Tensor::ones([1, tokens.unwrap() as i64], (Kind::Int64, Device::Cpu)),
            );
        }
        let got = run(&parts.cloud, &parts.cloud_params, &cloud_inputs);
        for t in &tasks {
            assert_eq!(max_diff(&expected[*t], &got[*t]), 0.0, "{path}: {t}");
        }
    }
}

/// Payload sizes by hand, decode(encode(x)) equal to the wire op's rounding, and token pooling by 2
/// halving the bytes of an even-length sequence.
#[test]
fn payload_bytes_by_hand() {
    tch::manual_seed(3);
    let x = Tensor::randn([1, 6, 4], (Kind::Float, Device::Cpu));
    let cases = [
        (WireFormat::F32, ScaleGranularity::Tensor, 6 * 4 * 4),
        (WireFormat::F16, ScaleGranularity::Tensor, 6 * 4 * 2),
        (WireFormat::Int8, ScaleGranularity::Tensor, 6 * 4 + 4),
        (WireFormat::Int8, ScaleGranularity::Channel, 6 * 4 + 4 * 4),
    ];
    for (wire, scale, body) in cases {
        let bytes = payload::encode(&x, wire, scale, Some(6)).unwrap();
        assert_eq!(bytes.len(), body + 2, "{wire:?} {scale:?}");
        let (back, tokens) = payload::decode(&bytes, &x.size(), wire, scale, true).unwrap();
        assert_eq!(tokens, Some(6));
        let op = Wire { format: wire, scale };
        assert_eq!(max_diff(&back, &op.received(&x)), 0.0, "{wire:?} {scale:?}");
    }
    // Token pooling by 2 through the op: half the tokens, half the feature bytes.
    let pool = cut::graph::ops::TokenPool { factor: 2 };
    let mask = Tensor::ones([1, 6], (Kind::Int64, Device::Cpu));
    let pooled = cut::graph::ops::eval_alone(&pool, &[&x, &mask]).unwrap();
    for wire in [WireFormat::F32, WireFormat::F16] {
        let full = payload::encode(&x, wire, ScaleGranularity::Tensor, None).unwrap().len();
        let half = payload::encode(&pooled, wire, ScaleGranularity::Tensor, None)
            .unwrap()
            .len();
        assert_eq!(2 * half, full);
    }
    // A map pooled 2x2: a quarter.
    let map = Tensor::randn([1, 3, 4, 6], (Kind::Float, Device::Cpu));
    let pooled = map.avg_pool2d([2, 2], [2, 2], [0, 0], true, false, None::<i64>);
    let full = payload::encode(&map, WireFormat::F32, ScaleGranularity::Tensor, None)
        .unwrap()
        .len();
    let quarter = payload::encode(&pooled, WireFormat::F32, ScaleGranularity::Tensor, None)
        .unwrap()
        .len();
    assert_eq!(4 * quarter, full);
}

fn cut_cmd() -> Command {
    Command::cargo_bin("cut").unwrap()
}

/// `cut split` on the image demo: two checkpoints that inspect, bench and export read, a report
/// whose byte counts are the payload's, with the baselines, and what was asked is what was written.
#[test]
fn split_command_writes_ordinary_checkpoints_and_a_report() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("demo");
    let at = "backbone.blocks.3.1.relu2";
    cut_cmd()
        .args(["split", DEMO, "--tasks", "seg,depth", "--data", DEMO_DATA, "--at", at])
        .args([
            "--pool",
            "2",
            "--wire",
            "int8",
            "--finetune-steps",
            "4",
            "--val-every",
            "2",
            "--runs",
            "2",
        ])
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path().join("demo.report.json")).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    // The uncompressed split beside the one asked for, which is the one written.
    assert_eq!(rows.len(), 2);
    assert_eq!(report["chosen"], 1);
    let shape: Vec<u64> = rows[0]["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(shape.len(), 3);
    let (c, h, w) = (shape[0], shape[1], shape[2]);
    assert_eq!(rows[0]["bytes_sent"][0], 4 * c * h * w, "f32, no pooling");
    assert_eq!(
        rows[1]["bytes_sent"][0],
        c * h.div_ceil(2) * w.div_ceil(2) + 4,
        "int8 pooled, one scale"
    );
    assert!(rows[1]["finetune_best_step"].is_u64());
    assert!(report["baselines"]["cloud_only_bytes"][0].as_u64().unwrap() > 1000);
    for part in ["demo.device.safetensors", "demo.cloud.safetensors"] {
        let p = t.path().join(part);
        cut_cmd().arg("inspect").arg(&p).assert().success();
        cut_cmd().arg("bench").arg(&p).args(["--runs", "2"]).assert().success();
        cut_cmd()
            .arg("export")
            .arg(&p)
            .arg("-o")
            .arg(t.path().join(format!("{part}.onnx")))
            .assert()
            .success();
    }
    assert!(std::fs::read_to_string(t.path().join("demo.report.md"))
        .unwrap()
        .contains("cloud only"));
}

/// Bad input: one line naming what is wrong, a non-zero exit, nothing written.
#[test]
fn bad_input_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("x");
    let fail = |model: &str, data: &str, tasks: &str, extra: &[&str]| -> String {
        let o = cut_cmd()
            .args([
                "split",
                model,
                "--tasks",
                tasks,
                "--data",
                data,
                "--finetune-steps",
                "0",
            ])
            .args(extra)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{extra:?} succeeded");
        let e = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        assert_eq!(
            std::fs::read_dir(t.path()).unwrap().count(),
            0,
            "{extra:?} wrote something"
        );
        e
    };
    let e = fail(DEMO, DEMO_DATA, "seg,depth", &["--at", "no.such.node"]);
    assert!(e.contains("no.such.node") && e.contains("valid cuts"), "{e}");
    // Inside a residual block the skip and the branch both cross.
    let e = fail(DEMO, DEMO_DATA, "seg,depth", &["--at", "backbone.blocks.1.0.bn1"]);
    assert!(
        e.contains("2 tensors cross") && e.contains("backbone.blocks.1.0.bn1"),
        "{e}"
    );
    // After the sequence is pooled to one vector, there is no axis to pool.
    let e = fail(TEXT_DEMO, TEXT_DATA, "era", &["--at", "pool.first", "--pool", "2"]);
    assert!(e.contains("no sequence or spatial axis"), "{e}");
    let e = fail(DEMO, DEMO_DATA, "seg", &["--rate", "0"]);
    assert!(e.contains("--rate 0"), "{e}");
    // The first spelling still parses.
    let e = fail(DEMO, DEMO_DATA, "seg", &["--bandwidth", "-3"]);
    assert!(e.contains("above 0"), "{e}");
    // Values that made the report say "within NaN points", or ran on with no batch.
    for (flag, value, want) in [
        ("--max-drop", "NaN", "--max-drop NaN: the points a task may lose"),
        ("--max-drop", "-5", "--max-drop -5: the points a task may lose"),
        ("--batch", "0", "--batch must be at least 1"),
    ] {
        let e = fail(DEMO, DEMO_DATA, "seg", &[flag, value]);
        assert!(e.contains(want), "{e} / {want}");
    }
}

/// `-o DIR/` (or an existing folder) writes inside it, named after the model; before, a trailing
/// slash wrote `DIR.device.safetensors` beside the folder.
#[test]
fn an_output_folder_means_inside_it() {
    let t = tempfile::tempdir().unwrap();
    let inside = t.path().join("parts");
    std::fs::create_dir(&inside).unwrap();
    for (out, force) in [
        (format!("{}/", inside.display()), false),
        (inside.display().to_string(), true),
    ] {
        cut_cmd()
            .args(["split", DEMO, "--tasks", "seg", "--data", DEMO_DATA])
            .args([
                "--at",
                "backbone.blocks.3.1.relu2",
                "--finetune-steps",
                "0",
                "--runs",
                "1",
            ])
            .args(["-o", &out])
            .args(force.then_some("--force"))
            .assert()
            .success();
        let mut names: Vec<String> = std::fs::read_dir(&inside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "demo.cloud.safetensors",
                "demo.device.safetensors",
                "demo.report.json",
                "demo.report.md"
            ]
        );
        assert_eq!(
            std::fs::read_dir(t.path()).unwrap().count(),
            1,
            "nothing beside the folder"
        );
    }
}

/// The same split, seed and data give the same checkpoints, byte for byte.
#[test]
fn the_same_run_writes_the_same_bytes() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("det");
    let mut seen = Vec::new();
    for _ in 0..2 {
        cut_cmd()
            .args(["split", TEXT_DEMO, "--tasks", "era,pos", "--data", TEXT_DATA])
            .args([
                "--at",
                "encoder.layer.0.attention.output.LayerNorm",
                "--finetune-steps",
                "6",
            ])
            .args(["--val-every", "2", "--runs", "1", "--force"])
            .arg("-o")
            .arg(&out)
            .assert()
            .success();
        let read = |part: &str| std::fs::read(t.path().join(part)).unwrap();
        seen.push((read("det.device.safetensors"), read("det.cloud.safetensors")));
    }
    assert!(seen[0] == seen[1], "two runs wrote different checkpoints");
}
