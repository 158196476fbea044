//! Runs a graph on tch for a batch. Only the nodes the requested tasks need are computed, and
//! intermediate activations are dropped as soon as their last consumer has run.

use super::{Graph, Node, Op, UpsampleMode};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeMap, HashMap};
use tch::Tensor;

/// Parameter tensors by name, on one device.
pub type Params = BTreeMap<String, Tensor>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Batch norm uses running statistics, dropout is off.
    Eval,
    /// Batch norm uses batch statistics and updates its running statistics; dropout is on.
    Train,
    /// Batch norm keeps using (and does not update) its running statistics; dropout is on.
    /// For fine-tuning with small batches, or a network whose statistics pruning has changed.
    TrainFrozenNorm,
}

fn param<'a>(params: &'a Params, name: &str) -> Result<&'a Tensor> {
    params.get(name).ok_or_else(|| anyhow!("tensor '{name}' is missing"))
}

fn opt_param<'a>(params: &'a Params, name: &Option<String>) -> Result<Option<&'a Tensor>> {
    name.as_ref().map(|n| param(params, n)).transpose()
}

fn pair(v: [usize; 2]) -> [i64; 2] {
    [v[0] as i64, v[1] as i64]
}

/// Runs the graph on `input` ([N, C, H, W]) and returns the outputs of `tasks` by task name.
pub fn forward(
    graph: &Graph,
    params: &Params,
    input: &Tensor,
    tasks: &[&str],
    mode: Mode,
) -> Result<BTreeMap<String, Tensor>> {
    for task in tasks {
        if !graph.outputs.iter().any(|o| o.task == *task) {
            bail!(
                "the graph has no output for task '{task}' (it has: {})",
                graph.tasks().join(", ")
            );
        }
    }
    let needed = graph.needed_nodes(tasks);
    // Remaining consumers of each node among the needed ones, plus one hold per task output.
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for node in graph.nodes.iter().filter(|n| needed.contains(&n.name)) {
        for input in &node.inputs {
            *uses.entry(input.as_str()).or_default() += 1;
        }
    }
    let out_nodes: HashMap<&str, Vec<&str>> =
        graph
            .outputs
            .iter()
            .filter(|o| tasks.contains(&o.task.as_str()))
            .fold(HashMap::new(), |mut m, o| {
                m.entry(o.node.as_str()).or_insert_with(Vec::new).push(o.task.as_str());
                m
            });

    let mut values: HashMap<&str, Tensor> = HashMap::new();
    let mut results = BTreeMap::new();
    for node in graph.nodes.iter().filter(|n| needed.contains(&n.name)) {
        let args: Vec<&Tensor> = node.inputs.iter().map(|i| &values[i.as_str()]).collect();
        let value = eval_node(node, &args, params, input, mode)?;

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
fn eval_node(node: &Node, args: &[&Tensor], params: &Params, input: &Tensor, mode: Mode) -> Result<Tensor> {
    let norm_train = mode == Mode::Train;
    let train = mode != Mode::Eval;
    (|| -> Result<Tensor> {
        Ok(match &node.op {
            Op::Input => input.shallow_clone(),
            Op::Conv2d(c) => args[0].conv2d(
                param(params, &c.weight)?,
                opt_param(params, &c.bias)?,
                pair(c.stride),
                pair(c.padding),
                pair(c.dilation),
                c.groups as i64,
            ),
            Op::BatchNorm(bn) => Tensor::batch_norm(
                args[0],
                opt_param(params, &bn.weight)?,
                opt_param(params, &bn.bias)?,
                Some(param(params, &bn.running_mean)?),
                Some(param(params, &bn.running_var)?),
                norm_train,
                0.1,
                bn.eps,
                true,
            ),
            Op::Relu => args[0].relu(),
            Op::MaxPool(p) => args[0].max_pool2d(pair(p.kernel), pair(p.stride), pair(p.padding), [1, 1], p.ceil_mode),
            Op::Add => {
                let mut sum = args[0] + args[1];
                for extra in &args[2..] {
                    sum += *extra;
                }
                sum
            }
            Op::Dropout { p } => {
                if train && *p > 0.0 {
                    args[0].dropout(*p, true)
                } else {
                    args[0].shallow_clone()
                }
            }
            Op::Upsample(u) => {
                let x = args[0];
                let size = x.size();
                let out = [size[2] * u.scale as i64, size[3] * u.scale as i64];
                match u.mode {
                    UpsampleMode::Nearest => x.upsample_nearest2d(out, None, None),
                    UpsampleMode::Bilinear => x.upsample_bilinear2d(out, false, None, None),
                }
            }
            Op::Linear(l) => args[0].linear(param(params, &l.weight)?, opt_param(params, &l.bias)?),
            Op::GlobalAvgPool => args[0].mean_dim([2i64, 3].as_slice(), false, None),
            Op::Flatten => args[0].flatten(1, -1),
        })
    })()
    .with_context(|| format!("graph node '{}'", node.name))
}

/// The same values in channels-last (NHWC) memory order; other than 4-d tensors are returned as they
/// are. Every op accepts either layout; the fast convolution kernels on GPUs want this one.
pub fn channels_last(t: &Tensor) -> Tensor {
    if t.dim() == 4 {
        t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
    } else {
        t.shallow_clone()
    }
}

/// Runs every node of the graph and returns the activations of the named nodes (for analyses such
/// as the constants that removed channels leave behind).
pub fn activations(
    graph: &Graph,
    params: &Params,
    input: &Tensor,
    nodes: &[&str],
    mode: Mode,
) -> Result<BTreeMap<String, Tensor>> {
    let mut values: HashMap<&str, Tensor> = HashMap::new();
    let mut out = BTreeMap::new();
    for node in &graph.nodes {
        let args: Vec<&Tensor> = node.inputs.iter().map(|i| &values[i.as_str()]).collect();
        let value = eval_node(node, &args, params, input, mode)?;
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
