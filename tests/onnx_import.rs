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
            let image = &refs[&format!("image.b{batch}")];
            let inputs = BTreeMap::from([("image".to_string(), image.shallow_clone())]);
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
