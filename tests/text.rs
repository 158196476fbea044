//! BERT-family encoders read from Hugging Face folders: the logits equal those of Hugging Face's
//! PyTorch implementation (tests/fixtures/text/*/expected.json, written by
//! scripts/make-text-fixtures.py), through cut's own tokenization of the same words.

mod common;

use cut::checkpoint::{Checkpoint, LoadOptions};
use cut::data::text::load_tokenizer;
use cut::graph::interpreter::{forward_inputs, Inputs, Mode};
use cut::graph::TaskKind;
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn opts() -> LoadOptions {
    LoadOptions {
        task_names: Some(vec!["pos".into(), "mood".into(), "topic".into()]),
        task_kinds: Some(vec![TaskKind::Token, TaskKind::Sequence, TaskKind::SequenceMean]),
        ..Default::default()
    }
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    let mut out = Vec::new();
    match v {
        serde_json::Value::Array(items) => items.iter().for_each(|i| out.extend(floats(i))),
        n => out.push(n.as_f64().unwrap() as f32),
    }
    out
}

/// Runs one fixture: tokenization equals the Python tokenizer's ids, and every head's logits equal
/// Hugging Face's within 1e-4, for sentences batched with padding.
fn matches_hugging_face(name: &str) {
    let folder = Path::new("tests/fixtures/text").join(name);
    let ckpt = Checkpoint::open(&folder).unwrap();
    let loaded = ckpt.model(&opts()).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let model = loaded.model;
    assert_eq!(model.graph.family.as_deref(), Some("bert"));
    let params = ckpt.load_params(&model, Device::Cpu).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("expected.json")).unwrap()).unwrap();
    let sentences = expected["sentences"].as_array().unwrap();
    let tokenizer = load_tokenizer(&folder.join("tokenizer.json")).unwrap();
    let pad = tokenizer
        .token_to_id("[PAD]")
        .or(tokenizer.token_to_id("<pad>"))
        .unwrap() as i64;
    let mut ids = Vec::new();
    for s in sentences {
        let words: Vec<&str> = s["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        let enc = tokenizer.encode(words, true).unwrap();
        let want: Vec<u32> = s["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(enc.get_ids(), want.as_slice(), "{name}: token ids of {:?}", s["tokens"]);
        ids.push(enc.get_ids().iter().map(|&i| i as i64).collect::<Vec<_>>());
    }
    let len = ids.iter().map(Vec::len).max().unwrap();
    let n = ids.len() as i64;
    let padded: Vec<i64> = ids
        .iter()
        .flat_map(|v| v.iter().copied().chain(std::iter::repeat_n(pad, len - v.len())))
        .collect();
    let mask: Vec<i64> = ids
        .iter()
        .flat_map(|v| (0..len).map(move |i| i64::from(i < v.len())))
        .collect();
    let inputs = Inputs::from([
        (
            "input_ids".to_string(),
            Tensor::from_slice(&padded).view([n, len as i64]),
        ),
        (
            "attention_mask".to_string(),
            Tensor::from_slice(&mask).view([n, len as i64]),
        ),
    ]);
    let out =
        tch::no_grad(|| forward_inputs(&model.graph, &params, &inputs, &["pos", "mood", "topic"], Mode::Eval)).unwrap();
    let mut worst: f32 = 0.0;
    for (i, (s, real)) in sentences.iter().zip(&ids).enumerate() {
        let got = |task: &str| {
            let t = out[task].get(i as i64);
            let t = if task == "pos" {
                t.narrow(0, 0, real.len() as i64)
            } else {
                t
            };
            Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap()
        };
        for task in ["pos", "mood", "topic"] {
            let (a, b) = (got(task), floats(&s[task]));
            assert_eq!(a.len(), b.len(), "{name} {task}");
            for (x, y) in a.iter().zip(&b) {
                worst = worst.max((x - y).abs());
            }
        }
    }
    assert!(
        worst < 1e-4,
        "{name}: logits differ from Hugging Face's by up to {worst}"
    );
}

#[test]
fn bert_logits_equal_hugging_face() {
    matches_hugging_face("bert");
}

#[test]
fn roberta_logits_equal_hugging_face() {
    matches_hugging_face("roberta");
}

const KINDS: &str = "pos:token,mood:sequence,topic:sequence-mean";
const FIXTURE: &str = "tests/fixtures/text";

/// The fixture's text data, with a validation share and batches small enough for its 4 lines.
fn small_data() -> [String; 6] {
    [
        "--data",
        &format!("{FIXTURE}/data"),
        "--val-fraction",
        "0.25",
        "--batch",
        "2",
    ]
    .map(String::from)
}

fn cut() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("cut").unwrap()
}

/// A copy of a fixture folder (model and data) to break on purpose.
fn copy_fixture(to: &Path) {
    for (from, sub) in [("bert", "model"), ("data", "data")] {
        let dir = to.join(sub);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(Path::new(FIXTURE).join(from)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
}

/// The error line of a failing command (exit code 1 or 2), checked to be one line.
fn fails(cmd: &mut assert_cmd::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "expected a failure");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

/// `cut eval` on the fixture scores the test split's two texts: 20 labelled words for `pos`, and
/// sequence accuracies equal to those of Hugging Face's logits (expected.json) against the labels.
#[test]
fn eval_end_to_end_agrees_with_hugging_face_logits() {
    let out = cut()
        .args(["eval", &format!("{FIXTURE}/bert"), "--task-kinds", KINDS])
        .args(["--data", &format!("{FIXTURE}/data"), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let task = |name: &str| {
        report["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["task"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(task("pos")["count"], 20);
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURE}/bert/expected.json")).unwrap()).unwrap();
    let labels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURE}/bert/labels.json")).unwrap()).unwrap();
    let test: Vec<serde_json::Value> = std::fs::read_to_string(format!("{FIXTURE}/data/test.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for name in ["mood", "topic"] {
        let mut hits = 0;
        for row in &test {
            let s = expected["sentences"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["tokens"] == row["tokens"])
                .unwrap();
            let logits = floats(&s[name]);
            let best = (0..logits.len())
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
                .unwrap();
            hits += usize::from(labels[name][best] == row[name]);
        }
        let accuracy = task(name)["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "accuracy")
            .unwrap()["value"]
            .as_f64()
            .unwrap();
        assert_eq!(accuracy, hits as f64 / test.len() as f64, "{name}");
    }
}

/// Train from the Hugging Face folder, then prune the result (packed): each output carries its
/// tokenizer and label names, so later commands need no --task-kinds.
#[test]
fn train_then_prune_keeps_the_model_self_contained() {
    let t = tempfile::tempdir().unwrap();
    let trained = t.path().join("trained.safetensors");
    cut()
        .args(["train", "--from", &format!("{FIXTURE}/bert"), "--task-kinds", KINDS])
        .args(small_data())
        .args(["--steps", "4", "--val-every", "2", "--lr", "1e-3", "-o"])
        .arg(&trained)
        .assert()
        .success();
    let ckpt = Checkpoint::open(&trained).unwrap();
    let model = ckpt.model(&LoadOptions::default()).unwrap().model;
    assert!(model.tokenizer.is_some());
    let mood = model.tasks.iter().find(|t| t.name == "mood").unwrap();
    assert_eq!(
        mood.labels.as_deref(),
        Some(&["statement".to_string(), "question".to_string()][..])
    );
    // Heads and FFN neurons removed to 30% fewer MACs: a smaller dense model that evaluates.
    let narrow_into = |name: &str| {
        let path = t.path().join(name);
        cut()
            .args([
                "prune",
                "--tasks",
                "pos,mood",
                "--granularity",
                "channel",
                "--sparsity",
                "0.3",
            ])
            .arg(&trained)
            .args(small_data())
            .args(["--calib-batches", "1", "--finetune-steps", "2", "--round-to", "1", "-o"])
            .arg(&path)
            .assert()
            .success();
        path
    };
    let narrow = narrow_into("narrow.safetensors");
    // The same inputs and seed give the same tensors.
    let again = Checkpoint::open(narrow_into("again.safetensors")).unwrap();
    let first = Checkpoint::open(&narrow).unwrap();
    for name in first.tensors.keys() {
        let (a, b) = (
            first.tensor(name, Device::Cpu).unwrap(),
            again.tensor(name, Device::Cpu).unwrap(),
        );
        assert!(a.equal(&b), "{name}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("narrow.report.json")).unwrap()).unwrap();
    let outcome = &report["channels"];
    let removed = outcome["macs_removed"].as_f64().unwrap();
    assert!((0.3..0.4).contains(&removed), "{outcome}");
    // MACs are counted at the calibration data's mean length, not the graph's 128.
    let seq = outcome["seq_len"].as_u64().unwrap();
    assert!((4..40).contains(&seq), "{outcome}");
    assert!(!outcome["layers"].as_array().unwrap().is_empty());
    let small = Checkpoint::open(&narrow).unwrap();
    let small_model = small.model(&LoadOptions::default()).unwrap().model;
    assert!(
        small_model.graph.param_specs().iter().map(|s| s.numel()).sum::<usize>()
            < model.graph.param_specs().iter().map(|s| s.numel()).sum::<usize>()
    );
    // A parameter budget: the output holds at most that many parameters.
    let few = t.path().join("few.safetensors");
    let target = model.graph.param_specs().iter().map(|s| s.numel()).sum::<usize>() * 9 / 10;
    cut()
        .args(["prune", "--tasks", "pos,mood,topic", "--granularity", "channel"])
        .args(["--target-params", &target.to_string()])
        .arg(&trained)
        .args(small_data())
        .args([
            "--finetune-steps",
            "0",
            "--round-to",
            "1",
            "--max-layer-ratio",
            "1",
            "-o",
        ])
        .arg(&few)
        .assert()
        .success();
    let few_model = Checkpoint::open(&few)
        .unwrap()
        .model(&LoadOptions::default())
        .unwrap()
        .model;
    let kept: usize = few_model.graph.param_specs().iter().map(|s| s.numel()).sum();
    assert!(kept <= target, "{kept} > {target}");
    // Taylor unit scores, union fusion, at least 3 heads per layer, MACs counted at 16 tokens.
    let taylor = t.path().join("taylor.safetensors");
    cut()
        .args([
            "prune",
            "--tasks",
            "pos,mood",
            "--granularity",
            "channel",
            "--criterion",
            "taylor",
        ])
        .args([
            "--fusion",
            "union",
            "--min-heads",
            "3",
            "--seq-len",
            "16",
            "--sparsity",
            "0.3",
        ])
        .arg(&trained)
        .args(small_data())
        .args(["--calib-batches", "2", "--finetune-steps", "0", "--round-to", "1", "-o"])
        .arg(&taylor)
        .assert()
        .success();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("taylor.report.json")).unwrap()).unwrap();
    let channels = &report["channels"];
    assert_eq!(channels["seq_len"], 16, "{channels}");
    assert_eq!(report["settings"]["criterion"], "taylor");
    // Every layer keeps 3 or 4 of its 4 heads, in the written model and in the report.
    let written = Checkpoint::open(&taylor)
        .unwrap()
        .model(&LoadOptions::default())
        .unwrap()
        .model;
    let heads: Vec<usize> = written
        .graph
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            cut::graph::Op::SelfAttention(a) => Some(a.heads),
            _ => None,
        })
        .collect();
    assert!(
        !heads.is_empty() && heads.iter().all(|h| (3..=4).contains(h)),
        "{heads:?}"
    );
    for layer in channels["layers"].as_array().unwrap() {
        if layer["unit"] == "heads" {
            assert!((3..=4).contains(&layer["after"].as_u64().unwrap()), "{layer}");
        }
    }
    assert!(report["channels"]["macs_removed"].as_f64().unwrap() >= 0.3 - 1e-9);
    let pruned = t.path().join("pruned.safetensors");
    cut()
        .args(["prune", "--tasks", "pos,mood"])
        .arg(&trained)
        .args(small_data())
        .args([
            "--calib-batches",
            "1",
            "--finetune-steps",
            "2",
            "--packed",
            "--json",
            "-o",
        ])
        .arg(&pruned)
        .assert()
        .success();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path().join("pruned.report.json")).unwrap()).unwrap();
    let sparsity = report["sparsity"]["reached"].as_f64().or(report["sparsity"].as_f64());
    assert!(
        sparsity.is_some_and(|s| (s - 0.9).abs() < 0.01),
        "{}",
        report["sparsity"]
    );
    let out = cut()
        .args(["eval"])
        .arg(&pruned)
        .args(["--data", &format!("{FIXTURE}/data"), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let eval: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tasks: Vec<&str> = eval["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task"].as_str().unwrap())
        .collect();
    assert_eq!(tasks, vec!["pos", "mood"]);
}

/// Bad input: one line naming the file and what is wrong, a failing exit code, nothing written.
#[test]
fn bad_inputs_are_named() {
    let t = tempfile::tempdir().unwrap();
    copy_fixture(t.path());
    let model = t.path().join("model");
    let data = t.path().join("data");
    let eval = |kinds: &str| {
        let mut c = cut();
        c.arg("eval")
            .arg(&model)
            .args(["--task-kinds", kinds])
            .arg("--data")
            .arg(&data);
        c
    };
    let err = fails(&mut eval("pos:tokn,mood:sequence,topic:sequence-mean"));
    assert!(err.contains("unknown task kind 'tokn'"), "{err}");
    let err = fails(&mut eval("pos:token,mood:sequence"));
    assert!(err.contains("task 'topic' needs a kind"), "{err}");

    let test = data.join("test.jsonl");
    let good = std::fs::read_to_string(&test).unwrap();
    let first: serde_json::Value = serde_json::from_str(good.lines().next().unwrap()).unwrap();
    let line_with = |key: &str, value: serde_json::Value| {
        let mut row = first.clone();
        row[key] = value;
        format!("{}\n{row}\n", good.lines().next().unwrap())
    };
    let cases = [
        (
            line_with("mood", "angry".into()),
            "test.jsonl:2: task 'mood' has label 'angry', which the model does not know",
        ),
        (
            line_with("pos", serde_json::json!(["DET"])),
            "test.jsonl:2: token task 'pos' has 1 labels for 10 words",
        ),
        (
            "{\"tokens\": [\"a\"]\nnot json\n".to_string(),
            "test.jsonl:1: not a JSON object",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&test, text).unwrap();
        let err = fails(&mut eval(KINDS));
        assert!(err.contains(want), "{err} / {want}");
    }
    std::fs::write(&test, [&good.as_bytes()[..10], b"\xff\xfe\n"].concat()).unwrap();
    let err = fails(&mut eval(KINDS));
    assert!(err.contains("test.jsonl:1: not UTF-8"), "{err}");
    std::fs::write(&test, &good).unwrap();

    let labels = model.join("labels.json");
    let good_labels = std::fs::read_to_string(&labels).unwrap();
    std::fs::write(
        &labels,
        good_labels
            .replace("\"question\"", "")
            .replace("\"statement\",", "\"statement\""),
    )
    .unwrap();
    let err = fails(&mut eval(KINDS));
    assert!(
        err.contains("labels.json: task 'mood' lists 1 labels, but its head 'heads.mood' has 2 rows"),
        "{err}"
    );
    std::fs::copy(Path::new(FIXTURE).join("bert/labels.json"), &labels).unwrap();

    let config = model.join("config.json");
    let good_config = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        good_config.replace("\"intermediate_size\": 64", "\"intermediate_size\": 65"),
    )
    .unwrap();
    let err = fails(&mut eval(KINDS));
    assert!(
        err.contains("config.json: field 'intermediate_size' is 65, but tensor 'bert.encoder.layer.0.intermediate.dense.weight' says 64"),
        "{err}"
    );
    std::fs::remove_file(&config).unwrap();
    let out = eval(KINDS).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no config.json beside the model"));
    std::fs::write(&config, &good_config).unwrap();

    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    let err = fails(&mut eval(KINDS));
    assert!(err.contains("carries no tokenizer"), "{err}");
    let out = t.path().join("never.safetensors");
    let mut train = cut();
    train
        .args(["train", "--from"])
        .arg(&model)
        .args(["--task-kinds", KINDS, "--steps", "1", "--data"])
        .arg(&data)
        .arg("-o")
        .arg(&out);
    fails(&mut train);
    assert!(!out.exists(), "nothing is written");
}

/// Older files name layer norms `gamma` and `beta`: the same model under those names gives the same
/// logits.
#[test]
fn gamma_beta_names_load() {
    let t = tempfile::tempdir().unwrap();
    let folder = t.path().join("old");
    std::fs::create_dir(&folder).unwrap();
    for f in ["config.json", "tokenizer.json", "labels.json", "expected.json"] {
        std::fs::copy(Path::new(FIXTURE).join("bert").join(f), folder.join(f)).unwrap();
    }
    let bytes = std::fs::read(Path::new(FIXTURE).join("bert/model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let renamed: Vec<(String, safetensors::tensor::TensorView)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let name = match name.strip_suffix("LayerNorm.weight") {
                Some(p) => format!("{p}LayerNorm.gamma"),
                None => match name.strip_suffix("LayerNorm.bias") {
                    Some(p) => format!("{p}LayerNorm.beta"),
                    None => name,
                },
            };
            (name, view)
        })
        .collect();
    assert!(renamed.iter().any(|(n, _)| n.ends_with("gamma")));
    safetensors::serialize_to_file(renamed, None, &folder.join("model.safetensors")).unwrap();
    let ckpt = Checkpoint::open(&folder).unwrap();
    let model = ckpt.model(&opts()).unwrap().model;
    let old = ckpt.load_params(&model, Device::Cpu).unwrap();
    let new_ckpt = Checkpoint::open(Path::new(FIXTURE).join("bert")).unwrap();
    let new_model = new_ckpt.model(&opts()).unwrap().model;
    let new = new_ckpt.load_params(&new_model, Device::Cpu).unwrap();
    let ids = Tensor::from_slice(&[2i64, 7, 9, 3]).view([1, 4]);
    let inputs = Inputs::from([
        ("input_ids".to_string(), ids),
        (
            "attention_mask".to_string(),
            Tensor::ones([1, 4], (Kind::Int64, Device::Cpu)),
        ),
    ]);
    let run = |g: &cut::graph::Graph, p| forward_inputs(g, p, &inputs, &["pos"], Mode::Eval).unwrap()["pos"].copy();
    assert!(run(&model.graph, &old).equal(&run(&new_model.graph, &new)));
}

/// `cut export --format hf-folder` writes a folder that cut reads back (no --task-kinds needed:
/// config.json records them) with the same metrics, and that refuses to replace files unasked.
#[test]
fn export_to_a_hugging_face_folder_round_trips() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("hf");
    let export = || {
        let mut c = cut();
        c.args([
            "export",
            &format!("{FIXTURE}/roberta"),
            "--task-kinds",
            KINDS,
            "--format",
            "hf-folder",
            "-o",
        ])
        .arg(&out);
        c
    };
    export().assert().success();
    for f in ["model.safetensors", "config.json", "tokenizer.json", "labels.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let eval = |model: &Path, kinds: Option<&str>| -> serde_json::Value {
        let mut c = cut();
        c.arg("eval")
            .arg(model)
            .args(["--data", &format!("{FIXTURE}/data"), "--json"]);
        if let Some(k) = kinds {
            c.args(["--task-kinds", k]);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let before = eval(&Path::new(FIXTURE).join("roberta"), Some(KINDS));
    let after = eval(&out, None);
    assert_eq!(before["tasks"], after["tasks"]);
    let err = fails(&mut export());
    assert!(err.contains("exists"), "{err}");
}

/// A tokenizer is checked against the model at load (it parses, has [PAD], every id has an
/// embedding row), from a folder and from a checkpoint, so a broken one fails there, named, and
/// is never copied into an output (before, prune and export copied it with exit 0).
#[test]
fn a_broken_tokenizer_fails_at_load() {
    let t = tempfile::tempdir().unwrap();
    copy_fixture(t.path());
    let model = t.path().join("model");
    let path = model.join("tokenizer.json");
    let good = std::fs::read_to_string(&path).unwrap();
    let mut beyond: serde_json::Value = serde_json::from_str(&good).unwrap();
    beyond["model"]["vocab"]["zzz"] = 95.into();
    let cases = [
        (String::new(), "tokenizer.json: not a tokenizer"),
        (good[..good.len() / 2].to_string(), "tokenizer.json: not a tokenizer"),
        (
            good.replace("[PAD]", "[PXD]"),
            "tokenizer.json: the model's tokenizer has no [PAD] or <pad> token",
        ),
        (
            beyond.to_string(),
            "tokenizer.json: token 'zzz' has id 95, beyond the model's embedding table of 90 rows",
        ),
    ];
    let onnx = t.path().join("m.onnx");
    for (text, want) in cases {
        std::fs::write(&path, text).unwrap();
        let err = fails(cut().arg("inspect").arg(&model).args(["--task-kinds", KINDS]));
        assert!(err.contains(want), "{err} / {want}");
        let err = fails(
            cut()
                .arg("export")
                .arg(&model)
                .args(["--task-kinds", KINDS, "-o"])
                .arg(&onnx),
        );
        assert!(err.contains(want), "{err} / {want}");
        assert!(!onnx.exists());
    }
    // The same check on a checkpoint's own copy, named by its metadata field.
    std::fs::write(&path, &good).unwrap();
    let ckpt = t.path().join("own.safetensors");
    cut()
        .args(["train", "--from"])
        .arg(&model)
        .args(["--task-kinds", KINDS, "--steps", "1"])
        .args(small_data())
        .arg("-o")
        .arg(&ckpt)
        .assert()
        .success();
    common::patch_metadata(&ckpt, "cut.tokenizer", |t| t.replace("[PAD]", "[PXD]"));
    let err = fails(cut().arg("inspect").arg(&ckpt));
    assert!(
        err.contains("own.safetensors: metadata field 'cut.tokenizer': the model's tokenizer has no [PAD]"),
        "{err}"
    );
}

/// labels.json: a label twice in one task's list (the data reader would map it to one row by
/// accident) or an entry for a head that does not exist (ignored before) is refused, named.
#[test]
fn labels_json_is_checked() {
    let t = tempfile::tempdir().unwrap();
    copy_fixture(t.path());
    let model = t.path().join("model");
    let path = model.join("labels.json");
    let good: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut twice = good.clone();
    twice["mood"][1] = twice["mood"][0].clone();
    let first = twice["mood"][0].as_str().unwrap().to_string();
    let mut extra = good.clone();
    extra["color"] = serde_json::json!(["red", "blue"]);
    for (labels, want) in [
        (twice, format!("labels.json: task 'mood' lists label '{first}' twice")),
        (
            extra,
            "labels.json: names task 'color', which has no head (heads: mood, pos, topic)".to_string(),
        ),
    ] {
        std::fs::write(&path, labels.to_string()).unwrap();
        let err = fails(cut().arg("inspect").arg(&model).args(["--task-kinds", KINDS]));
        assert!(err.contains(&want), "{err} / {want}");
    }
}

/// The default --max-len is the model's position table when that holds fewer than 128 tokens (the
/// fixture's holds 64): a longer line is truncated with a warning. A --max-len beyond the table is
/// an error naming the line, where it failed per batch with no file or line before.
#[test]
fn max_len_defaults_to_the_position_table() {
    let t = tempfile::tempdir().unwrap();
    copy_fixture(t.path());
    let (model, data) = (t.path().join("model"), t.path().join("data"));
    let test = data.join("test.jsonl");
    let good = std::fs::read_to_string(&test).unwrap();
    let first: serde_json::Value = serde_json::from_str(good.lines().next().unwrap()).unwrap();
    let mut long = first.clone();
    for key in ["tokens", "pos"] {
        let items = first[key].as_array().unwrap();
        long[key] = items.iter().cycle().take(items.len() * 8).cloned().collect();
    }
    std::fs::write(&test, format!("{good}{long}\n")).unwrap();
    let eval = |extra: &[&str]| {
        let mut c = cut();
        c.arg("eval")
            .arg(&model)
            .args(["--task-kinds", KINDS, "--data"])
            .arg(&data)
            .args(extra);
        c
    };
    let out = eval(&[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("longer than --max-len 64 tokens and were truncated"),
        "{stderr}"
    );
    let err = fails(&mut eval(&["--max-len", "100"]));
    assert!(
        err.contains("test.jsonl:3: ")
            && err.contains("tokens, more than the model's 64 positions (give --max-len 64 or less)"),
        "{err}"
    );
}

/// Inputs are described by the graph, from the ops that read them, never by a family's names: an
/// encoder's token ids and mask, an image model's image, a text split's cloud part's features.
#[test]
fn input_roles_come_from_the_graph() {
    use cut::graph::InputRole;
    let roles = |model: &cut::graph::Model| -> Vec<(String, InputRole)> {
        let g = &model.graph;
        g.inputs.iter().map(|d| (d.name.clone(), g.input_role(d))).collect()
    };
    let text = Checkpoint::open(format!("{FIXTURE}/bert/model.safetensors"))
        .unwrap()
        .model(&opts())
        .unwrap()
        .model;
    assert_eq!(
        roles(&text),
        [
            ("input_ids".to_string(), InputRole::TokenIds),
            ("attention_mask".to_string(), InputRole::AttentionMask)
        ]
    );
    let image = Checkpoint::open("assets/demo.safetensors")
        .unwrap()
        .model(&LoadOptions::default())
        .unwrap()
        .model;
    assert_eq!(roles(&image), [("input".to_string(), InputRole::Image)]);
    // The same encoder with its inputs renamed reads the same roles (nothing keys on the names).
    let mut renamed = text.clone();
    let json = serde_json::to_string(&renamed.graph)
        .unwrap()
        .replace("\"input_ids\"", "\"tokens\"")
        .replace("\"attention_mask\"", "\"keep\"");
    renamed.graph = serde_json::from_str(&json).unwrap();
    assert_eq!(
        roles(&renamed),
        [
            ("tokens".to_string(), InputRole::TokenIds),
            ("keep".to_string(), InputRole::AttentionMask)
        ]
    );
    let split = cut::split::joined(
        &text,
        &cut::split::cut_after(&text, "bert.encoder.layer.0.output.LayerNorm").unwrap(),
        &cut::split::Compression::NONE,
    )
    .unwrap();
    let params = Checkpoint::open(format!("{FIXTURE}/bert/model.safetensors"))
        .unwrap()
        .load_params(&text, Device::Cpu)
        .unwrap();
    let parts = cut::split::separate(&split, &params).unwrap();
    let cloud: Vec<InputRole> = roles(&parts.cloud).into_iter().map(|(_, r)| r).collect();
    assert_eq!(cloud, [InputRole::Features, InputRole::AttentionMask]);
}

/// `cut predict` on a jsonl of texts: one row per line, and a line's outputs do not depend on
/// what it is batched with (the padding of a longer neighbour is masked).
#[test]
fn predict_reads_texts() {
    let tmp = tempfile::tempdir().unwrap();
    let short = r#"{"text": "The old bridge was closed."}"#;
    let long = r#"{"text": "Why would anyone build a bridge across that river, and who would pay for it?"}"#;
    let run = |lines: &[&str], name: &str| -> ndarray::ArrayD<f32> {
        let input = tmp.path().join(format!("{name}.jsonl"));
        std::fs::write(&input, lines.join("\n")).unwrap();
        let out = tmp.path().join(format!("{name}.npz"));
        cut()
            .args(["predict", &format!("{FIXTURE}/bert"), "--task-kinds", KINDS])
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .assert()
            .success();
        let mut npz = ndarray_npy::NpzReader::new(std::fs::File::open(&out).unwrap()).unwrap();
        npz.by_name("mood").unwrap()
    };
    let alone = run(&[short], "alone");
    let batched = run(&[short, long], "batched");
    assert_eq!(alone.shape(), [1, 2]);
    assert_eq!(batched.shape(), [2, 2]);
    for k in 0..2 {
        assert!((alone[[0, k]] - batched[[0, k]]).abs() < 1e-5, "{alone} vs {batched}");
    }
    // A model without a tokenizer says so.
    let err = fails(
        cut()
            .args(["predict", "tests/fixtures/onnx/hf_bert.onnx"])
            .arg(tmp.path().join("alone.jsonl"))
            .arg("-o")
            .arg(tmp.path().join("x.npz")),
    );
    assert!(err.contains("carries no tokenizer"), "{err}");
}
