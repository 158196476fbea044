//! Pruning: scores by hand, fusion rules, the sparsity search, and `cut prune` end to end.

mod common;

use assert_cmd::Command;
use cut::checkpoint::{Checkpoint, DType, LoadOptions};
use cut::data::layout::write_sample_files;
use cut::data::Dataset;
use cut::graph::{image_sizes, Conv2d, Graph, GraphInput, GraphOutput, Model, Node, Op, TaskKind, TaskSpec};
use cut::prune::mask::{fuse, Fusion, MaskSearch};
use cut::prune::score::{self, Precision, Strategy};
use cut::prune::types::Sparsity;
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn cut() -> Command {
    Command::cargo_bin("cut").unwrap()
}

fn conv(name: &str, cin: usize, cout: usize) -> Op {
    Op::Conv2d(Conv2d {
        weight: format!("{name}.weight"),
        bias: None,
        in_channels: cin,
        out_channels: cout,
        kernel: [1, 1],
        stride: [1, 1],
        padding: [0, 0],
        dilation: [1, 1],
        groups: 1,
        relu: false,
        live_taps: None,
    })
}

/// input (3 ch) -> stem conv (2 ch) -> head conv (1 ch) = depth; a second head "other".
fn linear_model() -> Model {
    Model {
        tokenizer: None,
        graph: Graph {
            family: None,
            inputs: vec![GraphInput::image(3)],
            sizes: image_sizes(8, 8),
            nodes: vec![
                Node::new("input", &[], Op::Input),
                Node::new("stem", &["input"], conv("stem", 3, 2)),
                Node::new("head", &["stem"], conv("head", 2, 1)),
                Node::new("other", &["stem"], conv("other", 2, 1)),
            ],
            outputs: vec![
                GraphOutput {
                    task: "depth".into(),
                    node: "head".into(),
                },
                GraphOutput {
                    task: "other".into(),
                    node: "other".into(),
                },
            ],
        },
        tasks: vec![
            TaskSpec {
                name: "depth".into(),
                kind: TaskKind::Depth,
                outputs: 1,
                labels: None,
                distill: false,
            },
            TaskSpec {
                name: "other".into(),
                kind: TaskKind::Depth,
                outputs: 1,
                labels: None,
                distill: false,
            },
        ],
    }
}

/// A dataset of flat images: every pixel RGB (0, 0, 105), depth 100 m.
fn flat_dataset(root: &Path, n: usize) -> Dataset {
    let (h, w) = (8, 8);
    let mut index = cut::data::layout::DatasetIndex::default();
    for i in 0..n {
        let rgb: Vec<u8> = (0..h * w).flat_map(|_| [0u8, 0, 105]).collect();
        let files = write_sample_files(
            root,
            "train",
            i,
            h,
            w,
            &rgb,
            &vec![0u8; h * w],
            &vec![[127, 127, 0]; h * w],
            &vec![100f32; h * w],
        )
        .unwrap();
        index.train.push(files.clone());
        index.test.push(files);
    }
    std::fs::write(root.join("nyu_v2_3task.json"), serde_json::to_string(&index).unwrap()).unwrap();
    Dataset::open(root, None, &cut::data::layout::reference_normalisation()).unwrap()
}

/// Two calibration batches of two images (shuffle seed 0), on the CPU.
fn two_batches_of_two(items: cut::data::example::Samples) -> score::Calibration {
    score::Calibration {
        items,
        batches: 2,
        batch_size: 2,
        seed: 0,
        device: Device::Cpu,
    }
}

#[test]
fn snip_and_magnitude_scores_by_hand() {
    let t = tempfile::tempdir().unwrap();
    let ds = flat_dataset(t.path(), 4);
    let model = linear_model();
    let mut params = cut::graph::interpreter::Params::new();
    // Only the blue input channel (index 0 in BGR) feeds the stem: stem = (a x, b x) with a = 1, b = 2.
    params.insert(
        "stem.weight".into(),
        Tensor::from_slice(&[1f32, 0., 0., 2., 0., 0.]).view([2, 3, 1, 1]),
    );
    // head = c * s0 + d * s1 with c = 3, d = 0.5.
    params.insert(
        "head.weight".into(),
        Tensor::from_slice(&[3f32, 0.5]).view([1, 2, 1, 1]),
    );
    params.insert(
        "other.weight".into(),
        Tensor::from_slice(&[1f32, 1.]).view([1, 2, 1, 1]),
    );
    let tasks = vec![model.tasks[0].clone()];
    let depth_only = model.keep_tasks(&["depth"]);

    // pred = (ac + bd) x with x = 105 - 104.007 > 0, far below the 100 m label, so dL/dpred = -1/64 per
    // pixel and |w dL/dw| is |a c x|, |b d x| for both the stem weight and the head weight it feeds.
    // Normalised by their sum 2 (3 + 1) |x|: 3/8, 1/8, 3/8, 1/8.
    let items = ds.split(cut::data::Split::Train, 0.0).unwrap();
    for strategy in [Strategy::Shared, Strategy::PerTask] {
        let s = score::snip(
            &depth_only,
            &params,
            &tasks,
            two_batches_of_two(items.clone()),
            strategy,
            Precision::F32,
            |_| {},
        )
        .unwrap();
        let d = &s["depth"];
        let stem: Vec<f32> = Vec::try_from(d["stem.weight"].flatten(0, -1)).unwrap();
        let head: Vec<f32> = Vec::try_from(d["head.weight"].flatten(0, -1)).unwrap();
        let expect_stem = [0.375, 0.0, 0.0, 0.125, 0.0, 0.0];
        for (got, want) in stem.iter().zip(expect_stem) {
            assert!((got - want).abs() < 1e-5, "{strategy:?} stem {stem:?}");
        }
        assert!(
            (head[0] - 0.375).abs() < 1e-5 && (head[1] - 0.125).abs() < 1e-5,
            "{strategy:?} head {head:?}"
        );
        assert!(!d.contains_key("other.weight"), "a dropped head is not scored");
    }
    // bf16 arithmetic moves these scores by at most bf16's rounding (3 significant digits).
    let s = score::snip(
        &depth_only,
        &params,
        &tasks,
        two_batches_of_two(items.clone()),
        Strategy::Shared,
        Precision::Bf16,
        |_| {},
    )
    .unwrap();
    let head: Vec<f32> = Vec::try_from(s["depth"]["head.weight"].flatten(0, -1)).unwrap();
    assert!(
        (head[0] - 0.375).abs() < 5e-3 && (head[1] - 0.125).abs() < 5e-3,
        "bf16 head {head:?}"
    );
    // Magnitude: |w| / sum = (1, 0, 0, 2, 0, 0, 3, 0.5) / 6.5.
    let m = score::magnitude(&depth_only, &params, &tasks);
    assert!((m["depth"]["head.weight"].double_value(&[0, 0, 0, 0]) - 3.0 / 6.5).abs() < 1e-6);
    assert!((m["depth"]["stem.weight"].double_value(&[1, 0, 0, 0]) - 2.0 / 6.5).abs() < 1e-6);
}

#[test]
fn taylor_channel_scores_by_hand() {
    let t = tempfile::tempdir().unwrap();
    let ds = flat_dataset(t.path(), 4);
    let mut model = linear_model().keep_tasks(&["depth"]);
    for node in &mut model.graph.nodes {
        if let (true, Op::Conv2d(c)) = (node.name == "stem", &mut node.op) {
            c.bias = Some("stem.bias".into());
        }
    }
    let mut params = cut::graph::interpreter::Params::new();
    // Input (BGR, mean subtracted) x = (105 - 104.00699, -116.66877, -122.67892).
    // stem channel 0 = x_b + 0.5 = 1.49301, channel 1 = x_g - x_r - 2 = 4.01015.
    params.insert(
        "stem.weight".into(),
        Tensor::from_slice(&[1f32, 0., 0., 0., 1., -1.]).view([2, 3, 1, 1]),
    );
    params.insert("stem.bias".into(), Tensor::from_slice(&[0.5f32, -2.]));
    params.insert(
        "head.weight".into(),
        Tensor::from_slice(&[3f32, 0.5]).view([1, 2, 1, 1]),
    );
    let groups = cut::prune::channels::channel_groups(&model.graph).unwrap();
    let stem = groups.iter().position(|g| g.producers == ["stem"]).unwrap();
    let items = ds.split(cut::data::Split::Train, 0.0).unwrap();
    let s = score::taylor(
        &model,
        &params,
        &model.tasks,
        &groups,
        two_batches_of_two(items),
        |_| {},
    )
    .unwrap();
    assert_eq!(
        s["depth"].len(),
        1,
        "only the stem's group is prunable: {:?}",
        s["depth"]
    );
    // pred = 3 s0 + 0.5 s1 = 6.48 lies below the 100 m label everywhere, so the loss (mean of
    // 100 - pred over 2 x 64 pixels per batch) is linear: dL/ds0 = -3/128, dL/ds1 = -0.5/128 per pixel.
    // Per image |sum over 64 pixels of dL/ds * (s - bias)|: 1.5 * 0.99301 and 0.25 * 6.01015; four
    // images. That is exactly how much the loss rises when the channel's weights are zeroed.
    let got = &s["depth"][&stem];
    let want = [4.0 * 1.5 * 0.99301, 4.0 * 0.25 * 6.01015];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-3, "{got:?} against {want:?}");
    }
    // Snip's per-weight scores rank the same channels the other way round: channel 1's weights are
    // large against a large input, though their effects nearly cancel.
    let snip = score::snip(
        &model,
        &params,
        &model.tasks,
        two_batches_of_two(ds.split(cut::data::Split::Train, 0.0).unwrap()),
        Strategy::Shared,
        Precision::F32,
        |_| {},
    )
    .unwrap();
    let aggregated = cut::prune::channel_select::channel_scores_from_weights(&model.graph, &groups, &snip).unwrap();
    let a = &aggregated["depth"][&stem];
    assert!(a[1] > 5.0 * a[0], "{a:?}");
}

#[test]
fn fusion_rules_by_hand() {
    let a = Tensor::from_slice(&[true, true, false, false, true]);
    let b = Tensor::from_slice(&[true, false, true, false, false]);
    let c = Tensor::from_slice(&[true, false, false, false, true]);
    let got = |needed| {
        Vec::<bool>::try_from(fuse(&[a.shallow_clone(), b.shallow_clone(), c.shallow_clone()], needed)).unwrap()
    };
    // Votes per weight: 3, 1, 1, 0, 2.
    assert_eq!(
        got(Fusion::Union.needed_votes(3, None).unwrap()),
        [true, true, true, false, true]
    );
    assert_eq!(
        got(Fusion::Vote.needed_votes(3, None).unwrap()),
        [true, false, false, false, true]
    );
    assert_eq!(
        got(Fusion::Intersection.needed_votes(3, None).unwrap()),
        [true, false, false, false, false]
    );
    assert_eq!(
        Fusion::Vote.needed_votes(2, None).unwrap(),
        2,
        "with two tasks the reference's vote is an intersection"
    );
    assert_eq!(Fusion::Vote.needed_votes(1, None).unwrap(), 1);
    assert_eq!(Fusion::Vote.needed_votes(3, Some(3)).unwrap(), 3);
    assert!(Fusion::Vote.needed_votes(2, Some(3)).is_err());
}

#[test]
fn sparsity_target_is_reached_within_tolerance() {
    let (model, params) = common::small_model();
    let tasks: Vec<TaskSpec> = model.tasks[..2].to_vec();
    let kept = model.keep_tasks(&["seg", "normal"]);
    let scores = score::magnitude(&kept, &params, &tasks);
    for (fusion, target) in [(Fusion::Vote, 0.9), (Fusion::Union, 0.5), (Fusion::Intersection, 0.3)] {
        let search = MaskSearch::new(&kept, &scores, fusion, None).unwrap();
        let r = search.search(Sparsity::new(target).unwrap(), 0.005).unwrap();
        assert!((r.sparsity - target).abs() <= 0.005, "{fusion:?}: {}", r.sparsity);
        let (zeros, total) = r.masks.values().fold((0i64, 0i64), |(z, n), m| {
            (z + m.eq(0.0).sum(Kind::Int64).int64_value(&[]), n + m.numel() as i64)
        });
        assert!((zeros as f64 / total as f64 - r.sparsity).abs() < 1e-12);
    }
    for outside in [1.0, 0.0, -0.5, f64::NAN] {
        let err = Sparsity::new(outside).unwrap_err();
        assert!(err.to_string().contains("must be strictly between 0 and 1"), "{err}");
    }
}

fn small_file(dir: &Path) -> std::path::PathBuf {
    common::write_small(dir, "m.safetensors", DType::F32)
}

fn small_data(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("data");
    cut::data::synth::write_dataset(
        &root,
        &cut::data::synth::SynthConfig {
            train: 10,
            test: 3,
            height: 32,
            width: 32,
            seed: 2,
        },
        2,
    )
    .unwrap();
    root
}

#[test]
fn prune_drops_heads_keeps_zeros_and_is_reproducible() {
    let t = tempfile::tempdir().unwrap();
    let model = small_file(t.path());
    let data = small_data(t.path());
    let run = |out: &str, steps: &str| -> serde_json::Value {
        let o = cut()
            .arg("prune")
            .arg(&model)
            .args([
                "--tasks",
                "seg,depth",
                "--sparsity",
                "0.8",
                "--calib-batches",
                "2",
                "--batch",
                "4",
                "--finetune-steps",
                steps,
                "--val-every",
                "2",
                "--lr",
                "1e-3",
                "--val-fraction",
                "0.2",
                "--json",
                "--force",
                "-o",
            ])
            .arg(t.path().join(out))
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    // The same command twice (provenance records the command line, so the output path is the same).
    let _ = run("a.safetensors", "4");
    let first = std::fs::read(t.path().join("a.safetensors")).unwrap();
    let report = run("a.safetensors", "4");
    let second = std::fs::read(t.path().join("a.safetensors")).unwrap();
    assert!(first == second, "same seed, different bytes");
    let _ = run("c.safetensors", "0");
    assert!(t.path().join("a.report.json").exists() && t.path().join("a.report.md").exists());
    // Without fine-tuning the report gives one delta_m and says so; with it, after and before.
    let md = |stem: &str| std::fs::read_to_string(t.path().join(format!("{stem}.report.md"))).unwrap();
    assert!(
        md("c").contains("% (no fine-tuning) (positive is better)"),
        "{}",
        md("c")
    );
    assert!(md("a").contains("% after fine-tuning ("), "{}", md("a"));

    let ckpt = Checkpoint::open(t.path().join("a.safetensors")).unwrap();
    assert!(
        ckpt.tensors.keys().all(|n| !n.starts_with("task2_")),
        "the normal head is gone"
    );
    let loaded = ckpt.model(&LoadOptions::default()).unwrap().model;
    assert_eq!(loaded.task_names(), ["seg", "depth"]);
    let reached = report["sparsity"]["reached"].as_f64().unwrap();
    assert!((reached - 0.8).abs() <= 0.005, "{reached}");
    assert_eq!(report["settings"]["dropped_tasks"][0], "normal");
    // The report's metrics are what `cut eval` measures on the written file.
    let o = cut()
        .arg("eval")
        .arg(t.path().join("a.safetensors"))
        .arg("--data")
        .arg(&data)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let eval: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for (task, name) in [
        ("seg", "miou"),
        ("seg", "pixel_acc"),
        ("depth", "abs_err"),
        ("depth", "rel_err"),
    ] {
        let (reported, measured) = (
            common::metric(&report["accuracy"]["after"], task, name),
            common::metric(&eval["tasks"], task, name),
        );
        assert!(
            (reported - measured).abs() < 1e-9,
            "{task} {name}: {reported} vs {measured}"
        );
    }

    // Fine-tuning changed weights but not which ones are zero.
    let c = Checkpoint::open(t.path().join("c.safetensors")).unwrap();
    let mut moved = false;
    for spec in loaded
        .graph
        .param_specs()
        .iter()
        .filter(|s| s.role.is_prunable_weight())
    {
        let wa = ckpt.tensor(&spec.name, Device::Cpu).unwrap();
        let wc = c.tensor(&spec.name, Device::Cpu).unwrap();
        assert!(wa.eq(0.0).equal(&wc.eq(0.0)), "{}: zero pattern changed", spec.name);
        moved |= !wa.equal(&wc);
    }
    // From random weights the validation loss falls, so a step after 0 is selected and the output
    // holds fine-tuned weights: the selected step is the logged one with the lowest validation loss.
    let log = report["finetune_log"].as_array().unwrap();
    let best_logged = log
        .iter()
        .filter_map(|e| Some((e["step"].as_u64()?, e["val_total"].as_f64()?)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap()
        .0;
    assert!(best_logged > 0, "{log:?}");
    assert_eq!(report["finetune_best_step"].as_u64(), Some(best_logged));
    assert!(moved, "the selected step's weights differ from the unfine-tuned ones");

    // The report's sparsity is what the file holds.
    let out = cut()
        .arg("inspect")
        .arg(t.path().join("a.safetensors"))
        .arg("--json")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total"]["zero_share"].as_f64().unwrap(), reached);
}

#[test]
fn packed_output_round_trips_exactly() {
    let t = tempfile::tempdir().unwrap();
    let model = small_file(t.path());
    for (name, packed) in [("dense.safetensors", false), ("packed.safetensors", true)] {
        let mut cmd = cut();
        cmd.arg("prune")
            .arg(&model)
            .args([
                "--tasks",
                "depth",
                "--criterion",
                "magnitude",
                "--sparsity",
                "0.9",
                "-o",
            ])
            .arg(t.path().join(name));
        if packed {
            cmd.arg("--packed");
        }
        cmd.assert().success();
    }
    let dense = Checkpoint::open(t.path().join("dense.safetensors")).unwrap();
    let packed = Checkpoint::open(t.path().join("packed.safetensors")).unwrap();
    let model = packed.model(&LoadOptions::default()).unwrap().model;
    for spec in model.graph.param_specs() {
        let a = dense.tensor(&spec.name, Device::Cpu).unwrap();
        let b = packed.tensor(&spec.name, Device::Cpu).unwrap();
        assert!(a.equal(&b), "{}", spec.name);
    }
    // Every command reads it: inspect counts its zeros from the masks.
    let out = cut()
        .arg("inspect")
        .arg(t.path().join("packed.safetensors"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sparsity = v["total"]["zero_share"].as_f64().unwrap();
    assert!((sparsity - 0.9).abs() <= 0.005, "{sparsity}");

    // Pack and unpack directly, with a length that is not a multiple of 8.
    let w = Tensor::from_slice(&[0f32, 1.5, 0., 0., -2., 0., 0., 0., 0., 3., 0.]).view([1, 11]);
    let (mask, values, info) = cut::checkpoint::packed::pack("w", &w, DType::F32).unwrap();
    assert_eq!(mask.bytes().unwrap(), vec![0b0001_0010, 0b0000_0010]);
    assert_eq!(values.shape, [3]);
    let back = cut::checkpoint::packed::unpack(
        &mask.bytes().unwrap(),
        &values.bytes().unwrap(),
        3,
        &[1, 11],
        Kind::Float,
    )
    .unwrap();
    assert!(back.equal(&w));
    assert_eq!(info.shape, [1, 11]);
}

/// `cut prune --tasks a,b MODEL` with no other flag: magnitude scores (said in one warning), no
/// fine-tuning, accuracy not measured, the default output beside the input, and a summary that
/// gives the packed size beside the dense one.
#[test]
fn headline_command_runs_without_data() {
    let t = tempfile::tempdir().unwrap();
    let model = small_file(t.path());
    let o = cut()
        .arg("prune")
        .arg("--tasks")
        .arg("seg,depth")
        .arg(&model)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "cut: warning: no --data: scoring by weight magnitude (--criterion magnitude), no fine-tuning, accuracy not measured"
    );
    let first = stdout.lines().next().unwrap();
    assert!(
        first.contains(" on disk (tensors ") && first.ends_with(" with --packed)"),
        "{first}"
    );
    assert!(stdout.contains("accuracy not measured (no --data)"), "{stdout}");
    let out = t.path().join("m.seg+depth.weight90.safetensors");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path().join("m.seg+depth.weight90.report.json")).unwrap()).unwrap();
    assert_eq!(report["settings"]["criterion"], "magnitude");
    assert_eq!(report["settings"]["finetune_steps"], 0);
    assert!(report["accuracy"].is_null());
    // The default is exactly --criterion magnitude: the same tensors.
    let explicit = t.path().join("explicit.safetensors");
    cut()
        .arg("prune")
        .args(["--tasks", "seg,depth", "--criterion", "magnitude", "-o"])
        .arg(&explicit)
        .arg(&model)
        .assert()
        .success();
    let (a, b) = (Checkpoint::open(&out).unwrap(), Checkpoint::open(&explicit).unwrap());
    let pruned = a.model(&LoadOptions::default()).unwrap().model;
    for spec in pruned.graph.param_specs() {
        let (x, y) = (
            a.tensor(&spec.name, Device::Cpu).unwrap(),
            b.tensor(&spec.name, Device::Cpu).unwrap(),
        );
        assert!(x.equal(&y), "{}", spec.name);
    }
}

#[test]
fn bad_prune_input_fails_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let model = small_file(t.path());
    let data = small_data(t.path());
    // Bad input exits 1; a bad option value is a bad command line and exits 2, as clap's own do.
    let fails_with = |code: i32, args: &[&str], needle: &str| {
        let o = cut().arg("prune").arg(&model).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: expected '{needle}' in {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
    };
    let fails = |args: &[&str], needle: &str| fails_with(1, args, needle);
    let usage = |args: &[&str], needle: &str| fails_with(2, args, needle);
    let d = data.to_str().unwrap();
    fails(&["--tasks", ""], "no tasks given (the model has: seg, normal, depth)");
    fails(
        &["--tasks", "seg,wat"],
        "unknown task 'wat' (the model has: seg, normal, depth)",
    );
    fails(&["--tasks", "seg,seg"], "task 'seg' is given twice");
    usage(
        &["--tasks", "seg", "--sparsity", "1", "--data", d],
        "--sparsity 1 must be strictly between 0 and 1",
    );
    usage(
        &["--tasks", "seg", "--sparsity", "0", "--data", d],
        "must be strictly between 0 and 1",
    );
    usage(
        &["--tasks", "seg", "--criterion", "snip"],
        "--criterion snip scores with calibration data",
    );
    usage(
        &["--tasks", "seg", "--criterion", "taylor", "--data", d],
        "--criterion taylor scores whole channels: use it with --granularity channel",
    );
    usage(
        &["--tasks", "seg", "--criterion", "taylor", "--granularity", "channel"],
        "--criterion taylor scores with calibration data",
    );
    // Training options, checked before any work (a NaN learning rate reached libtorch before).
    for (args, needle) in [
        (&["--lr", "NaN"][..], "--lr NaN must be a finite number >= 0"),
        (&["--lr=-1"][..], "--lr -1 must be a finite number >= 0"),
        (&["--gamma", "inf"][..], "--gamma inf must be a finite number >= 0"),
        (
            &["--weight-decay=-0.5"][..],
            "--weight-decay -0.5 must be a finite number >= 0",
        ),
        (&["--batch", "0"][..], "--batch must be at least 1"),
        (&["--step-size", "0"][..], "--step-size must be at least 1"),
        (&["--val-every", "0"][..], "--val-every must be at least 1"),
        (&["--lambdas", "seg=1,seg=2"][..], "--lambdas names task 'seg' twice"),
        (&["--lambdas", "seg=x"][..], "--lambdas 'seg=x': 'x' is not a number"),
    ] {
        let mut all = vec!["--tasks", "seg", "--data", d];
        all.extend_from_slice(args);
        usage(&all, needle);
    }
    let missing = t.path().join("nope/out.safetensors");
    fails(
        &[
            "--tasks",
            "seg",
            "--criterion",
            "magnitude",
            "-o",
            missing.to_str().unwrap(),
        ],
        "does not exist",
    );
    fails(
        &[
            "--tasks",
            "seg",
            "--criterion",
            "magnitude",
            "-o",
            model.to_str().unwrap(),
        ],
        "refusing to overwrite the input",
    );
    assert!(
        !t.path().join("m.seg.weight90.safetensors").exists(),
        "no output after a failure"
    );

    // A task whose kind the dataset has no label for.
    let cls = t.path().join("cls.safetensors");
    cut()
        .args(["new", "--tasks", "a:classification:3,b:depth"])
        .args(common::TINY_SCENENET)
        .arg("-o")
        .arg(&cls)
        .assert()
        .success();
    let o = cut()
        .arg("prune")
        .arg(&cls)
        .args(["--tasks", "a", "--data", d])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the dataset has no label for task 'a' (classification)"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A prune of the small model to seg,depth with `steps` fine-tuning steps, writing `out/m.*`, as
/// a child process whose stderr is captured.
fn spawn_prune(model: &Path, data: &Path, out: &Path, steps: &str) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("cut"))
        .arg("prune")
        .arg(model)
        .args([
            "--tasks",
            "seg,depth",
            "--finetune-steps",
            steps,
            "--val-every",
            "200",
            "-o",
        ])
        .arg(out.join("m.safetensors"))
        .arg("--data")
        .arg(data)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGTERM during a prune: the handler removes what was staged and exits 130 (a process the
/// signal killed outright would report no code); no output and no temporary is left.
#[test]
fn a_terminated_prune_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let model = small_file(t.path());
    let data = small_data(t.path());
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut child = spawn_prune(&model, &data, &out, "100000");
    // Long enough for the run to be well under way (loading, scoring, fine-tuning).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "the run ended before the signal");
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cut: interrupted"));
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Labels the model has no class for are counted and said (the synthetic data has 12 classes, the
/// small model 5), in the text and in the JSON, instead of silently left out.
#[test]
fn eval_warns_about_labels_outside_the_classes() {
    let t = tempfile::tempdir().unwrap();
    let model = small_file(t.path());
    let data = small_data(t.path());
    let o = cut()
        .arg("eval")
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    let warning = stderr
        .lines()
        .find(|l| l.starts_with("cut: warning: task 'seg': "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        warning.ends_with("labelled pixels hold a class at or above the model's 5 (or below 0) and were not scored"),
        "{warning}"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let seg = common::find(&v["tasks"], "task", "seg");
    let count: u64 = warning["cut: warning: task 'seg': ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(count > 0);
    assert_eq!(
        seg["warnings"][0].as_str().unwrap(),
        &warning["cut: warning: task 'seg': ".len()..]
    );
    assert!(common::find(&v["tasks"], "task", "depth").get("warnings").is_none());
}

/// A failure after the model is built: while the run works, a directory appears where its
/// Markdown report goes. The commit then fails on that report, and the model and JSON report it
/// had already placed are removed again: the run leaves nothing of its own.
#[test]
fn a_failure_after_the_model_is_built_leaves_no_file() {
    let t = tempfile::tempdir().unwrap();
    let model = small_file(t.path());
    let data = small_data(t.path());
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let blocker = out.join("m.report.md");
    let child = spawn_prune(&model, &data, &out, "600");
    // Past the start-up checks (well under a second), well before 600 steps end (several seconds).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    std::fs::create_dir(&blocker).unwrap();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("m.report.md: cannot move into place"), "{stderr}");
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    left.sort();
    assert_eq!(left, ["m.report.md"], "only the directory that blocked it");
    assert!(blocker.is_dir());
}
