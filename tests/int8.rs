//! int8 ONNX (`cut export --int8`, `cut prune --int8`, `cut eval --runtime onnxruntime`): the
//! files pass the official checker, ONNX Runtime fuses them into int8 kernels, their metrics stay
//! within the bands of the f32 file's, the prune report's figures are what `cut eval` measures,
//! `cut`'s interpreter reads the QDQ file, and bad requests fail cleanly. ONNX Runtime and the
//! checker come from PyPI (scripts/setup-onnx.sh, run by the test command).

mod common;

use assert_cmd::Command;
use common::metric;
use serde_json::Value;
use std::path::Path;

const DEMO: &str = "assets/demo.safetensors";
const DEMO_DATA: &str = "assets/demo-data";
const TEXT_DEMO: &str = "assets/text-demo.safetensors";
const TEXT_DATA: &str = "assets/text-data";

fn cut() -> Command {
    Command::cargo_bin("cut").unwrap()
}

fn json_of(cmd: &mut Command) -> Value {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The checker's verdict: op types, domains and the kernels ONNX Runtime picked.
fn check(path: &Path) -> Value {
    let out = std::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .env("PYTHONPATH", ".onnx-env")
        .arg("scripts/check-int8.py")
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "check-int8.py {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn count(v: &Value, op: &str) -> u64 {
    v.get(op).and_then(Value::as_u64).unwrap_or(0)
}

/// `cut eval` of `model` with `extra`, as JSON.
fn eval(model: &Path, data: &str, extra: &[&str]) -> Value {
    json_of(
        cut()
            .arg("eval")
            .arg(model)
            .args(["--data", data, "--json"])
            .args(extra),
    )
}

/// Every metric of `got` within `score` (values in [0, 1]; 100x for percentages) or `error`
/// relative (lower-is-better) of `want`'s.
fn within_bands(want: &Value, got: &Value, score: f64, error: f64) {
    for (w, g) in want.as_array().unwrap().iter().zip(got.as_array().unwrap()) {
        for (m, n) in w["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .zip(g["metrics"].as_array().unwrap())
        {
            let (x, y) = (m["value"].as_f64().unwrap(), n["value"].as_f64().unwrap());
            let name = m["name"].as_str().unwrap();
            let band = if m["higher_is_better"].as_bool().unwrap() {
                if name.starts_with("delta_") || name.starts_with("within_") {
                    100.0 * score
                } else {
                    score
                }
            } else {
                error * x.abs()
            };
            assert!(
                (x - y).abs() <= band,
                "{} {name}: f32 {x}, int8 {y}, band {band}",
                w["task"]
            );
        }
    }
}

#[test]
fn demo_int8_export_checks_fuses_and_keeps_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (f32, int8) = (dir.path().join("demo.onnx"), dir.path().join("demo.int8.onnx"));
    cut().args(["export", DEMO, "-o"]).arg(&f32).assert().success();
    let done = json_of(
        cut()
            .args(["export", DEMO, "--int8", "--data", DEMO_DATA, "--json", "-o"])
            .arg(&int8),
    );
    assert_eq!(done["int8"]["calibration_inputs"], 100);
    assert_eq!(done["int8"]["calibration"], "percentile 99.999");
    assert_eq!(done["int8"]["float_weight_nodes"], serde_json::json!([]));
    assert_eq!(
        done["int8"]["int8_nodes"],
        serde_json::json!({"Add": 8, "Conv": 56, "MaxPool": 1})
    );
    let verdict = check(&int8);
    assert_eq!(verdict["domains"], serde_json::json!([""]), "standard ops only");
    assert_eq!(
        count(&verdict["ops"], "Relu"),
        0,
        "every ReLU absorbed into its quantization"
    );
    assert_eq!(count(&verdict["kernels"], "QLinearConv"), 56, "{verdict}");
    assert_eq!(count(&verdict["kernels"], "QLinearAdd"), 8, "{verdict}");
    assert_eq!(
        count(&verdict["kernels"], "NhwcMaxPool"),
        1,
        "the pool runs on int8 codes: {verdict}"
    );
    let (a, b) = (
        std::fs::metadata(&f32).unwrap().len(),
        std::fs::metadata(&int8).unwrap().len(),
    );
    assert!(b as f64 <= 0.3 * a as f64, "int8 {b} bytes, f32 {a}");
    let want = eval(&f32, DEMO_DATA, &["--runtime", "onnxruntime"]);
    let got = eval(&int8, DEMO_DATA, &["--runtime", "onnxruntime"]);
    within_bands(&want["tasks"], &got["tasks"], 0.01, 0.02);
    // cut's interpreter runs the QDQ file as ONNX Runtime does, up to the int8 kernels' rounding.
    let interpreted = eval(&int8, DEMO_DATA, &[]);
    within_bands(&got["tasks"], &interpreted["tasks"], 0.005, 0.01);
    // --int8 on eval: the export quantized in memory, the same figures as the file.
    let in_memory = eval(Path::new(DEMO), DEMO_DATA, &["--runtime", "onnxruntime", "--int8"]);
    assert_eq!(in_memory["tasks"], got["tasks"]);
}

#[test]
fn same_inputs_same_bytes_and_the_options_change_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        cut()
            .args([
                "export",
                DEMO,
                "--int8",
                "--data",
                DEMO_DATA,
                "--calibration",
                "8",
                "-o",
            ])
            .arg(&out)
            .args(extra)
            .assert()
            .success();
        std::fs::read(out).unwrap()
    };
    let a = write("a.onnx", &[]);
    assert_eq!(a, write("b.onnx", &[]), "same inputs, same bytes");
    assert_ne!(a, write("c.onnx", &["--calibrate", "minmax"]));
    let last = dir.path().join("last.onnx");
    std::fs::write(&last, write("last.onnx", &["--keep-float", "last"])).unwrap();
    // The heads' final 1x1 convolutions (4 branches each) stay f32.
    assert_eq!(count(&check(&last)["kernels"], "QLinearConv"), 44);
    let first = dir.path().join("first.onnx");
    std::fs::write(&first, write("first.onnx", &["--keep-float", "first,Add"])).unwrap();
    let verdict = check(&first);
    assert_eq!(count(&verdict["kernels"], "QLinearConv"), 55, "{verdict}");
    // The residual Adds and the stem convolution are left f32 in the file, so the ReLUs after
    // them stay (8 + 1).
    assert_eq!(count(&verdict["ops"], "Relu"), 9, "{verdict}");
}

#[test]
fn prune_reports_int8_figures_that_eval_reproduces() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.pruned.safetensors");
    let report = json_of(
        cut()
            .args(["prune", "--tasks", "seg,depth", DEMO, "--data", DEMO_DATA])
            .args(["--granularity", "channel", "--sparsity", "0.5", "--finetune-steps", "0"])
            .args(["--onnx", "--int8", "--calibration", "32", "--json", "-o"])
            .arg(&out),
    );
    let int8_path = dir.path().join("demo.pruned.int8.onnx");
    let int8 = &report["int8"];
    assert_eq!(int8["file"], int8_path.display().to_string());
    assert_eq!(
        int8["bytes"].as_u64().unwrap(),
        std::fs::metadata(&int8_path).unwrap().len()
    );
    assert!(int8["bytes"].as_f64().unwrap() <= 0.31 * int8["f32_bytes"].as_f64().unwrap());
    assert_eq!(int8["quantization"]["calibration_inputs"], 32);
    // The f32 ONNX file in ONNX Runtime scores what the interpreter scored after pruning.
    for task in ["seg", "depth"] {
        let (name, ort) = (if task == "seg" { "miou" } else { "abs_err" }, &int8["f32"]);
        let after = metric(&report["accuracy"]["after"], task, name);
        assert!((metric(ort, task, name) - after).abs() < 1e-4, "{task}");
    }
    within_bands(&int8["f32"], &int8["int8"], 0.01, 0.02);
    assert!(
        int8["rows"].as_array().unwrap().iter().all(|r| r["within"] == true),
        "{}",
        int8["rows"]
    );
    let measured = eval(&int8_path, DEMO_DATA, &["--runtime", "onnxruntime"]);
    assert_eq!(
        measured["tasks"], int8["int8"],
        "the report's int8 figures are the file's"
    );
    let md = std::fs::read_to_string(dir.path().join("demo.pruned.report.md")).unwrap();
    assert!(md.contains("## int8 (8 Add, 44 Conv, 1 MaxPool)"), "{md}");
}

#[test]
fn text_int8_keeps_its_metrics() {
    let ort = eval(Path::new(TEXT_DEMO), TEXT_DATA, &["--runtime", "onnxruntime"]);
    let cut_run = eval(Path::new(TEXT_DEMO), TEXT_DATA, &[]);
    within_bands(&cut_run["tasks"], &ort["tasks"], 1e-4, 1e-4);
    let int8 = eval(Path::new(TEXT_DEMO), TEXT_DATA, &["--runtime", "onnxruntime", "--int8"]);
    // 2 points on the text demo's few hundred test sentences (one sentence is 0.2 to 0.5 points).
    within_bands(&ort["tasks"], &int8["tasks"], 0.02, 0.02);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("text.int8.onnx");
    cut()
        .args(["export", TEXT_DEMO, "--int8", "--data", TEXT_DATA, "-o"])
        .arg(&file)
        .assert()
        .success();
    let verdict = check(&file);
    assert!(count(&verdict["kernels"], "MatMulIntegerToFloat") >= 6, "{verdict}");
    assert!(count(&verdict["ops"], "DequantizeLinear") > 0);
    let (f32, _) = (dir.path().join("text.onnx"), ());
    cut().args(["export", TEXT_DEMO, "-o"]).arg(&f32).assert().success();
    let ratio = std::fs::metadata(&file).unwrap().len() as f64 / std::fs::metadata(&f32).unwrap().len() as f64;
    assert!(ratio <= 0.3, "the embedding table is int8 too: {ratio}");
    // The file carries the tokenizer: cut eval reads the text for it and runs it in ONNX Runtime,
    // with the figures of the export quantized in memory. (era and pos: cut's importer does not
    // read the masked mean of the party head.)
    let era_pos = dir.path().join("era_pos.int8.onnx");
    cut()
        .args([
            "export", TEXT_DEMO, "--tasks", "era,pos", "--int8", "--data", TEXT_DATA, "-o",
        ])
        .arg(&era_pos)
        .assert()
        .success();
    let sizes = ["--input", "input_ids:128", "--input", "attention_mask:128"];
    let read_back = eval(
        &era_pos,
        TEXT_DATA,
        &[&["--runtime", "onnxruntime"][..], &sizes[..]].concat(),
    );
    let in_memory: Vec<&Value> = int8["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["task"] != "party")
        .collect();
    assert_eq!(
        read_back["tasks"].as_array().unwrap().iter().collect::<Vec<_>>(),
        in_memory
    );
}

#[test]
fn bad_int8_requests_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.onnx");
    let refused = |args: &[&str], code: i32, says: &str| {
        let o = cut().args(args).arg("-o").arg(&out).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.lines().next().unwrap_or("").contains(says), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote a file");
    };
    refused(&["export", DEMO, "--int8"], 2, "--int8 needs --data");
    refused(
        &["export", TEXT_DEMO, "--int8", "--format", "hf-folder"],
        2,
        "not a Hugging Face folder",
    );
    refused(
        &["export", DEMO, "--int8", "--data", DEMO_DATA, "--dtype", "f16"],
        2,
        "--dtype f16",
    );
    refused(
        &["export", DEMO, "--int8", "--data", DEMO_DATA, "--calibration", "0"],
        2,
        "--calibration 0",
    );
    refused(
        &[
            "export",
            DEMO,
            "--int8",
            "--data",
            DEMO_DATA,
            "--keep-float",
            "nothing.like.this",
        ],
        2,
        "--keep-float nothing.like.this",
    );
    refused(
        &[
            "export",
            DEMO,
            "--int8",
            "--data",
            DEMO_DATA,
            "--calibrate",
            "percentile:20",
        ],
        2,
        "percentile '20'",
    );
    let o = cut()
        .env("ORT_DYLIB_PATH", dir.path().join("missing.so"))
        .args(["export", DEMO, "--int8", "--data", DEMO_DATA, "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("ORT_DYLIB_PATH") && err.contains("missing.so"), "{err}");
    assert!(!out.exists());
    let p = cut()
        .args(["prune", "--tasks", "seg", DEMO, "--int8", "-o"])
        .arg(dir.path().join("p.safetensors"))
        .output()
        .unwrap();
    assert_eq!(p.status.code(), Some(2), "{}", String::from_utf8_lossy(&p.stderr));
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written"
    );
}

/// Imported models quantize too: a timm ResNet calibrated on a folder of images, and a Hugging
/// Face BERT on token ids from an .npz; cut's interpreter reads the int8 files back and they
/// follow the f32 originals (random-weight fixtures, so fidelity rather than accuracy).
#[test]
fn imported_models_quantize_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids.npz");
    {
        let mut npz = ndarray_npy::NpzWriter::new(std::fs::File::create(&ids).unwrap());
        let tokens = ndarray::Array2::from_shape_fn((40, 16), |(i, j)| ((i * 7 + j * 13) % 97 + 1) as i64);
        npz.add_array("input_ids", &tokens).unwrap();
        npz.add_array("attention_mask", &ndarray::Array2::<i64>::ones((40, 16)))
            .unwrap();
        npz.finish().unwrap();
    }
    let cases: [(&str, &Path, &Path, &[&str], f64); 2] = [
        (
            "timm_resnet18",
            Path::new("assets/demo-data/train/img"),
            Path::new("assets/demo-data/test/img"),
            &[],
            0.1,
        ),
        (
            "hf_bert",
            &ids,
            &ids,
            &["--input", "input_ids:16", "--input", "attention_mask:16"],
            0.1,
        ),
    ];
    for (name, calibrate, test, sizes, bound) in cases {
        let original = Path::new("tests/fixtures/onnx").join(format!("{name}.onnx"));
        let int8 = dir.path().join(format!("{name}.int8.onnx"));
        cut()
            .arg("export")
            .arg(&original)
            .args(["--int8", "--calibration", "16", "--data"])
            .arg(calibrate)
            .arg("-o")
            .arg(&int8)
            .assert()
            .success();
        assert_eq!(check(&int8)["domains"], serde_json::json!([""]));
        let r = json_of(
            cut()
                .arg("eval")
                .arg(&int8)
                .arg("--data")
                .arg(test)
                .arg("--reference")
                .arg(&original)
                .arg("--json")
                .args(sizes),
        );
        let l2 = metric(&r["fidelity"], "logits", "relative_l2");
        assert!(l2 < bound, "{name}: relative L2 {l2} to the f32 original");
    }
}
