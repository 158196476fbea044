//! The bundled demo model and data, run as a user runs them.

mod common;

use assert_cmd::Command;
use std::path::Path;

fn cut() -> Command {
    Command::cargo_bin("cut").unwrap()
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn eval_json(extra: &[&str]) -> serde_json::Value {
    eval_json_of("assets/demo.safetensors", "assets/demo-data", extra)
}

/// `cut eval MODEL --data DATA --json EXTRA...` from the repository root, parsed.
fn eval_json_of(model: &str, data: &str, extra: &[&str]) -> serde_json::Value {
    let out = cut()
        .current_dir(root())
        .args(["eval", model, "--data", data, "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn metric(report: &serde_json::Value, task: &str, name: &str) -> f64 {
    let t = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == task)
        .unwrap();
    t["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap()["value"]
        .as_f64()
        .unwrap()
}

#[test]
fn demo_model_is_trained_and_beats_constants() {
    let model = eval_json(&[]);
    assert_eq!(model["images"], 40);
    // Bands around the figures in the README (0.233, 21.9 degrees, 0.192); CPU results may differ in
    // the last digits between machines.
    let miou = metric(&model, "seg", "miou");
    let angle = metric(&model, "normal", "mean_angle");
    let rel = metric(&model, "depth", "rel_err");
    assert!((0.21..0.26).contains(&miou), "mIoU {miou}");
    assert!((20.0..24.0).contains(&angle), "normal mean angle {angle}");
    assert!((0.17..0.21).contains(&rel), "depth rel {rel}");

    let constant = eval_json(&["--constant"]);
    assert!(metric(&constant, "seg", "miou") < miou / 4.0);
    assert!(metric(&constant, "normal", "mean_angle") > angle * 2.0);
    assert!(metric(&constant, "depth", "rel_err") > rel * 2.0);

    // delta_m of the model against itself is 0; the constant predictor is far below it.
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.json");
    std::fs::write(&base, serde_json::to_string(&model).unwrap()).unwrap();
    let again = eval_json(&[
        "--baseline",
        base.to_str().unwrap(),
        "--tasks",
        "seg,depth",
        "--limit",
        "8",
    ]);
    assert_eq!(again["images"], 8);
    assert_eq!(again["tasks"].as_array().unwrap().len(), 2);
    let vs_const = eval_json(&["--constant", "--baseline", base.to_str().unwrap()]);
    assert!(vs_const["delta_m"].as_f64().unwrap() < -50.0, "{}", vs_const["delta_m"]);
}

#[test]
fn eval_rejects_bad_requests() {
    // Bad input exits 1; a missing or out-of-range option is a bad command line, exit 2.
    let fails_with = |code: i32, args: &[&str], needle: &str| {
        let out = cut()
            .current_dir(root())
            .args(["eval", "assets/demo.safetensors"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(stderr.contains(needle), "expected '{needle}' in {stderr}");
    };
    let fails = |args: &[&str], needle: &str| fails_with(1, args, needle);
    fails(
        &["--data", "assets/demo-data", "--tasks", "sn"],
        "unknown task 'sn' (the model has: seg, normal, depth)",
    );
    fails_with(2, &[], "--data DIR is required");
    fails_with(
        2,
        &["--data", "assets/demo-data", "--limit", "0"],
        "--limit must be positive",
    );
    fails_with(
        2,
        &["--data", "assets/demo-data", "--val-fraction", "1.5"],
        "--val-fraction 1.5 must be in [0, 1)",
    );
    fails(&["--data", "assets/nope"], "assets/nope: dataset folder does not exist");
    fails(
        &["--data", "assets/demo-data", "--index", "other.json"],
        "other.json: cannot read the dataset index",
    );
}

#[test]
fn readme_prune_command_runs_on_the_demo() {
    // The README's main command, shortened (fewer calibration batches and steps) to keep CI fast.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo.seg+depth.pruned.safetensors");
    let o = cut()
        .current_dir(root())
        .args([
            "prune",
            "--tasks",
            "seg,depth",
            "assets/demo.safetensors",
            "--data",
            "assets/demo-data",
            "--calib-batches",
            "4",
            "--finetune-steps",
            "20",
            "--val-every",
            "10",
            "--lr",
            "1e-4",
            "--packed",
            "--dtype",
            "f16",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(
        summary.contains("sparsity 89.") || summary.contains("sparsity 90."),
        "{summary}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("demo.seg+depth.pruned.report.json")).unwrap()).unwrap();
    let md = std::fs::read_to_string(dir.path().join("demo.seg+depth.pruned.report.md")).unwrap();
    assert!(md.starts_with("# cut prune report"));
    assert!(md.contains("| delta_m (selected tasks) |"));
    assert!(md.contains("| tasks | seg, normal, depth | seg, depth |"), "{md}");
    // At 90% the packed file is well under 20% of the dense pruned model.
    let kept: Vec<&serde_json::Value> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["status"] == "kept")
        .collect();
    let dense: u64 = kept.iter().map(|g| g["bytes_dense"].as_u64().unwrap()).sum();
    let file = std::fs::metadata(&out).unwrap().len();
    assert!((file as f64) < 0.2 * dense as f64, "packed {file} vs dense {dense}");
    assert_eq!(report["size"]["output_bytes"], file);
    assert_eq!(
        common::find(&report["groups"], "group", "head normal")["status"],
        "dropped"
    );
    // Fine-tuning from the pruned state improves on the unfine-tuned masks at this learning rate.
    let acc = &report["accuracy"];
    assert!(acc["delta_m"].as_f64().unwrap() >= acc["delta_m_before_finetune"].as_f64().unwrap());
    // Fidelity to the input model, per task: 90% of the weights are gone, so the outputs follow
    // the input's closely but not exactly.
    let agreement = common::metric(&acc["fidelity"], "seg", "agreement");
    let kl = common::metric(&acc["fidelity"], "seg", "kl");
    assert!((0.3..1.0).contains(&agreement) && kl > 0.0, "{}", acc["fidelity"]);
    let error = common::metric(&acc["fidelity"], "depth", "relative_l2");
    let cosine = common::metric(&acc["fidelity"], "depth", "cosine");
    assert!(
        error > 0.0 && error < 1.0 && cosine > 0.5 && cosine < 1.0,
        "{}",
        acc["fidelity"]
    );
    assert_eq!(report["settings"]["dtype"], "f16");
    // eval reads the packed f16 output and, on the same split, matches the report's accuracy (the
    // report scores the weights rounded to the output dtype).
    let out_eval = cut()
        .arg("eval")
        .arg(&out)
        .args(["--json", "--tasks", "depth", "--data"])
        .arg(root().join("assets/demo-data"))
        .output()
        .unwrap();
    assert!(out_eval.status.success());
    let ev: serde_json::Value = serde_json::from_slice(&out_eval.stdout).unwrap();
    let reported = common::metric(&report["accuracy"]["after"], "depth", "abs_err");
    let measured = common::metric(&ev["tasks"], "depth", "abs_err");
    assert!(
        (reported - measured).abs() < 1e-6,
        "report {reported} vs eval {measured}"
    );
    // `eval --reference` measures the report's fidelity from the files, and a model's fidelity
    // to itself is perfect.
    let against = |model: &Path| -> serde_json::Value {
        let o = cut()
            .arg("eval")
            .arg(model)
            .args([
                "--json",
                "--tasks",
                "seg,depth",
                "--reference",
                "assets/demo.safetensors",
                "--data",
            ])
            .arg(root().join("assets/demo-data"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["fidelity"].clone()
    };
    common::same_seg_depth_fidelity(&report["accuracy"]["fidelity"], &against(&out), 1e-6);
    let itself = against(&root().join("assets/demo.safetensors"));
    for (task, name, perfect) in [
        ("seg", "agreement", 1.0),
        ("seg", "kl", 0.0),
        ("depth", "relative_l2", 0.0),
        ("depth", "cosine", 1.0),
    ] {
        let v = common::metric(&itself, task, name);
        assert!((v - perfect).abs() < 1e-9, "{task} {name}: {v}");
    }
    let inspect = cut().arg("inspect").arg(&out).arg("--json").output().unwrap();
    let iv: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(iv["total"]["dtypes"][0], "f16");
}

fn text_eval_json(extra: &[&str]) -> serde_json::Value {
    eval_json_of("assets/text-demo.safetensors", "assets/text-data", extra)
}

/// The text demo (a shrunk pretrained MiniLM fine-tuned by cut) on its test split: within bands
/// around the README's figures, and far above the majority-label constant on every task.
#[test]
fn text_demo_is_trained_and_beats_constants() {
    let model = text_eval_json(&[]);
    assert_eq!(model["images"], 460);
    let (era, party, pos) = (
        metric(&model, "era", "accuracy"),
        metric(&model, "party", "accuracy"),
        metric(&model, "pos", "accuracy"),
    );
    // README: 0.554, 0.524, 0.968 (the model is built by scripts/setup-text-demo.sh).
    assert!((0.52..0.59).contains(&era), "era accuracy {era}");
    assert!((0.49..0.56).contains(&party), "party accuracy {party}");
    assert!((0.96..0.975).contains(&pos), "pos accuracy {pos}");
    let constant = text_eval_json(&["--constant"]);
    assert!(era > metric(&constant, "era", "accuracy") + 0.2);
    assert!(party > metric(&constant, "party", "accuracy") + 0.08);
    assert!(pos > metric(&constant, "pos", "accuracy") + 0.6);
    assert!(metric(&model, "party", "macro_f1") > 2.0 * metric(&constant, "party", "macro_f1"));
}
