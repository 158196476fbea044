//! Physical channel removal: equivalence with the zeroed model, bias folding, round trips.

use cut::checkpoint::{writer, Checkpoint, DType, LoadOptions};
use cut::graph::interpreter::{forward, Mode, Params};
use cut::graph::{BatchNorm, Conv2d, Graph, GraphOutput, InputSpec, Model, Node, Op, TaskKind, TaskSpec, GRAPH_FORMAT};
use cut::prune::channels::channel_groups;
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
        format: GRAPH_FORMAT,
        family: None,
        input: InputSpec {
            channels: 3,
            height: 12,
            width: 12,
        },
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
        },
        TaskSpec {
            name: "u".into(),
            kind: TaskKind::Depth,
            outputs: 1,
        },
    ];
    Model { graph, tasks }
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
