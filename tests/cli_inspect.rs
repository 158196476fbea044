//! `cut inspect` and `cut new` as a user runs them, including every malformed-input case.

mod common;

use assert_cmd::Command;
use common::*;
use cut::checkpoint::{Checkpoint, DType};
use std::path::Path;

fn cut() -> Command {
    Command::cargo_bin("cut").unwrap()
}

/// Runs `cut inspect` on a bad file and checks the failure is one clear line naming the file.
fn fails_with(path: &Path, needle: &str) {
    let out = cut().arg("inspect").arg(path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains(needle), "expected '{needle}' in: {stderr}");
}

#[test]
fn inspect_reports_groups_and_savings() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_small(dir.path(), "m.safetensors", DType::F32);
    let out = cut()
        .arg("inspect")
        .arg(&path)
        .arg("--json")
        .arg("--input")
        .arg("3x64x64")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = v["groups"].as_array().unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g["group"].as_str().unwrap()).collect();
    assert_eq!(names, ["backbone", "head seg", "head normal", "head depth"]);

    // Hand count for the depth head: 4 branches of conv1 (16x16x3x3 + 16), conv2 (16x16 + 16), conv3 (1x16 + 1).
    let depth = &groups[3];
    assert_eq!(depth["params"], 4 * (16 * 16 * 9 + 16 + 16 * 16 + 16 + 16 + 1));
    // At 64x64 the head runs at 9x9: per branch 81 * (16*16*9 + 16*16 + 16*1) MACs.
    assert_eq!(depth["macs"], 4 * 81 * (16 * 16 * 9 + 16 * 16 + 16));
    assert_eq!(depth["bytes"], depth["params"].as_u64().unwrap() * 4);
    let total: u64 = groups.iter().map(|g| g["params"].as_u64().unwrap()).sum();
    assert_eq!(v["total"]["params"], total);
    assert_eq!(
        common::find(&v["drop_head_savings"], "task", "depth")["params"],
        depth["params"]
    );
    assert_eq!(v["total"]["zero_share"], 0.0);

    let out = cut().arg("inspect").arg(&path).arg("--tensors").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("dropping a head saves"), "{text}");
    assert!(text.contains("task3_fc1_c3.conv3.weight"), "{text}");
}

#[test]
fn inspect_counts_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let (model, mut params) = small_model();
    let _guard = tch::no_grad_guard();
    let _ = params.get_mut("backbone.conv1.weight").unwrap().zero_();
    let path = dir.path().join("z.safetensors");
    cut::checkpoint::writer::save_model(&path, &model, &params, DType::F16, false, None).unwrap();
    let out = cut().arg("inspect").arg(&path).arg("--json").output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let backbone = common::find(&v["groups"], "group", "backbone");
    assert_eq!(backbone["zeros"], 8 * 3 * 7 * 7);
    // The share is over the backbone's conv weights only.
    let weights = backbone["weights"].as_f64().unwrap();
    assert_eq!(
        backbone["zero_share"].as_f64().unwrap(),
        (8 * 3 * 7 * 7) as f64 / weights
    );
    assert_eq!(backbone["dtypes"][0], "f16");
}

#[test]
fn inspect_infers_reference_state_dicts() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_bare(dir.path(), "ref.safetensors");
    let out = cut()
        .arg("inspect")
        .arg(&path)
        .args(["--task-names", "seg,sn,depth"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("head sn"), "{stdout}");
    assert!(stdout.contains("graph inferred"), "{stdout}");
    assert!(stderr.contains("warning: task kinds guessed"), "{stderr}");
    let out = cut()
        .arg("inspect")
        .arg(&path)
        .args([
            "--task-names",
            "seg,sn,depth",
            "--task-kinds",
            "segmentation,normal,depth",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stderr.is_empty());
    let out = cut()
        .arg("inspect")
        .arg(&path)
        .args(["--task-kinds", "seg,wat,depth"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown task kind 'wat'"));
}

#[test]
fn new_writes_a_runnable_model_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("n.safetensors");
    let mut args = vec!["new", "--tasks", "a:segmentation:4,b:depth"];
    args.extend(common::TINY_SCENENET);
    args.push("-o");
    cut().args(&args).arg(&out_path).assert().success();
    let again = cut().args(&args).arg(&out_path).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists; pass --force"));
    cut().args(&args).arg(&out_path).arg("--force").assert().success();
    let out = cut().arg("inspect").arg(&out_path).arg("--json").output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(common::find(&v["tasks"], "name", "b")["kind"], "depth");
    assert!(v["provenance"]["command"].as_str().unwrap().contains("new --tasks"));
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails_with(&d.join("nope.safetensors"), "cannot open");
    fails_with(d, "is a directory");

    let short = d.join("short.safetensors");
    std::fs::write(&short, [1u8, 2, 3]).unwrap();
    fails_with(&short, "shorter than the 8-byte header length");

    let long_header = d.join("long.safetensors");
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(&long_header, bytes).unwrap();
    fails_with(&long_header, "header length runs past the end of the file");

    // A text file read as a safetensors header length declares gigabytes of header.
    let text = d.join("notes.safetensors");
    std::fs::write(&text, "# some notes, not a model\n").unwrap();
    fails_with(
        &text,
        "not a safetensors file? its first 8 bytes declare a header over 100 MB",
    );

    fails_with(
        &raw_file(d, "notjson.safetensors", "this is not json", 0),
        "not valid safetensors JSON",
    );
    let overlap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    fails_with(
        &raw_file(d, "overlap.safetensors", overlap, 12),
        "tensor 'b' starts at byte 4 of the data, where the tensors before it end at 8: it overlaps",
    );
    let past_end = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    fails_with(
        &raw_file(d, "pastend.safetensors", past_end, 8),
        "does not end where the file ends",
    );
    let wrong_size = r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    fails_with(
        &raw_file(d, "size.safetensors", wrong_size, 8),
        "tensor 'w' declares bytes 0..8",
    );
    let f64_tensor = r#"{"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#;
    fails_with(
        &raw_file(d, "f64.safetensors", f64_tensor, 8),
        "tensor 'x' has dtype F64, which cut does not handle",
    );
    let unknown = r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    fails_with(
        &raw_file(d, "unknown.safetensors", unknown, 4),
        "unknown.safetensors: no 'cut.graph' in the metadata, and the tensor names are not those of a model family cut knows (scenenet: no 'backbone.conv1.weight'; bert: Hugging Face encoder names",
    );

    // A graph that does not match its tensors: drop one tensor from a valid file's header.
    let (model, params) = small_model();
    let mut tensors: Vec<_> = model
        .graph
        .param_specs()
        .iter()
        .filter(|s| s.name != "backbone.bn1.weight")
        .map(|s| {
            let dt = if s.role == cut::graph::ParamRole::BnBatchesTracked {
                DType::I64
            } else {
                DType::F32
            };
            cut::checkpoint::format::TensorBytes::from_tensor(&s.name, &params[&s.name], dt).unwrap()
        })
        .collect();
    let meta = cut::checkpoint::metadata::model_metadata(&model, None).unwrap();
    let bytes = cut::checkpoint::format::serialize(&mut tensors, &meta).unwrap();
    let mismatch = d.join("mismatch.safetensors");
    std::fs::write(&mismatch, bytes).unwrap();
    fails_with(&mismatch, "'backbone.bn1.weight' missing (expected [8])");

    let broken_meta = r#"{"__metadata__":{"cut.graph":"{\"format\":1","cut.tasks":"[]"}}"#;
    fails_with(
        &raw_file(d, "meta.safetensors", broken_meta, 0),
        "metadata field 'cut.graph' is not JSON",
    );
}

#[test]
fn bench_reports_latency() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_small(dir.path(), "m.safetensors", DType::F32);
    let out = cut()
        .arg("bench")
        .arg(&path)
        .args([
            "--json", "--runs", "3", "--warmup", "1", "--batch", "2", "--input", "3x64x64", "--tasks", "depth",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runs"], 3);
    assert_eq!(v["tasks"], serde_json::json!(["depth"]));
    let median = v["median_ms"].as_f64().unwrap();
    assert!(median > 0.0 && v["min_ms"].as_f64().unwrap() <= median && median <= v["max_ms"].as_f64().unwrap());
    let ips = v["images_per_s"].as_f64().unwrap();
    assert!((ips - 2.0 / (median / 1000.0)).abs() < 1e-6 * ips);
    assert!(v["peak_memory_bytes"].as_u64().unwrap() > 0);
    // The small model's batch norms all follow a convolution read by nothing else.
    let norms = Checkpoint::open(&path)
        .unwrap()
        .model(&Default::default())
        .unwrap()
        .model
        .graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, cut::graph::Op::BatchNorm(_)))
        .count();
    assert!(norms > 0);
    assert_eq!(v["batch_norms_folded"], norms);
    assert_eq!(v["cuda_graph"], false);
    // A zero count is a bad command line (exit 2), like clap's own refusals.
    let o = cut().arg("bench").arg(&path).args(["--runs", "0"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "cut: error: --batch and --runs must be positive"
    );
    for (args, needle) in [
        (vec!["--tasks", "nope"], "unknown task 'nope'"),
        (vec!["--input", "4x64x64"], "the graph takes 3 input channels, not 4"),
        (
            vec!["--cuda-graph"],
            "CUDA graphs need a CUDA device; this benchmark runs on cpu",
        ),
    ] {
        let o = cut().arg("bench").arg(&path).args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(needle),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn bench_profile_times_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_small(dir.path(), "m.safetensors", DType::F32);
    // A profile times one model: with a baseline it is a bad command line (exit code 2).
    let o = cut()
        .arg("bench")
        .arg(&path)
        .args(["--profile", "--baseline"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be used with"));
    let graph = Checkpoint::open(&path)
        .unwrap()
        .model(&Default::default())
        .unwrap()
        .model
        .graph;
    let profile = |extra: &[&str]| -> serde_json::Value {
        let out = cut()
            .arg("bench")
            .arg(&path)
            .args(["--profile", "--json", "--runs", "3", "--warmup", "1", "--tasks", "seg"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Batch norms kept: exactly the nodes the seg output needs, in graph order, with MACs per conv.
    let v = profile(&["--keep-batch-norm"]);
    let needed = graph.needed_nodes(&["seg"]);
    let nodes = v["nodes"].as_array().unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n["node"].as_str().unwrap()).collect();
    let expected: Vec<&str> = graph
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .filter(|n| needed.contains(*n))
        .collect();
    assert_eq!(names, expected);
    let shapes = cut::graph::shapes::infer(&graph, graph.image_input().unwrap()).unwrap();
    let macs = cut::graph::shapes::macs(&graph, &shapes);
    for n in nodes {
        let name = n["node"].as_str().unwrap();
        assert_eq!(n["macs"].as_u64(), macs.get(name).copied(), "{name}");
        let ms = n["median_ms"].as_f64().unwrap();
        assert!(ms > 0.0 && ms.is_finite(), "{name}: {ms}");
    }
    assert!(nodes.iter().any(|n| n["op"] == "batch_norm"));
    assert_eq!(v["model"]["batch_norms_folded"], 0);
    // Planned memory: the f32 bytes of every tensor the seg nodes read (not the step counters).
    let planned = &v["model"]["planned_memory"];
    let seg_weights: usize = graph
        .param_specs()
        .iter()
        .filter(|p| needed.contains(&p.node) && p.role != cut::graph::ParamRole::BnBatchesTracked)
        .map(|p| p.numel() * 4)
        .sum();
    assert_eq!(planned["weight_bytes"].as_u64(), Some(seg_weights as u64));
    let peak = planned["activation_peak_bytes"].as_u64().unwrap();
    let input_bytes = graph.image_input().unwrap().iter().product::<usize>() * 4;
    assert!(peak > input_bytes as u64, "{planned}");
    // Activations scale with the batch.
    let v2 = profile(&["--keep-batch-norm", "--batch", "2"]);
    assert_eq!(
        v2["model"]["planned_memory"]["activation_peak_bytes"].as_u64(),
        Some(2 * peak)
    );
    // Folded (the default): no norm left, the same total MACs.
    let v = profile(&[]);
    let nodes = v["nodes"].as_array().unwrap();
    assert!(nodes.iter().all(|n| n["op"] != "batch_norm"));
    let total: u64 = nodes.iter().filter_map(|n| n["macs"].as_u64()).sum();
    let expected: u64 = macs.iter().filter(|(k, _)| needed.contains(*k)).map(|(_, m)| m).sum();
    assert_eq!(total, expected);
    // The text form names the slowest nodes.
    let out = cut()
        .arg("bench")
        .arg(&path)
        .args(["--profile", "--runs", "2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("slowest nodes") && text.contains("conv2d"), "{text}");
}

/// `cut new --config FILE` builds the family's model from its JSON configuration: the same tensors
/// and graph as the shape flags; an unknown family is a bad command line.
#[test]
fn new_builds_a_family_from_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut flags = vec!["--tasks", "a:segmentation:4,b:depth", "--input-size", "32x32"];
    flags.extend(common::TINY_SCENENET);
    cut()
        .arg("new")
        .args(flags)
        .arg("-o")
        .arg(d.join("flags.safetensors"))
        .assert()
        .success();
    let config = serde_json::json!({
        "in_channels": 3, "blocks": [1, 1, 1, 1], "widths": [8, 8, 8, 8], "strides": [1, 2, 1, 1],
        "dilations": [1, 1, 2, 4], "stem_width": 8, "head_width": 8, "rates": [6, 12, 18, 24],
        "dropout": 0.5, "input_hw": [32, 32],
        "tasks": [{"name": "a", "kind": "segmentation", "outputs": 4}, {"name": "b", "kind": "depth", "outputs": 1}]
    });
    std::fs::write(d.join("cfg.json"), config.to_string()).unwrap();
    cut()
        .args(["new", "--family", "scenenet", "--config"])
        .arg(d.join("cfg.json"))
        .arg("-o")
        .arg(d.join("config.safetensors"))
        .assert()
        .success();
    let (a, b) = (
        Checkpoint::open(d.join("flags.safetensors")).unwrap(),
        Checkpoint::open(d.join("config.safetensors")).unwrap(),
    );
    assert_eq!(a.metadata["cut.graph"], b.metadata["cut.graph"]);
    for name in a.tensors.keys() {
        let (x, y) = (
            a.tensor(name, tch::Device::Cpu).unwrap(),
            b.tensor(name, tch::Device::Cpu).unwrap(),
        );
        assert!(x.equal(&y), "{name}");
    }
    let o = cut()
        .args(["new", "--family", "gpt", "--config"])
        .arg(d.join("cfg.json"))
        .arg("-o")
        .arg(d.join("x.safetensors"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "cut: error: unknown model family 'gpt' (cut knows: scenenet, bert)"
    );
    std::fs::write(d.join("bad.json"), r#"{"blocks": 3}"#).unwrap();
    let o = cut()
        .args(["new", "--config"])
        .arg(d.join("bad.json"))
        .arg("-o")
        .arg(d.join("x.safetensors"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.json: not a SceneNet configuration"), "{err}");
    assert!(!d.join("x.safetensors").exists());
}

/// Every command that writes says so on stdout ("wrote ..."), and with --json prints one JSON
/// document there instead (before, new, train, export and data synth printed on stderr and had
/// no --json). The old spellings (`data synth OUT`, `--size`, `--input-size`) still work.
#[test]
fn writers_report_on_stdout_and_in_json() {
    let t = tempfile::tempdir().unwrap();
    let json_of = |args: &[&str]| -> serde_json::Value {
        let out = cut().args(args).arg("--json").output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    let p = |name: &str| t.path().join(name).display().to_string();
    let data = json_of(&[
        "data",
        "synth",
        "-o",
        &p("data"),
        "--train",
        "6",
        "--test",
        "2",
        "--input",
        "32x32",
    ]);
    assert_eq!((data["train"].as_u64(), data["height"].as_u64()), (Some(6), Some(32)));
    let small = [
        "--tasks",
        "s:segmentation:3,d:depth",
        "--blocks",
        "1,1,1,1",
        "--widths",
        "8,8,8,8",
    ];
    let new = json_of(
        &[
            &["new", "-o", &p("m.safetensors"), "--input", "32x32"][..],
            &small,
            &["--stem-width", "8", "--head-width", "8"],
        ]
        .concat(),
    );
    assert_eq!(new["wrote"], p("m.safetensors"));
    assert_eq!(new["tasks"], serde_json::json!(["s", "d"]));
    let train = json_of(&[
        "train",
        "--from",
        &p("m.safetensors"),
        "--data",
        &p("data"),
        "--steps",
        "2",
        "--val-every",
        "1",
        "--batch",
        "2",
        "-o",
        &p("t.safetensors"),
    ]);
    assert!(
        train["best_step"].is_u64() && train["log"].as_str().unwrap().ends_with("t.log.json"),
        "{train}"
    );
    let export = json_of(&["export", &p("t.safetensors"), "-o", &p("t.onnx"), "--input", "64x64"]);
    assert_eq!(
        (export["format"].as_str(), export["tasks"].as_array().map(Vec::len)),
        (Some("onnx"), Some(2))
    );
    // Without --json: one "wrote" line on stdout; the old spellings still parse.
    let out = cut()
        .args([
            "data",
            "synth",
            &p("old"),
            "--train",
            "2",
            "--test",
            "1",
            "--size",
            "32x32",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("wrote 2 training and 1 test scenes"));
    let out = cut()
        .args([&["new", "-o", &p("n.safetensors"), "--input-size", "32x32"][..], &small].concat())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("wrote {}", p("n.safetensors"))
    );
}

/// `--prunable` lists what channel pruning can narrow: on the tiny timm ViT, each block's heads
/// (3 of 16 channels) and MLP neurons, and why the rest stays whole (the residual stream, the
/// task output). The JSON and the table agree; without the flag neither lists it.
#[test]
fn inspect_lists_prunable_groups() {
    let vit = Path::new("tests/fixtures/onnx/timm_vit.onnx");
    let out = cut()
        .arg("inspect")
        .arg(vit)
        .args(["--prunable", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = v["prunable"].as_array().unwrap();
    let open: Vec<(&str, &str, u64)> = groups
        .iter()
        .filter(|g| g.get("fixed").is_none())
        .map(|g| {
            (
                g["layer"].as_str().unwrap(),
                g["unit"].as_str().unwrap(),
                g["units"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        open,
        [
            ("/blocks/blocks.0/attn/qkv/MatMul", "heads", 3),
            ("/blocks/blocks.0/mlp/fc1/MatMul", "neurons", 192),
            ("/blocks/blocks.1/attn/qkv/MatMul", "heads", 3),
            ("/blocks/blocks.1/mlp/fc1/MatMul", "neurons", 192),
        ]
    );
    let head = groups.iter().find(|g| g["layer"] == "/head/Gemm").unwrap();
    assert_eq!(head["fixed"], "output of task 'logits'");
    let table = cut().arg("inspect").arg(vit).arg("--prunable").output().unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("channel pruning: 4 of 7 groups prunable"), "{text}");
    assert!(text.contains("3 heads"), "{text}");
    let plain = cut().arg("inspect").arg(vit).arg("--json").output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert!(v.get("prunable").is_none());
}
