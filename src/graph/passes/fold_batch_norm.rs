//! Batch-norm folding: each batch norm that reads a convolution nothing else reads becomes part of
//! that convolution's weights and bias. Inference only (running statistics); made in memory after
//! loading and never written to a file (checkpoints keep batch norms as separate tensors).

use crate::graph::{Conv2d, Graph, Op, Params};
use anyhow::{anyhow, bail, Result};
use std::collections::{HashMap, HashSet};
use tch::Kind;

/// Folds every batch norm that reads a convolution nothing else reads into that convolution:
/// `w' = w * s`, `b' = (b - mean) * s + beta` with `s = gamma / sqrt(var + eps)` per output channel.
/// The folded convolution takes the norm's node name, so consumers and outputs are unchanged.
/// Only valid for inference with running statistics. Returns the new graph and weights (new
/// tensors are named `<norm>.folded_weight` / `.folded_bias`) and how many norms were folded.
pub fn fold_batch_norms(graph: &Graph, params: &Params) -> Result<(Graph, Params, usize)> {
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for node in &graph.nodes {
        for input in &node.inputs {
            *readers.entry(input.as_str()).or_default() += 1;
        }
    }
    for out in &graph.outputs {
        *readers.entry(out.node.as_str()).or_default() += 1;
    }
    let get = |name: &str| params.get(name).ok_or_else(|| anyhow!("tensor '{name}' is missing"));

    let _guard = tch::no_grad_guard();
    let mut new_params: Params = params.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
    let mut folded_convs: HashSet<String> = HashSet::new();
    let mut nodes = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let Op::BatchNorm(bn) = &node.op else {
            nodes.push(node.clone());
            continue;
        };
        let producer = graph.node(&node.inputs[0]);
        let conv = producer.and_then(|n| match &n.op {
            Op::Conv2d(c) if readers[n.name.as_str()] == 1 => Some((n, c)),
            _ => None,
        });
        let Some((conv_node, conv)) = conv else {
            nodes.push(node.clone());
            continue;
        };
        let weight = get(&conv.weight)?;
        let kind = weight.kind();
        let f32 = |name: &str| get(name).map(|t| t.to_kind(Kind::Float));
        let mean = f32(&bn.running_mean)?;
        let var = f32(&bn.running_var)?;
        let gamma = match &bn.weight {
            Some(w) => f32(w)?,
            None => mean.ones_like(),
        };
        let beta = match &bn.bias {
            Some(b) => f32(b)?,
            None => mean.zeros_like(),
        };
        let scale = gamma / (var + bn.eps).sqrt();
        let bias = match &conv.bias {
            Some(b) => f32(b)?,
            None => mean.zeros_like(),
        };
        let new_weight = weight.to_kind(Kind::Float) * scale.view([-1, 1, 1, 1]);
        let new_bias = (bias - mean) * scale + beta;
        let (weight_name, bias_name) = (
            format!("{}.folded_weight", node.name),
            format!("{}.folded_bias", node.name),
        );
        for name in [&weight_name, &bias_name] {
            if params.contains_key(name) {
                bail!("cannot fold batch norm '{}': tensor name '{name}' is taken", node.name);
            }
        }
        new_params.insert(weight_name.clone(), new_weight.to_kind(kind));
        new_params.insert(bias_name.clone(), new_bias.to_kind(kind));
        let mut merged = conv_node.clone();
        merged.name = node.name.clone();
        merged.op = Op::Conv2d(Conv2d {
            weight: weight_name,
            bias: Some(bias_name),
            ..conv.clone()
        });
        folded_convs.insert(node.inputs[0].clone());
        nodes.push(merged);
    }
    // Each merged convolution sits where its norm was, after everything the original read.
    nodes.retain(|n| !folded_convs.contains(&n.name));
    let graph = Graph { nodes, ..graph.clone() };
    Ok((graph, new_params, folded_convs.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::interpreter::{forward, Mode};
    use crate::graph::tests_support::*;
    use crate::graph::{BatchNorm, GraphOutput, Node};
    use tch::{Device, Tensor};

    fn norm(name: &str, channels: usize) -> Op {
        Op::BatchNorm(BatchNorm {
            channels,
            weight: Some(format!("{name}.weight")),
            bias: Some(format!("{name}.bias")),
            running_mean: format!("{name}.running_mean"),
            running_var: format!("{name}.running_var"),
            num_batches_tracked: None,
            eps: 1.0,
        })
    }

    /// stem -> a -> a_bn (task ta); stem -> b -> b_bn -> relu (task tb); stem -> stem_bn (task tc).
    /// `stem` has three readers, so only `a_bn` and `b_bn` fold.
    fn graph_with_norms() -> (Graph, Params) {
        let mut g = two_head_graph();
        g.nodes.insert(3, Node::new("a_bn", &["a"], norm("a_bn", 1)));
        g.nodes.insert(5, Node::new("b_bn", &["b"], norm("b_bn", 2)));
        g.nodes[6].inputs = vec!["b_bn".into()];
        g.nodes.push(Node::new("stem_bn", &["stem"], norm("stem_bn", 3)));
        g.outputs[0].node = "a_bn".into();
        g.outputs.push(GraphOutput {
            task: "tc".into(),
            node: "stem_bn".into(),
        });
        let mut p = crate::graph::init::init_params(&two_head_graph(), 1, Device::Cpu);
        let t = |v: &[f32]| Tensor::from_slice(v);
        p.insert("a.weight".into(), t(&[1., 2., 3.]).view([1, 3, 1, 1]));
        p.insert("a.bias".into(), t(&[0.5]));
        // a_bn: scale 3 / sqrt(3 + 1) = 1.5.
        for (suffix, v) in [("weight", 3.), ("bias", 0.5), ("running_mean", 1.), ("running_var", 3.)] {
            p.insert(format!("a_bn.{suffix}"), t(&[v]));
        }
        for (name, n) in [("b_bn", 2), ("stem_bn", 3)] {
            p.insert(format!("{name}.weight"), Tensor::randn([n], (Kind::Float, Device::Cpu)));
            p.insert(format!("{name}.bias"), Tensor::randn([n], (Kind::Float, Device::Cpu)));
            p.insert(
                format!("{name}.running_mean"),
                Tensor::randn([n], (Kind::Float, Device::Cpu)),
            );
            p.insert(
                format!("{name}.running_var"),
                Tensor::rand([n], (Kind::Float, Device::Cpu)) + 0.5,
            );
        }
        (g, p)
    }

    #[test]
    fn folds_norms_into_their_only_convolution_by_hand() {
        let (g, p) = graph_with_norms();
        let (folded, fp, count) = fold_batch_norms(&g, &p).unwrap();
        assert_eq!(count, 2);
        let names: Vec<&str> = folded.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["input", "stem", "a_bn", "b_bn", "b_relu", "stem_bn"]);
        assert!(matches!(folded.node("a_bn").unwrap().op, Op::Conv2d(_)));
        assert!(
            matches!(folded.node("stem_bn").unwrap().op, Op::BatchNorm(_)),
            "stem has other readers"
        );
        // w' = [1, 2, 3] * 1.5; b' = (0.5 - 1) * 1.5 + 0.5.
        let w: Vec<f32> = Vec::try_from(fp["a_bn.folded_weight"].flatten(0, -1)).unwrap();
        assert_eq!(w, [1.5, 3.0, 4.5]);
        assert_eq!(fp["a_bn.folded_bias"].double_value(&[0]), -0.25);

        let x = Tensor::randn([2, 2, 4, 4], (Kind::Float, Device::Cpu));
        let tasks = ["ta", "tb", "tc"];
        let before = forward(&g, &p, &x, &tasks, Mode::Eval).unwrap();
        let after = forward(&folded, &fp, &x, &tasks, Mode::Eval).unwrap();
        for task in tasks {
            let diff = (&before[task] - &after[task]).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{task}: {diff}");
        }
    }

    #[test]
    fn refuses_to_shadow_a_stored_tensor() {
        let (g, mut p) = graph_with_norms();
        p.insert(
            "b_bn.folded_bias".into(),
            Tensor::zeros([2], (Kind::Float, Device::Cpu)),
        );
        let err = fold_batch_norms(&g, &p).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot fold batch norm 'b_bn': tensor name 'b_bn.folded_bias' is taken"
        );
    }
}
