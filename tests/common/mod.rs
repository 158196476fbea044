//! Helpers shared by the integration tests: small models and hand-made safetensors files.
#![allow(dead_code)]

use cut::checkpoint::metadata::Provenance;
use cut::checkpoint::DType;
use cut::checkpoint::{format, writer};
use cut::families::scenenet::SceneNetConfig;
use cut::graph::interpreter::Params;
use cut::graph::{Model, TaskSpec};
use std::path::{Path, PathBuf};

pub fn tasks3() -> Vec<TaskSpec> {
    cut::families::scenenet::scene_tasks(5)
}

/// A SceneNet that runs in milliseconds: one block per stage, narrow widths.
pub fn small_config() -> SceneNetConfig {
    let mut c = SceneNetConfig::reference(tasks3());
    c.blocks = vec![1, 1, 1, 1];
    c.widths = vec![8, 8, 16, 16];
    c.stem_width = 8;
    c.head_width = 16;
    c
}

pub fn small_model() -> (Model, Params) {
    let model = small_config().build().unwrap();
    let params = cut::graph::init::init_params(&model.graph, 7, tch::Device::Cpu);
    (model, params)
}

pub fn write_small(dir: &Path, name: &str, dtype: DType) -> PathBuf {
    let (model, params) = small_model();
    let path = dir.join(name);
    writer::save_model(
        &path,
        &model,
        &params,
        dtype,
        false,
        Some(&Provenance::new("test", None)),
    )
    .unwrap();
    path
}

/// A safetensors file from a literal header and data, for malformed-input tests.
pub fn raw_file(dir: &Path, name: &str, header: &str, data_len: usize) -> PathBuf {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, data_len));
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Writes the small model's tensors with no metadata, as a converted reference state dict would be.
pub fn write_bare(dir: &Path, name: &str) -> PathBuf {
    let (model, params) = small_model();
    let mut tensors: Vec<format::TensorBytes> = model
        .graph
        .param_specs()
        .iter()
        .map(|s| {
            let dt = if s.role == cut::graph::ParamRole::BnBatchesTracked {
                DType::I64
            } else {
                DType::F32
            };
            format::TensorBytes::from_tensor(&s.name, &params[&s.name], dt).unwrap()
        })
        .collect();
    let bytes = format::serialize(&mut tensors, &Default::default()).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The element of a JSON array whose `key` is `value` (reports list groups and tasks by name; a
/// test that reads them by position passes or fails with the order, not the content).
pub fn find<'a>(array: &'a serde_json::Value, key: &str, value: &str) -> &'a serde_json::Value {
    array
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {array}"))
        .iter()
        .find(|e| e[key] == value)
        .unwrap_or_else(|| panic!("no element with {key} = {value} in {array}"))
}

/// A metric's value from a list of task metrics (`cut eval`'s `tasks`, a prune report's
/// `accuracy.before` / `after`).
/// The seg and depth fidelity figures of a prune report and of `cut eval --reference` agree
/// within `tolerance`.
pub fn same_seg_depth_fidelity(reported: &serde_json::Value, measured: &serde_json::Value, tolerance: f64) {
    for (task, name) in [
        ("seg", "agreement"),
        ("seg", "kl"),
        ("depth", "relative_l2"),
        ("depth", "cosine"),
    ] {
        let (r, m) = (metric(reported, task, name), metric(measured, task, name));
        assert!((r - m).abs() < tolerance, "{task} {name}: {r} vs {m}");
    }
}

pub fn metric(tasks: &serde_json::Value, task: &str, name: &str) -> f64 {
    find(&find(tasks, "task", task)["metrics"], "name", name)["value"]
        .as_f64()
        .unwrap()
}

/// `cut new` shape flags for a SceneNet small enough to build and run in milliseconds (give
/// `--tasks` beside them).
pub const TINY_SCENENET: [&str; 8] = [
    "--blocks",
    "1,1,1,1",
    "--widths",
    "8,8,8,8",
    "--stem-width",
    "8",
    "--head-width",
    "8",
];

/// Rewrites one metadata field of a safetensors file in place (the data stays as it is).
pub fn patch_metadata(path: &Path, key: &str, edit: impl Fn(&str) -> String) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let field = header["__metadata__"][key].as_str().unwrap().to_string();
    header["__metadata__"][key] = serde_json::Value::String(edit(&field));
    let mut text = serde_json::to_string(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}
