//! Runs a graph on tch for a batch. Only the nodes the requested tasks need are computed, and
//! intermediate activations are dropped as soon as their last consumer has run.

pub use super::kernels::channels_last;
use super::ops::EvalCx;
pub use super::ops::Mode;
pub use super::Params;
use super::{Graph, Node};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use tch::Tensor;

/// Batches for a graph's inputs, by input name.
pub type Inputs = BTreeMap<String, Tensor>;

/// The one batch of a single-input graph (an image graph's [N, C, H, W]) under its input's name.
fn single(graph: &Graph, input: &Tensor) -> Result<Inputs> {
    match graph.inputs.as_slice() {
        [only] => Ok(BTreeMap::from([(only.name.clone(), input.shallow_clone())])),
        many => bail!(
            "the graph reads {} inputs ({}); give each by name",
            many.len(),
            many.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Runs a single-input graph on `input` ([N, C, H, W] for an image graph) and returns the
/// outputs of `tasks` by task name. Inference callers run the graph through
/// [`super::passes::fuse_conv_relu`] first, so that convolutions run with their ReLUs.
pub fn forward(
    graph: &Graph,
    params: &Params,
    input: &Tensor,
    tasks: &[&str],
    mode: Mode,
) -> Result<BTreeMap<String, Tensor>> {
    run(graph, params, &single(graph, input)?, tasks, mode, &mut |_, _| {})
}

/// [`forward`] for a graph with any inputs, each batch given under its input's name and checked
/// against the input's declaration (dtype, rank, fixed sizes).
pub fn forward_inputs(
    graph: &Graph,
    params: &Params,
    inputs: &Inputs,
    tasks: &[&str],
    mode: Mode,
) -> Result<BTreeMap<String, Tensor>> {
    forward_inputs_observed(graph, params, inputs, tasks, mode, &mut |_, _| {})
}

/// [`forward`], calling `after_node` with each node and its value as soon as the node has run (for
/// per-node timing; the value is still on the device, so a GPU observer must synchronise itself).
pub fn forward_observed(
    graph: &Graph,
    params: &Params,
    input: &Tensor,
    tasks: &[&str],
    mode: Mode,
    after_node: &mut dyn FnMut(&Node, &Tensor),
) -> Result<BTreeMap<String, Tensor>> {
    forward_inputs_observed(graph, params, &single(graph, input)?, tasks, mode, after_node)
}

/// [`forward_observed`] for a graph with any inputs, given by name (see [`forward_inputs`]).
pub fn forward_inputs_observed(
    graph: &Graph,
    params: &Params,
    inputs: &Inputs,
    tasks: &[&str],
    mode: Mode,
    after_node: &mut dyn FnMut(&Node, &Tensor),
) -> Result<BTreeMap<String, Tensor>> {
    for decl in &graph.inputs {
        match inputs.get(&decl.name) {
            Some(t) => decl.check(t)?,
            None => bail!("no batch was given for input '{}'", decl.name),
        }
    }
    run(graph, params, inputs, tasks, mode, after_node)
}

/// The order in which [`forward`] runs a graph for some tasks, and when it drops each value.
pub(crate) struct Schedule<'g> {
    /// The nodes the tasks need, in graph order.
    pub nodes: Vec<&'g Node>,
    /// How many of those nodes read each node's value.
    pub uses: HashMap<&'g str, usize>,
    /// Nodes whose value is a task output (held until the end), with their tasks.
    pub out_nodes: HashMap<&'g str, Vec<&'g str>>,
}

impl<'g> Schedule<'g> {
    pub fn new(graph: &'g Graph, tasks: &[&str]) -> Result<Schedule<'g>> {
        for task in tasks {
            if !graph.outputs.iter().any(|o| o.task == *task) {
                bail!(
                    "the graph has no output for task '{task}' (it has: {})",
                    graph.tasks().join(", ")
                );
            }
        }
        let needed = graph.needed_nodes(tasks);
        let nodes: Vec<&Node> = graph.nodes.iter().filter(|n| needed.contains(&n.name)).collect();
        let mut uses: HashMap<&str, usize> = HashMap::new();
        for node in &nodes {
            for input in &node.inputs {
                *uses.entry(input.as_str()).or_default() += 1;
            }
        }
        let mut out_nodes: HashMap<&str, Vec<&str>> = HashMap::new();
        for o in graph.outputs.iter().filter(|o| tasks.contains(&o.task.as_str())) {
            out_nodes.entry(o.node.as_str()).or_default().push(o.task.as_str());
        }
        Ok(Schedule { nodes, uses, out_nodes })
    }
}

/// Runs the nodes `tasks` need in graph order, dropping each value after its last reader.
fn run(
    graph: &Graph,
    params: &Params,
    inputs: &Inputs,
    tasks: &[&str],
    mode: Mode,
    after_node: &mut dyn FnMut(&Node, &Tensor),
) -> Result<BTreeMap<String, Tensor>> {
    let Schedule {
        nodes,
        mut uses,
        out_nodes,
    } = Schedule::new(graph, tasks)?;
    let mut values: HashMap<&str, Tensor> = HashMap::new();
    let mut results = BTreeMap::new();
    for node in nodes {
        let args: Vec<&Tensor> = node.inputs.iter().map(|i| &values[i.as_str()]).collect();
        let value = eval_node(node, &args, params, inputs, mode)?;
        after_node(node, &value);

        for input in &node.inputs {
            let left = uses.get_mut(input.as_str()).expect("counted above");
            *left -= 1;
            if *left == 0 {
                values.remove(input.as_str());
            }
        }
        if let Some(tasks) = out_nodes.get(node.name.as_str()) {
            for task in tasks {
                results.insert(task.to_string(), value.shallow_clone());
            }
        }
        values.insert(node.name.as_str(), value);
    }
    Ok(results)
}

/// Evaluates one node on its input values.
fn eval_node(node: &Node, args: &[&Tensor], params: &Params, inputs: &Inputs, mode: Mode) -> Result<Tensor> {
    let cx = EvalCx {
        node: &node.name,
        params,
        inputs,
        mode,
    };
    node.op
        .def()
        .eval(&cx, args)
        .with_context(|| format!("graph node '{}'", node.name))
}

/// Runs every node of the graph and returns the activations of the named nodes (for analyses such
/// as the constants that removed channels leave behind).
pub fn activations(
    graph: &Graph,
    params: &Params,
    inputs: &Inputs,
    nodes: &[&str],
    mode: Mode,
) -> Result<BTreeMap<String, Tensor>> {
    let mut values: HashMap<&str, Tensor> = HashMap::new();
    let mut out = BTreeMap::new();
    for node in &graph.nodes {
        let args: Vec<&Tensor> = node.inputs.iter().map(|i| &values[i.as_str()]).collect();
        let value = eval_node(node, &args, params, inputs, mode)?;
        if nodes.contains(&node.name.as_str()) {
            out.insert(node.name.clone(), value.shallow_clone());
        }
        values.insert(node.name.as_str(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests_support::*;
    use tch::{Device, Kind};

    #[test]
    fn tiny_graph_by_hand() {
        let g = two_head_graph();
        let mut p = Params::new();
        // stem: out_c = w . in + b with w = [[1,0],[0,1],[1,1]], b = [0,0,-10].
        p.insert(
            "stem.weight".into(),
            Tensor::from_slice(&[1f32, 0., 0., 1., 1., 1.]).view([3, 2, 1, 1]),
        );
        p.insert("stem.bias".into(), Tensor::from_slice(&[0f32, 0., -10.]));
        p.insert(
            "a.weight".into(),
            Tensor::from_slice(&[1f32, 2., 3.]).view([1, 3, 1, 1]),
        );
        p.insert("a.bias".into(), Tensor::from_slice(&[0.5f32]));
        p.insert(
            "b.weight".into(),
            Tensor::from_slice(&[1f32, 0., 0., 0., -1., 0.]).view([2, 3, 1, 1]),
        );
        p.insert("b.bias".into(), Tensor::from_slice(&[0f32, 0.]));
        // One pixel (x0, x1) = (2, 3), tiled over 4x4.
        let x = Tensor::from_slice(&[2f32, 3.])
            .view([1, 2, 1, 1])
            .expand([1, 2, 4, 4], false)
            .contiguous();
        let out = forward(&g, &p, &x, &["ta", "tb"], Mode::Eval).unwrap();
        // stem = (2, 3, 2+3-10 = -5); a = 2 + 6 - 15 + 0.5 = -6.5; b = relu(2, -3) = (2, 0).
        assert_eq!(out["ta"].double_value(&[0, 0, 1, 2]), -6.5);
        assert_eq!(out["tb"].double_value(&[0, 0, 3, 3]), 2.0);
        assert_eq!(out["tb"].double_value(&[0, 1, 0, 0]), 0.0);

        // Only the asked-for head runs: a missing head tensor does not matter.
        p.remove("a.weight");
        let out = forward(&g, &p, &x, &["tb"], Mode::Eval).unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), ["tb"]);
        let err = forward(&g, &p, &x, &["ta"], Mode::Eval).unwrap_err();
        assert_eq!(format!("{err:#}"), "graph node 'a': tensor 'a.weight' is missing");
    }

    #[test]
    fn gradients_flow_by_hand() {
        let g = two_head_graph();
        let mut p = Params::new();
        for (name, shape) in [
            ("stem.weight", vec![3, 2, 1, 1]),
            ("a.weight", vec![1, 3, 1, 1]),
            ("b.weight", vec![2, 3, 1, 1]),
        ] {
            p.insert(
                name.into(),
                Tensor::ones(shape.as_slice(), (Kind::Float, Device::Cpu)).set_requires_grad(true),
            );
        }
        for (name, n) in [("stem.bias", 3), ("a.bias", 1), ("b.bias", 2)] {
            p.insert(
                name.into(),
                Tensor::zeros([n], (Kind::Float, Device::Cpu)).set_requires_grad(true),
            );
        }
        let x = Tensor::ones([1, 2, 4, 4], (Kind::Float, Device::Cpu));
        let out = forward(&g, &p, &x, &["ta"], Mode::Eval).unwrap();
        out["ta"].sum(Kind::Float).backward();
        // a = sum_c (x0 + x1) over 3 stem channels per pixel: d/da.weight[c] = sum over 16 pixels of stem_c = 16 * 2.
        let grad = p["a.weight"].grad();
        assert_eq!(grad.double_value(&[0, 1, 0, 0]), 32.0);
        // Head b was not used: no gradient reached it.
        assert!(!p["b.weight"].grad().defined());
    }

    /// The fusion pass merges each convolution only a ReLU reads with it, and the fused graph
    /// computes what the graph as built computes, on a graph with folded batch norms (so that
    /// convolutions feed ReLUs), residual adds and summed head branches. A convolution that is also
    /// a task's output is not fused and keeps its negative values.
    #[test]
    fn relu_fusion_changes_no_value() {
        use crate::graph::passes::fuse_conv_relu;
        let model = small_scenenet().build().unwrap();
        let params = crate::graph::init::init_params(&model.graph, 0, Device::Cpu);
        let (graph, params, folded) = crate::graph::passes::fold_batch_norms(&model.graph, &params).unwrap();
        assert!(folded > 0);
        let tasks = ["seg", "normal", "depth"];
        let (fused_graph, fused) = fuse_conv_relu(&graph, &tasks);
        let relus = |g: &Graph| {
            g.nodes
                .iter()
                .filter(|n| matches!(n.op, crate::graph::Op::Relu))
                .count()
        };
        assert!(fused > 5, "{fused} convolutions fused");
        assert_eq!(relus(&fused_graph), relus(&graph) - fused);
        fused_graph.validate().unwrap();
        let x = Tensor::randn([2, 3, 64, 48], (Kind::Float, Device::Cpu)) * 50.0;
        let with = tch::no_grad(|| forward(&fused_graph, &params, &x, &tasks, Mode::Eval).unwrap());
        let without = tch::no_grad(|| forward(&graph, &params, &x, &tasks, Mode::Eval).unwrap());
        for task in tasks {
            assert!(with[task].equal(&without[task]), "task {task}");
        }
        // With a gradient the fused convolution runs as convolution then ReLU: same values.
        let trainable: Params = params
            .iter()
            .map(|(k, v)| (k.clone(), v.detach().set_requires_grad(v.is_floating_point())))
            .collect();
        let grad = forward(&fused_graph, &trainable, &x, &["depth"], Mode::Eval).unwrap();
        assert!(grad["depth"].requires_grad());
        assert!(grad["depth"].detach().equal(&without["depth"]));

        let g = two_head_graph();
        let mut p = Params::new();
        for (name, shape) in [("stem", [3, 2, 1, 1]), ("a", [1, 3, 1, 1]), ("b", [2, 3, 1, 1])] {
            p.insert(
                format!("{name}.weight"),
                Tensor::randn(shape, (Kind::Float, Device::Cpu)),
            );
            p.insert(
                format!("{name}.bias"),
                Tensor::randn([shape[0]], (Kind::Float, Device::Cpu)),
            );
        }
        // Channel 0 of b far below zero, channel 1 far above: the raw output has negatives whatever
        // the random weights draw (the values of the stem are a few units at most).
        p.insert("b.bias".into(), Tensor::from_slice(&[-1000f32, 1000.]));
        let (only_tb, n) = fuse_conv_relu(&g, &["tb"]);
        assert_eq!(n, 1, "b, read only by b_relu, fuses when tb alone runs");
        assert_eq!(only_tb.outputs[0].node, "b");
        let mut g_out = g.clone();
        g_out.outputs.push(crate::graph::GraphOutput {
            task: "raw".into(),
            node: "b".into(),
        });
        let (g_out, n) = fuse_conv_relu(&g_out, &["tb", "raw"]);
        assert_eq!(n, 0, "b is a task's output");
        let x = Tensor::randn([1, 2, 4, 4], (Kind::Float, Device::Cpu));
        let out = tch::no_grad(|| forward(&g_out, &p, &x, &["tb", "raw"], Mode::Eval).unwrap());
        assert!(
            out["raw"].lt(0.0).any().int64_value(&[]) == 1,
            "the raw output keeps negatives"
        );
        assert!(out["tb"].equal(&out["raw"].relu()));
    }

    #[test]
    fn small_scenenet_output_shapes() {
        let model = small_scenenet().build().unwrap();
        let params = crate::graph::init::init_params(&model.graph, 0, Device::Cpu);
        let x = Tensor::randn([2, 3, 64, 48], (Kind::Float, Device::Cpu));
        let out = forward(&model.graph, &params, &x, &["seg", "normal", "depth"], Mode::Eval).unwrap();
        assert_eq!(out["seg"].size(), [2, 5, 9, 7]);
        assert_eq!(out["normal"].size(), [2, 3, 9, 7]);
        assert_eq!(out["depth"].size(), [2, 1, 9, 7]);
        let shapes = crate::graph::shapes::infer(&model.graph, [3, 64, 48]).unwrap();
        assert_eq!(shapes[&model.graph.outputs[0].node], vec![5, 9, 7]);
    }
}
