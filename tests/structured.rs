//! Physical channel removal: equivalence with the zeroed model, bias folding, round trips.

use cut::checkpoint::{writer, Checkpoint, DType, LoadOptions};
use cut::graph::interpreter::{forward, Mode, Params};
use cut::graph::{image_sizes, BatchNorm, Conv2d, Graph, GraphInput, GraphOutput, Model, Node, Op, TaskKind, TaskSpec};
use cut::prune::channels::{channel_groups, ChannelGroup};
use cut::prune::structured::{shrink, zero_removed};
use tch::{Device, Kind, Tensor};

fn conv(name: &str, cin: usize, cout: usize, k: usize, bias: bool) -> Op {
    Op::Conv2d(Conv2d {
        weight: format!("{name}.weight"),
        bias: bias.then(|| format!("{name}.bias")),
        in_channels: cin,
        out_channels: cout,
        kernel: [k, k],
        stride: [1, 1],
        padding: [k / 2, k / 2],
        dilation: [1, 1],
        groups: 1,
        relu: false,
        live_taps: None,
    })
}

fn bn(name: &str, c: usize) -> Op {
    Op::BatchNorm(BatchNorm {
        channels: c,
        weight: Some(format!("{name}.weight")),
        bias: Some(format!("{name}.bias")),
        running_mean: format!("{name}.running_mean"),
        running_var: format!("{name}.running_var"),
        num_batches_tracked: None,
        eps: 1e-5,
    })
}

/// input -> a (3x3) -> bn -> relu -> {b (k x k, no bias) -> output t ; r: add(relu, c (1x1)) -> d (1x1) -> output u}
fn graph(consumer_kernel: usize) -> Model {
    let graph = Graph {
        family: None,
        inputs: vec![GraphInput::image(3)],
        sizes: image_sizes(12, 12),
        nodes: vec![
            Node::new("input", &[], Op::Input),
            Node::new("a", &["input"], conv("a", 3, 6, 3, false)),
            Node::new("bn", &["a"], bn("bn", 6)),
            Node::new("relu", &["bn"], Op::Relu),
            Node::new("b", &["relu"], conv("b", 6, 2, consumer_kernel, false)),
            Node::new("c", &["relu"], conv("c", 6, 6, 1, true)),
            Node::new("r", &["relu", "c"], Op::Add),
            Node::new("d", &["r"], conv("d", 6, 1, 1, true)),
        ],
        outputs: vec![
            GraphOutput {
                task: "t".into(),
                node: "b".into(),
            },
            GraphOutput {
                task: "u".into(),
                node: "d".into(),
            },
        ],
    };
    let tasks = vec![
        TaskSpec {
            name: "t".into(),
            kind: TaskKind::Normal,
            outputs: 2,
            labels: None,
            distill: false,
        },
        TaskSpec {
            name: "u".into(),
            kind: TaskKind::Depth,
            outputs: 1,
            labels: None,
            distill: false,
        },
    ];
    Model {
        graph,
        tasks,
        tokenizer: None,
    }
}

fn params(model: &Model, beta: f64) -> Params {
    let mut p = cut::graph::init::init_params(&model.graph, 3, Device::Cpu);
    let _guard = tch::no_grad_guard();
    // Non-trivial batch norm: the removed channels' constant is relu(beta - gamma * mean / sqrt(var + eps)).
    p.insert(
        "bn.running_mean".into(),
        Tensor::from_slice(&[0.1f32, -0.2, 0.3, 0.0, 0.5, -0.1]),
    );
    p.insert(
        "bn.running_var".into(),
        Tensor::from_slice(&[1.0f32, 2.0, 0.5, 1.5, 1.0, 0.8]),
    );
    p.insert("bn.bias".into(), Tensor::full([6], beta, (Kind::Float, Device::Cpu)));
    p.insert(
        "c.bias".into(),
        Tensor::from_slice(&[0.3f32, -0.4, 0.2, 0.1, 0.6, -0.2]),
    );
    p
}

fn max_diff(a: &Model, pa: &Params, b: &Model, pb: &Params, x: &Tensor) -> f64 {
    let tasks: Vec<&str> = a.task_names();
    let oa = forward(&a.graph, pa, x, &tasks, Mode::Eval).unwrap();
    let ob = forward(&b.graph, pb, x, &tasks, Mode::Eval).unwrap();
    tasks
        .iter()
        .map(|t| (&oa[*t] - &ob[*t]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

#[test]
fn unpadded_consumers_fold_exactly() {
    let model = graph(1);
    let p = params(&model, 0.7);
    let groups = channel_groups(&model.graph).unwrap();
    let gi = groups
        .iter()
        .position(|g| g.producers.contains(&"a".to_string()))
        .unwrap();
    // The residual ties a's and c's outputs; b, c and d read it.
    assert_eq!(groups[gi].producers, ["a", "c"]);
    assert_eq!(groups[gi].consumers, ["b", "c", "d"]);
    let mut keep = vec![None; groups.len()];
    keep[gi] = Some(vec![0, 2, 3, 5]);
    let shrunk = shrink(&model, &p, &groups, &keep).unwrap();
    assert!(shrunk.inexact.is_empty());
    let zeroed = zero_removed(&model, &p, &groups, &keep).unwrap();
    let x = Tensor::randn([2, 3, 12, 12], (Kind::Float, Device::Cpu)) * 3.0;
    let d = max_diff(&model, &zeroed, &shrunk.model, &shrunk.params, &x);
    assert!(d < 1e-5, "max difference {d}");
    // b had no bias; it gains one, named after its weight.
    assert_eq!(shrunk.params["b.bias"].size(), [2]);
    assert_eq!(shrunk.params["a.weight"].size(), [4, 3, 3, 3]);
    assert_eq!(shrunk.params["c.weight"].size(), [4, 4, 1, 1]);
    assert_eq!(shrunk.params["bn.running_var"].size(), [4]);
    // The constants were not zero, so folding mattered: without it the outputs differ.
    let mut unfolded = shrunk
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.copy()))
        .collect::<Params>();
    let _ = unfolded.get_mut("b.bias").unwrap().zero_();
    assert!(max_diff(&model, &zeroed, &shrunk.model, &unfolded, &x) > 1e-3);
}

#[test]
fn padded_consumers_are_exact_only_with_zero_constants() {
    let model = graph(3);
    let groups = channel_groups(&model.graph).unwrap();
    let gi = groups
        .iter()
        .position(|g| g.producers.contains(&"a".to_string()))
        .unwrap();
    let mut keep = vec![None; groups.len()];
    keep[gi] = Some(vec![1, 4]);
    let x = Tensor::randn([1, 3, 12, 12], (Kind::Float, Device::Cpu)) * 3.0;
    // A positive batch-norm shift leaves positive constants: b (3x3, padded) is flagged.
    let p = params(&model, 0.7);
    let shrunk = shrink(&model, &p, &groups, &keep).unwrap();
    assert_eq!(shrunk.inexact, ["b"]);
    // A strongly negative shift: the ReLU zeroes the constants before b; the residual branch still
    // carries c's bias, but d is 1x1. Everything is exact.
    let mut p = params(&model, -50.0);
    p.insert("c.bias".into(), Tensor::from_slice(&[-1f32, -1., -1., -1., -1., -1.]));
    let shrunk = shrink(&model, &p, &groups, &keep).unwrap();
    let zeroed = zero_removed(&model, &p, &groups, &keep).unwrap();
    assert!(shrunk.inexact.is_empty(), "{:?}", shrunk.inexact);
    let d = max_diff(&model, &zeroed, &shrunk.model, &shrunk.params, &x);
    assert!(d < 1e-5, "max difference {d}");
}

#[test]
fn demo_heads_shrink_exactly_and_round_trip() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ckpt = Checkpoint::open(root.join("assets/demo.safetensors")).unwrap();
    let model = ckpt.model(&LoadOptions::default()).unwrap().model;
    let p = ckpt.load_params(&model, Device::Cpu).unwrap();
    let groups = channel_groups(&model.graph).unwrap();
    // Halve every head's hidden layers (their consumers are 1x1: folds are exact).
    let keep: Vec<Option<Vec<i64>>> = groups
        .iter()
        .map(|g| {
            (g.prunable() && g.producers.iter().all(|p| p.starts_with("task")))
                .then(|| (0..g.channels as i64).step_by(2).collect())
        })
        .collect();
    assert_eq!(keep.iter().filter(|k| k.is_some()).count(), 3 * 4 * 2);
    let shrunk = shrink(&model, &p, &groups, &keep).unwrap();
    assert!(shrunk.inexact.is_empty());
    let zeroed = zero_removed(&model, &p, &groups, &keep).unwrap();
    let x = Tensor::randn([2, 3, 96, 128], (Kind::Float, Device::Cpu)) * 50.0;
    let d = max_diff(&model, &zeroed, &shrunk.model, &shrunk.params, &x);
    assert!(d < 1e-4, "max difference {d}");

    // A plain safetensors file with the original names and smaller shapes, readable by every command.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("narrow.safetensors");
    writer::save_model(&out, &shrunk.model, &shrunk.params, DType::F32, false, None).unwrap();
    let back = Checkpoint::open(&out).unwrap();
    assert_eq!(back.entry("task1_fc1_c0.conv2.weight").unwrap().shape, [24, 24, 1, 1]);
    assert!(
        std::fs::metadata(&out).unwrap().len() < std::fs::metadata(root.join("assets/demo.safetensors")).unwrap().len()
    );
    let o = assert_cmd::Command::cargo_bin("cut")
        .unwrap()
        .arg("eval")
        .arg(&out)
        .arg("--data")
        .arg(root.join("assets/demo-data"))
        .args(["--limit", "4"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

use cut::prune::channel_select::{cost, Budget, ChannelSearch, Cost, WidthRules, AUTO_LAYER_RATIOS};
use cut::prune::mask::Fusion;
use cut::prune::score;
use cut::prune::structured::fold_hazards;

const RULES: WidthRules = WidthRules {
    min_channels: 8,
    round_to: 8,
    max_layer_ratio: 0.75,
    min_heads: 1,
};

#[test]
fn width_rules_by_hand() {
    // 96 channels, at most 75% go: at least 24 stay, already a multiple of 8.
    assert_eq!(RULES.floor(96), 24);
    // 20 channels: 25% is 5, the minimum 8 wins.
    assert_eq!(RULES.floor(20), 8);
    // Narrower than the minimum: the layer keeps its width.
    assert_eq!(RULES.floor(6), 6);
    // 41 kept of 96 rounds up to 48; rounding never exceeds the width.
    assert_eq!(RULES.round(41, 96), 48);
    assert_eq!(RULES.round(45, 46), 46);
    let loose = WidthRules {
        min_channels: 3,
        round_to: 1,
        max_layer_ratio: 1.0,
        min_heads: 1,
    };
    assert_eq!(loose.floor(96), 3);
    assert_eq!(loose.round(41, 96), 41);
    assert!(WidthRules { round_to: 0, ..RULES }.check().is_err());
    assert!(WidthRules {
        min_channels: 0,
        ..RULES
    }
    .check()
    .is_err());
    assert!(WidthRules {
        max_layer_ratio: 1.5,
        ..RULES
    }
    .check()
    .is_err());
}

#[test]
fn cost_by_hand() {
    let m = graph(1);
    let groups = channel_groups(&m.graph).unwrap();
    let stream = groups
        .iter()
        .position(|g| g.producers.contains(&"a".to_string()))
        .unwrap();
    let mut widths: Vec<usize> = groups.iter().map(|g| g.channels).collect();
    // 12x12 positions: a 3x3x3 -> 6, b 6 -> 2, c 6 -> 6, d 6 -> 1.
    let full = cost(&m.graph, &groups, &widths).unwrap();
    assert_eq!(full.macs, 144 * (6 * 27 + 12 + 36 + 6));
    // a.weight 162, bn scale and shift 2 x 6 (running statistics are buffers), b 12, c 36 + 6, d 6 + 1.
    assert_eq!(full.params, 162 + 12 + 12 + 42 + 7);
    widths[stream] = 4;
    assert_eq!(
        cost(&m.graph, &groups, &widths).unwrap(),
        Cost {
            macs: 144 * (4 * 27 + 8 + 16 + 4),
            params: 108 + 8 + 8 + 20 + 5,
        }
    );
}

fn demo_seg_depth() -> (Model, Params) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let ckpt = Checkpoint::open(root.join("assets/demo.safetensors")).unwrap();
    let full = ckpt.model(&LoadOptions::default()).unwrap().model;
    let p = ckpt.load_params(&full, Device::Cpu).unwrap();
    let model = full.keep_tasks(&["seg", "depth"]);
    let kept = model
        .graph
        .param_specs()
        .iter()
        .map(|s| (s.name.clone(), p[&s.name].shallow_clone()))
        .collect();
    (model, kept)
}

/// The demo's seg+depth model, its channel groups and its magnitude scores.
fn demo_magnitude_scored() -> (Model, Params, Vec<ChannelGroup>, score::Scores) {
    let (model, p) = demo_seg_depth();
    let scores = score::magnitude(&model, &p, &model.tasks);
    let groups = channel_groups(&model.graph).unwrap();
    (model, p, groups, scores)
}

#[test]
fn channel_plan_meets_budgets_and_width_rules() {
    let (model, _, groups, scores) = demo_magnitude_scored();
    let search = ChannelSearch::new(&model, &groups, &scores, Fusion::Vote, None, RULES).unwrap();
    let plan = search.search(Budget::MacShare(0.5)).unwrap();
    assert!(
        plan.macs_removed >= 0.5 && plan.macs_removed < 0.6,
        "{}",
        plan.macs_removed
    );
    assert_eq!(plan.before, search.before());
    let widths: Vec<usize> = groups
        .iter()
        .zip(&plan.keep)
        .map(|(g, k)| k.as_ref().map_or(g.channels, |k| k.len()))
        .collect();
    assert_eq!(cost(&model.graph, &groups, &widths).unwrap(), plan.after);
    let mut narrowed = 0;
    for (g, k) in groups.iter().zip(&plan.keep) {
        let Some(k) = k else { continue };
        narrowed += 1;
        assert!(g.prunable());
        assert!(k.len() < g.channels);
        assert_eq!(k.len() % 8, 0, "{:?} keeps {}", g.producers, k.len());
        assert!(k.len() >= 8 && k.len() >= RULES.floor(g.channels));
        assert!(k.windows(2).all(|w| w[0] < w[1]));
    }
    assert!(narrowed > 0);

    // Absolute budgets are upper bounds.
    let macs = search.search(Budget::Macs(120_000_000)).unwrap();
    assert!(macs.after.macs <= 120_000_000 && macs.after.macs > 100_000_000);
    let params = search.search(Budget::Params(500_000)).unwrap();
    assert!(params.after.params <= 500_000);
    // No rounding, a minimum of 3: finer widths and at least as much removed.
    let fine = WidthRules {
        min_channels: 3,
        round_to: 1,
        max_layer_ratio: 0.9,
        min_heads: 1,
    };
    let plan_fine = ChannelSearch::new(&model, &groups, &scores, Fusion::Vote, None, fine)
        .unwrap()
        .search(Budget::MacShare(0.5))
        .unwrap();
    for (g, k) in groups.iter().zip(&plan_fine.keep) {
        if let Some(k) = k {
            assert!(k.len() >= fine.floor(g.channels));
        }
    }
    assert!(plan_fine.keep.iter().flatten().any(|k| k.len() % 8 != 0));
    // A budget the rules cannot meet is refused with the reason.
    let err = search.search(Budget::Macs(1)).unwrap_err().to_string();
    assert!(err.contains("cannot be met") && err.contains("--min-channels"), "{err}");
}

#[test]
fn layer_cap_widens_only_as_far_as_the_budget_needs() {
    let (model, _, groups, scores) = demo_magnitude_scored();
    let mut search = ChannelSearch::new(&model, &groups, &scores, Fusion::Vote, None, RULES).unwrap();
    // Half the MACs fits under the gentlest cap: no layer loses more than half its channels.
    let half = search
        .search_with_caps(Budget::MacShare(0.5), &AUTO_LAYER_RATIOS)
        .unwrap();
    assert_eq!(half.rules.max_layer_ratio, 0.5);
    assert!(half.macs_removed >= 0.5);
    for (g, k) in groups.iter().zip(&half.keep) {
        if let Some(k) = k {
            assert!(
                2 * k.len() >= g.channels,
                "{:?} keeps {} of {}",
                g.producers,
                k.len(),
                g.channels
            );
        }
    }
    // 80% does not fit under 0.5: the next cap that fits is used, and the one before it cannot.
    let deep = search
        .search_with_caps(Budget::MacShare(0.8), &AUTO_LAYER_RATIOS)
        .unwrap();
    let cap = deep.rules.max_layer_ratio;
    assert!(cap > 0.5 && deep.macs_removed >= 0.8, "{cap} {}", deep.macs_removed);
    let before = AUTO_LAYER_RATIOS[AUTO_LAYER_RATIOS.iter().position(|&r| r == cap).unwrap() - 1];
    let err = search
        .search_with_caps(Budget::MacShare(0.8), &[before])
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be met"), "{err}");
    // One cap is a fixed rule; no cap meets a budget of one MAC, and the refusal names the loosest.
    let fixed = search.search_with_caps(Budget::MacShare(0.5), &[0.75]).unwrap();
    let plain = ChannelSearch::new(&model, &groups, &scores, Fusion::Vote, None, RULES)
        .unwrap()
        .search(Budget::MacShare(0.5))
        .unwrap();
    assert_eq!(fixed.keep, plain.keep);
    let err = search
        .search_with_caps(Budget::Macs(1), &AUTO_LAYER_RATIOS)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--max-layer-ratio 1)"), "{err}");
}

#[test]
fn demo_channel_pruning_equals_the_zeroed_model() {
    // The issue's equivalence: before fine-tuning, the smaller model computes what the original
    // computes with the removed channels' weights zeroed, to 1e-4.
    let (model, p, groups, scores) = demo_magnitude_scored();
    let hazards = fold_hazards(&model, &p, &groups).unwrap();
    let plan = ChannelSearch::new(&model, &groups, &scores, Fusion::Vote, None, RULES)
        .unwrap()
        .protect(hazards.clone())
        .search(Budget::MacShare(0.5))
        .unwrap();
    assert!(plan.macs_removed >= 0.5);
    // Protected channels stay.
    for ((k, h), g) in plan.keep.iter().zip(&hazards).zip(&groups) {
        if let Some(k) = k {
            for (c, _) in h.iter().enumerate().filter(|(_, &hazard)| hazard) {
                assert!(k.contains(&(c as i64)), "{:?} lost protected channel {c}", g.producers);
            }
        }
    }
    let shrunk = shrink(&model, &p, &groups, &plan.keep).unwrap();
    assert!(shrunk.inexact.is_empty(), "{:?}", shrunk.inexact);
    let zeroed = zero_removed(&model, &p, &groups, &plan.keep).unwrap();
    tch::manual_seed(1);
    let x = Tensor::randn([2, 3, 96, 128], (Kind::Float, Device::Cpu)) * 50.0;
    let d = max_diff(&model, &zeroed, &shrunk.model, &shrunk.params, &x);
    assert!(d < 1e-4, "max difference {d}");
    // Batch norms keep their own tensors, now narrower.
    assert!(shrunk.params.contains_key("backbone.bn1.running_var"));

    // Without protection more channels can go, but some folds are then inexact at borders.
    let loose = ChannelSearch::new(&model, &groups, &scores, Fusion::Vote, None, RULES)
        .unwrap()
        .search(Budget::MacShare(0.5))
        .unwrap();
    let shrunk_loose = shrink(&model, &p, &groups, &loose.keep).unwrap();
    assert!(!shrunk_loose.inexact.is_empty());
}

fn cut_cmd() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("cut").unwrap()
}

/// `cut prune --tasks seg,depth --granularity channel` on the demo without fine-tuning, evaluated on
/// the validation split, with a JSON report on stdout.
fn prune_demo_channels(out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // No fine-tuning unless `extra` asks for it.
    let steps: &[&str] = if extra.contains(&"--finetune-steps") {
        &[]
    } else {
        &["--finetune-steps", "0"]
    };
    cut_cmd()
        .args(["prune", "--tasks", "seg,depth", "--granularity", "channel"])
        .args(extra)
        .args(steps)
        .args(["--eval-split", "val", "--json", "-o"])
        .arg(out)
        .arg(root.join("assets/demo.safetensors"))
        .arg("--data")
        .arg(root.join("assets/demo-data"))
        .output()
        .unwrap()
}

#[test]
fn channel_prune_with_fine_tuning_is_byte_for_byte_repeatable() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("twice.safetensors");
    let args = [
        "--calib-batches",
        "2",
        "--finetune-steps",
        "4",
        "--val-every",
        "2",
        "--lr",
        "1e-3",
        "--force",
    ];
    let mut files = Vec::new();
    let mut logs = Vec::new();
    for _ in 0..2 {
        let o = prune_demo_channels(&out, &args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        files.push(std::fs::read(&out).unwrap());
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        logs.push(r["finetune_log"].clone());
    }
    assert!(files[0] == files[1], "same command and seed, different bytes");
    // Fine-tuning ran (training losses at steps 2 and 4), and ran the same way both times.
    let steps: Vec<u64> = logs[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [0, 2, 4]);
    assert!(logs[0][2]["train_total"].as_f64().unwrap() > 0.0);
    assert_eq!(logs[0], logs[1]);
}

#[test]
fn taylor_channel_prune_runs_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("taylor.safetensors");
    let o = prune_demo_channels(&out, &["--criterion", "taylor", "--calib-batches", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["settings"]["criterion"], "taylor");
    assert_eq!(r["settings"]["calib_batches"], 2);
    assert!(r["settings"]["scoring"]
        .as_str()
        .unwrap()
        .contains("producers' outputs"));
    let removed = r["channels"]["macs_removed"].as_f64().unwrap();
    assert!((0.5..0.6).contains(&removed), "{removed}");
    assert!(out.exists());
}

#[test]
fn channel_prune_cli_writes_a_smaller_model_every_command_runs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (demo, data) = (root.join("assets/demo.safetensors"), root.join("assets/demo-data"));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("small.safetensors");
    let o = prune_demo_channels(&out, &["--criterion", "magnitude"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["settings"]["granularity"], "channel");
    assert_eq!(r["sparsity"]["measure"], "multiply-accumulates removed");
    let c = &r["channels"];
    let removed = c["macs_removed"].as_f64().unwrap();
    assert!((0.5..0.6).contains(&removed), "{removed}");
    assert_eq!(c["exact_fold"], true);
    // The default per-layer cap: half a layer at most, enough for this budget.
    assert_eq!(c["rules"]["max_layer_ratio"], 0.5);
    assert_eq!(c["layer_ratio_widened"], false);
    assert_eq!(c["inexact_fold"].as_array().unwrap().len(), 0);
    assert!(c["after"]["params"].as_u64().unwrap() < c["before"]["params"].as_u64().unwrap());
    // Magnitude scores at half the MACs cost accuracy before fine-tuning (about -20% on the demo).
    let before = r["accuracy"]["delta_m_before_finetune"].as_f64().unwrap();
    assert!((-60.0..0.0).contains(&before), "{before}");

    // Same names, smaller shapes, the graph in the metadata: inspect and eval run it.
    let back = Checkpoint::open(&out).unwrap();
    let input = Checkpoint::open(&demo).unwrap();
    let narrowed = c["layers"][0]["producers"][0].as_str().unwrap().to_string();
    let name = format!("{narrowed}.weight");
    assert!(back.entry(&name).unwrap().shape[0] < input.entry(&name).unwrap().shape[0]);
    assert!(
        back.entry("task2_fc1_c0.conv1.weight").is_err(),
        "the dropped head is gone"
    );
    let o = cut_cmd().arg("inspect").arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The report's "before" is the input model as `cut inspect` counts it, not the narrowed groups.
    let o = cut_cmd().arg("inspect").arg(&demo).arg("--json").output().unwrap();
    let total = &serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["total"];
    let input_sum = |k: &str| -> u64 {
        r["input_groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g[k].as_u64().unwrap())
            .sum()
    };
    assert_eq!(input_sum("params"), total["params"].as_u64().unwrap());
    assert_eq!(input_sum("macs_dense"), total["macs"].as_u64().unwrap());
    let kept_now: u64 = r["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["status"] == "kept")
        .map(|g| g["params"].as_u64().unwrap())
        .sum();
    assert_eq!(kept_now, c["after"]["params"].as_u64().unwrap());
    let md = std::fs::read_to_string(dir.path().join("small.report.md")).unwrap();
    assert!(md.contains("| parameters stored | 1.02 M | "), "{md}");
    let o = cut_cmd()
        .arg("eval")
        .arg(&out)
        .arg("--data")
        .arg(&data)
        .args(["--split", "val", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The report's pruned accuracy is what eval measures on the written file.
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let miou = |v: &serde_json::Value| -> f64 {
        v.as_array().unwrap().iter().find(|t| t["task"] == "seg").unwrap()["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "miou")
            .unwrap()["value"]
            .as_f64()
            .unwrap()
    };
    let reported = miou(&r["accuracy"]["after"]);
    let measured = miou(&e["tasks"]);
    assert!((reported - measured).abs() < 1e-6, "{reported} vs {measured}");
    // The prune report serves as eval's baseline (its metrics before pruning): the same delta_m.
    let o = cut_cmd()
        .arg("eval")
        .arg(&out)
        .arg("--data")
        .arg(&data)
        .args(["--split", "val", "--json", "--baseline"])
        .arg(dir.path().join("small.report.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (reported, measured) = (
        r["accuracy"]["delta_m"].as_f64().unwrap(),
        e["delta_m"].as_f64().unwrap(),
    );
    assert!((reported - measured).abs() < 1e-6, "{reported} vs {measured}");

    // The interleaved benchmark against the input.
    let o = cut_cmd()
        .arg("bench")
        .arg(&out)
        .arg("--baseline")
        .arg(&demo)
        .args(["--runs", "3", "--warmup", "1", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The speed-up is the ratio of the two medians, baseline over model.
    let median = |k: &str| b[k]["median_ms"].as_f64().unwrap();
    let speedup = b["speedup"].as_f64().unwrap();
    assert!(speedup > 0.0 && (speedup - median("baseline") / median("model")).abs() < 1e-9 * speedup);
    let per_round = |k: &str| b["speedup_per_round"][k].as_f64().unwrap();
    assert!(per_round("p10") <= per_round("median") && per_round("median") <= per_round("p90"));
    assert!(
        b["model"].get("run_times_ms").is_none(),
        "raw run times stay out of the JSON"
    );
    assert_eq!(b["baseline"]["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(b["model"]["runs"], 3);
}

#[test]
fn bad_channel_prune_arguments_fail_cleanly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let demo = root.join("assets/demo.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.safetensors");
    let cases: [(&[&str], &str); 5] = [
        (&["--target-macs", "50M"], "--granularity channel"),
        // A cap the user sets is a rule: it is not widened to meet the budget.
        (
            &[
                "--granularity",
                "channel",
                "--sparsity",
                "0.8",
                "--max-layer-ratio",
                "0.5",
            ],
            "--max-layer-ratio 0.5)",
        ),
        (&["--granularity", "channel", "--packed"], "--packed"),
        (&["--granularity", "channel", "--target-macs", "1"], "cannot be met"),
        (&["--granularity", "channel", "--round-to", "0"], "--round-to"),
    ];
    for (args, expected) in cases {
        let o = cut_cmd()
            .args([
                "prune",
                "--tasks",
                "seg",
                "--criterion",
                "magnitude",
                "--finetune-steps",
                "0",
                "-o",
            ])
            .arg(&out)
            .args(args)
            .arg(&demo)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!out.exists(), "{args:?} left an output");
    }
}
