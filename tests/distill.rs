//! Labels optional: unlabelled data readers, the teacher's outputs on every batch, and `cut prune`
//! distilling its tasks from the model itself.

mod common;

use assert_cmd::Command;
use cut::checkpoint::DType;
use cut::data::loader::Loader;
use cut::data::Split;
use cut::graph::interpreter::forward_inputs;
use cut::graph::ops::Mode;
use ndarray_npy::NpzWriter;
use std::path::{Path, PathBuf};
use tch::Device;

fn cut() -> Command {
    Command::cargo_bin("cut").unwrap()
}

/// The synthetic dataset's training images, copied flat into `dir/name` (no labels beside them).
fn image_folder(dir: &Path, name: &str, scenes: usize) -> PathBuf {
    let data = dir.join("labelled");
    if !data.exists() {
        cut::data::synth::write_dataset(
            &data,
            &cut::data::synth::SynthConfig {
                train: scenes,
                test: 3,
                height: 32,
                width: 32,
                seed: 5,
            },
            2,
        )
        .unwrap();
    }
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    for entry in std::fs::read_dir(data.join("train/img")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, folder.join(path.file_name().unwrap())).unwrap();
    }
    folder
}

fn npz(path: &Path, arrays: &[(&str, ndarray::ArrayD<f32>)]) {
    let mut w = NpzWriter::new(std::fs::File::create(path).unwrap());
    for (name, a) in arrays {
        w.add_array(*name, a).unwrap();
    }
    w.finish().unwrap();
}

/// A folder of images holds a fifth back as its test split; every image is resized to the
/// model's input (or to --resize), normalised as the model records.
#[test]
fn image_folders_split_resize_and_normalise() {
    let t = tempfile::tempdir().unwrap();
    let (model, _) = common::small_model();
    let folder = image_folder(t.path(), "imgs", 10);
    let (data, warnings) = cut::data::open_with(&model, &folder, None, None, None).unwrap();
    assert!(
        warnings.is_empty(),
        "the SceneNet family records its normalisation: {warnings:?}"
    );
    assert!(!data.labelled());
    assert_eq!((data.train.count(), data.test.count()), (8, 2));
    let first = data.train.load(0).unwrap();
    let [_, h, w] = model.graph.image_input().unwrap();
    assert_eq!(first.inputs[0].shape, [3, h as i64, w as i64]);
    assert!(first.labels.is_empty());
    // The same pixels as `cut predict` reads them.
    let norm = model.graph.image_normalisation().unwrap().clone();
    let path = PathBuf::from(data.train.describe(0));
    let want = cut::data::images::image_batch(&[&path], h, w, &norm).unwrap();
    let got = cut::data::arrays::field_of("x", &want.squeeze_dim(0)).unwrap();
    assert_eq!(got.values, first.inputs[0].values);

    let (resized, _) = cut::data::open_with(&model, &folder, None, None, Some([16, 24])).unwrap();
    assert_eq!(resized.test.load(0).unwrap().inputs[0].shape, [3, 16, 24]);
    // train/ and test/ subfolders are the splits as given.
    let split = t.path().join("split");
    std::fs::create_dir_all(&split).unwrap();
    std::fs::rename(image_folder(t.path(), "a", 10), split.join("train")).unwrap();
    std::fs::rename(image_folder(t.path(), "b", 10), split.join("test")).unwrap();
    let (given, _) = cut::data::open_with(&model, &split, None, None, None).unwrap();
    assert_eq!((given.train.count(), given.test.count()), (10, 10));
}

/// Arrays: one file per example (with or without a leading axis of one), or one `.npz` of rows;
/// a missing or misshapen array is an error naming the file and the array.
#[test]
fn array_files_and_rows() {
    let t = tempfile::tempdir().unwrap();
    let (model, _) = common::small_model();
    let input = model.graph.inputs[0].name.clone();
    let [c, h, w] = model.graph.image_input().unwrap();
    let example = |k: usize, lead: bool| {
        let shape: Vec<usize> = if lead { vec![1, c, h, w] } else { vec![c, h, w] };
        let last = shape.len() - 1;
        ndarray::ArrayD::from_shape_fn(shape, |i| (k * 1000 + i[last]) as f32)
    };
    let files = t.path().join("arrays");
    std::fs::create_dir_all(&files).unwrap();
    for k in 0..5 {
        npz(&files.join(format!("{k}.npz")), &[(&input, example(k, k % 2 == 0))]);
    }
    let (data, _) = cut::data::open_with(&model, &files, None, None, None).unwrap();
    assert_eq!((data.train.count(), data.test.count()), (4, 1));
    let loaded = data.train.load(0).unwrap();
    assert_eq!(loaded.inputs[0].shape, [c as i64, h as i64, w as i64]);

    let rows = t.path().join("rows.npz");
    let all = ndarray::ArrayD::from_shape_fn(vec![6, c, h, w], |i| (i[0] * 1000 + i[3]) as f32);
    npz(&rows, &[(&input, all)]);
    let (data, _) = cut::data::open_with(&model, &rows, None, None, None).unwrap();
    assert_eq!(data.train.count() + data.test.count(), 6);
    let row = data.test.load(0).unwrap();
    let cut::data::example::Values::F32(v) = &row.inputs[0].values else {
        panic!("f32 expected")
    };
    // Row r holds r * 1000 + its column.
    let r = (v[1] - 1.0) / 1000.0;
    assert!(r.fract() == 0.0 && v[..3] == [r * 1000.0, r * 1000.0 + 1.0, r * 1000.0 + 2.0]);

    let wrong = t.path().join("wrong.npz");
    npz(&wrong, &[("other", ndarray::ArrayD::zeros(vec![3, c, h, w]))]);
    let err = format!(
        "{:#}",
        cut::data::open_with(&model, &wrong, None, None, None).unwrap_err()
    );
    assert!(
        err.contains("wrong.npz") && err.contains(&format!("no array '{input}'")),
        "{err}"
    );
    npz(&files.join("5.npz"), &[(&input, ndarray::ArrayD::zeros(vec![c, h]))]);
    let (data, _) = cut::data::open_with(&model, &files, None, None, None).unwrap();
    let errors: Vec<String> = (0..data.train.count())
        .filter_map(|i| data.train.load(i).err().map(|e| format!("{e:#}")))
        .chain((0..data.test.count()).filter_map(|i| data.test.load(i).err().map(|e| format!("{e:#}"))))
        .collect();
    assert!(
        errors.len() == 1 && errors[0].contains("5.npz") && errors[0].contains(&format!("array '{input}'")),
        "{errors:?}"
    );
    let empty = t.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = format!(
        "{:#}",
        cut::data::open_with(&model, &empty, None, None, None).unwrap_err()
    );
    assert!(err.contains("empty") && err.contains("folder of images"), "{err}");
}

/// Every batch of a taught split carries the teacher's output for each distilled task: the
/// model's own output on that batch.
#[test]
fn batches_carry_the_teachers_outputs() {
    let t = tempfile::tempdir().unwrap();
    let (model, params) = common::small_model();
    let folder = image_folder(t.path(), "imgs", 6);
    let (data, _) = cut::data::open_with(&model, &folder, None, None, None).unwrap();
    let tasks = cut::tasks::distill::mark(
        &model.select_tasks(&["seg".into(), "depth".into()]).unwrap(),
        false,
        false,
    );
    assert!(tasks.iter().all(|t| t.distill));
    let taught = cut::data::teacher::for_tasks(&data, &model, &params, &tasks, Device::Cpu);
    let batch = Loader::sequential(taught.split(Split::Train, 0.2).unwrap(), 3, Device::Cpu)
        .next()
        .unwrap()
        .unwrap();
    let inputs = batch.graph_inputs(&model.graph).unwrap();
    let want = forward_inputs(&model.graph, &params, &inputs, &["seg", "depth"], Mode::Eval).unwrap();
    for task in ["seg", "depth"] {
        let got = batch.label(&cut::data::teacher::teacher_label(task)).unwrap();
        let diff = (got - &want[task]).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{task}: {diff}");
    }
    // At the teacher every distillation loss is zero.
    for task in &tasks {
        let loss = cut::train::loss::task_loss(task, &want[&task.name], &batch).unwrap();
        assert!(loss.double_value(&[]).abs() < 1e-6, "{}", task.name);
    }
}

fn prune_on(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let o = cut()
        .arg("prune")
        .arg(model)
        .args(["--tasks", "seg,depth", "--calib-batches", "2", "--batch", "4"])
        .args([
            "--finetune-steps",
            "4",
            "--val-every",
            "2",
            "--lr",
            "1e-3",
            "--json",
            "--force",
        ])
        .args(extra)
        .arg("--data")
        .arg(data)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `cut prune` on a folder of images distils both tasks: scores, fine-tunes and measures them
/// against the input model on the held-back images, reproducibly, and `cut eval --reference`
/// measures the same on the written file.
#[test]
fn prune_distils_from_unlabelled_images() {
    let t = tempfile::tempdir().unwrap();
    let model = common::write_small(t.path(), "m.safetensors", DType::F32);
    let folder = image_folder(t.path(), "imgs", 15);
    let out = t.path().join("p.safetensors");
    let args = [
        "--granularity",
        "channel",
        "--sparsity",
        "0.5",
        "--min-channels",
        "2",
        "--round-to",
        "1",
    ];
    let report = prune_on(&model, &folder, &out, &args);
    assert_eq!(report["settings"]["distilled"], serde_json::json!(["seg", "depth"]));
    let accuracy = &report["accuracy"];
    assert_eq!(common::metric(&accuracy["before"], "seg", "agreement"), 1.0);
    assert_eq!(common::metric(&accuracy["before"], "depth", "relative_l2"), 0.0);
    let after_kl = common::metric(&accuracy["after"], "seg", "kl");
    assert!(after_kl > 0.0 && after_kl.is_finite(), "{after_kl}");
    let first = std::fs::read(&out).unwrap();
    prune_on(&model, &folder, &out, &args);
    assert!(
        first == std::fs::read(&out).unwrap(),
        "same inputs and seed, different bytes"
    );

    let o = cut()
        .arg("eval")
        .arg(&out)
        .arg("--data")
        .arg(&folder)
        .arg("--reference")
        .arg(&model)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let eval: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(eval["tasks"], serde_json::json!([]));
    common::same_seg_depth_fidelity(&accuracy["fidelity"], &eval["fidelity"], 1e-9);
    // Without a reference there is nothing to measure unlabelled data against.
    let o = cut().arg("eval").arg(&out).arg("--data").arg(&folder).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("has no labels") && err.contains("--reference"), "{err}");
}

/// `--distill` on labelled data trains by distillation and still measures the labels.
#[test]
fn distill_on_labelled_data_keeps_labelled_metrics() {
    let t = tempfile::tempdir().unwrap();
    let model = common::write_small(t.path(), "m.safetensors", DType::F32);
    image_folder(t.path(), "imgs", 12);
    let report = prune_on(
        &model,
        &t.path().join("labelled"),
        &t.path().join("p.safetensors"),
        &["--distill"],
    );
    assert_eq!(report["settings"]["distilled"], serde_json::json!(["seg", "depth"]));
    let miou = common::metric(&report["accuracy"]["after"], "seg", "miou");
    assert!((0.0..=1.0).contains(&miou), "{miou}");
    // The losses are the distillation's, each weighing 1 (depth's labelled L1 weighs 3).
    assert_eq!(
        report["settings"]["lambdas"],
        serde_json::json!({"seg": 1.0, "depth": 1.0})
    );
    // Without data there is nothing to distil on.
    let o = cut()
        .arg("prune")
        .arg(&model)
        .args(["--tasks", "seg", "--distill", "--finetune-steps", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--distill") && err.contains("--data"), "{err}");
}

/// Text without labels: one `.jsonl` of texts holds a fifth back; the same lines with labels
/// are labelled data.
#[test]
fn a_jsonl_of_texts_is_unlabelled_data() {
    let t = tempfile::tempdir().unwrap();
    let opts =
        cut::checkpoint::LoadOptions::from_flags(None, Some("pos:token,mood:sequence,topic:sequence-mean")).unwrap();
    let model = cut::checkpoint::Checkpoint::open(Path::new("tests/fixtures/text/bert"))
        .and_then(|c| c.model(&opts))
        .unwrap()
        .model;
    let lines: Vec<String> = (0..10)
        .map(|k| format!("{{\"tokens\": [\"The\", \"jury\", \"said\", \"{k}\"]}}"))
        .collect();
    let texts = t.path().join("texts.jsonl");
    std::fs::write(&texts, lines.join("\n")).unwrap();
    let (data, _) = cut::data::open_for(&model, &texts, None, Some(16)).unwrap();
    assert!(!data.labelled());
    assert_eq!((data.train.count(), data.test.count()), (8, 2));
    let (labelled, _) = cut::data::open_for(&model, Path::new("tests/fixtures/text/data"), None, Some(16)).unwrap();
    assert!(labelled.labelled());
}

/// `cut split` on unlabelled images recovers the cloud part by distillation: every row measures
/// its fidelity to the unsplit model (whose own row agrees with itself entirely).
#[test]
fn split_recovers_by_distillation() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("imgs");
    std::fs::create_dir_all(&images).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir("assets/demo-data/train/img")
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files.iter().take(20) {
        std::fs::copy(f, images.join(f.file_name().unwrap())).unwrap();
    }
    let out = t.path().join("demo");
    cut()
        .args([
            "split",
            "assets/demo.safetensors",
            "--tasks",
            "seg,depth",
            "--at",
            "backbone.blocks.3.1.relu2",
        ])
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
        .arg("--data")
        .arg(&images)
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path().join("demo.report.json")).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let change = |row: usize, when: &str, task: &str| {
        rows[row][when]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["task"] == task)
            .cloned()
            .unwrap()
    };
    assert_eq!(change(0, "before", "seg")["metric"], "agreement");
    assert_eq!(change(0, "before", "seg")["value"], 1.0);
    // An error of 0 (the unsplit model's relative L2 to itself) does not compare: cosine does.
    assert_eq!(change(1, "after", "depth")["metric"], "cosine");
    assert!(rows[1]["finetune_best_step"].is_u64());
}
