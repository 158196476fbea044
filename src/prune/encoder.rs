//! Structured groups of BERT-family encoders, and their physical removal: an attention head is its
//! rows of the query, key and value projections (weights and biases) with its columns of the
//! attention output projection; an FFN neuron is its row (and bias) of the intermediate projection
//! with its column of the output projection. The hidden size stays: the residual stream and the
//! layer norms tie it.
//!
//! Removal is exact against the model whose removed groups have zero input weights (biases kept):
//! there a head's queries and keys are constant, so it attends uniformly and outputs its value bias,
//! and a neuron outputs GELU of its bias. Both constants pass through the output projection into its
//! bias, b += W[:, removed] c, which the smaller model receives.

use crate::graph::interpreter::Params;
use crate::graph::ops::GeluApproximation;
use crate::graph::{Graph, Linear, Model, Op};
use anyhow::{anyhow, bail, Result};
use std::collections::{BTreeSet, HashMap};
use tch::{Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// Attention heads of one layer.
    Heads,
    /// FFN neurons of one layer.
    Neurons,
}

/// The heads or the FFN neurons of one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderGroup {
    pub kind: GroupKind,
    /// The node whose outputs are the units: the `self_attention` node, or the intermediate
    /// `linear`.
    pub producer: String,
    /// The FFN's activation between the two projections (neurons only).
    pub activation: Option<String>,
    /// The `linear` that reads the units: the attention output or the FFN output projection.
    pub consumer: String,
    /// How many units (heads or neurons).
    pub units: usize,
    /// Features per unit: the head width, or 1 for a neuron.
    pub unit_width: usize,
}

fn readers(graph: &Graph) -> HashMap<&str, Vec<&str>> {
    let mut out: HashMap<&str, Vec<&str>> = HashMap::new();
    for node in &graph.nodes {
        for input in &node.inputs {
            out.entry(input.as_str()).or_default().push(node.name.as_str());
        }
    }
    for o in &graph.outputs {
        out.entry(o.node.as_str()).or_default().push("<output>");
    }
    out
}

/// The only reader of `name`, when it has exactly one.
fn only_reader<'g>(readers: &HashMap<&str, Vec<&'g str>>, name: &str) -> Option<&'g str> {
    match readers.get(name).map(Vec::as_slice) {
        Some([one]) => Some(one),
        _ => None,
    }
}

/// Every layer's heads and FFN neurons, in graph order.
pub fn encoder_groups(graph: &Graph) -> Vec<EncoderGroup> {
    let readers = readers(graph);
    let linear = |name: &str| match graph.node(name).map(|n| &n.op) {
        Some(Op::Linear(l)) => Some(l.clone()),
        _ => None,
    };
    let mut groups = Vec::new();
    for node in &graph.nodes {
        match &node.op {
            Op::SelfAttention(a) => {
                if let Some(out) = only_reader(&readers, &node.name).filter(|r| linear(r).is_some()) {
                    groups.push(EncoderGroup {
                        kind: GroupKind::Heads,
                        producer: node.name.clone(),
                        activation: None,
                        consumer: out.to_string(),
                        units: a.heads,
                        unit_width: a.head_dim,
                    });
                }
            }
            Op::Linear(l) => {
                // intermediate linear -> gelu -> output linear, each read only by the next.
                let Some(act) = only_reader(&readers, &node.name) else {
                    continue;
                };
                if !matches!(graph.node(act).map(|n| &n.op), Some(Op::Gelu(_))) {
                    continue;
                }
                let Some(out) = only_reader(&readers, act).filter(|r| linear(r).is_some()) else {
                    continue;
                };
                groups.push(EncoderGroup {
                    kind: GroupKind::Neurons,
                    producer: node.name.clone(),
                    activation: Some(act.to_string()),
                    consumer: out.to_string(),
                    units: l.out_features,
                    unit_width: 1,
                });
            }
            _ => {}
        }
    }
    groups
}

/// The rows (or columns) of the units kept, each unit `width` wide.
fn unit_rows(keep: &[usize], width: usize, device: tch::Device) -> Tensor {
    let rows: Vec<i64> = keep
        .iter()
        .flat_map(|&u| (u * width..(u + 1) * width).map(|r| r as i64))
        .collect();
    Tensor::from_slice(&rows).to_device(device)
}

fn param<'p>(params: &'p Params, name: &str) -> Result<&'p Tensor> {
    params.get(name).ok_or_else(|| anyhow!("tensor '{name}' is missing"))
}

/// The model in which each group's removed units have zero input weights (biases kept): what
/// [`shrink`] must reproduce. `keep[i]` lists the units of `groups[i]` that stay.
pub fn zero_removed(model: &Model, params: &Params, groups: &[EncoderGroup], keep: &[Vec<usize>]) -> Result<Params> {
    let _guard = tch::no_grad_guard();
    let mut out: Params = params.iter().map(|(k, v)| (k.clone(), v.copy())).collect();
    for (g, k) in groups.iter().zip(keep) {
        let kept: BTreeSet<usize> = k.iter().copied().collect();
        let gone: Vec<usize> = (0..g.units).filter(|u| !kept.contains(u)).collect();
        if gone.is_empty() {
            continue;
        }
        let weights: Vec<String> = match &model.graph.node(&g.producer).map(|n| &n.op) {
            Some(Op::SelfAttention(a)) => vec![a.query.clone(), a.key.clone(), a.value.clone()],
            Some(Op::Linear(l)) => vec![l.weight.clone()],
            _ => bail!("group producer '{}' is not an attention or linear node", g.producer),
        };
        for w in weights {
            let t = out.get_mut(&w).ok_or_else(|| anyhow!("tensor '{w}' is missing"))?;
            let rows = unit_rows(&gone, g.unit_width, t.device());
            let _ = t.index_fill_(0, &rows, 0.0);
        }
    }
    Ok(out)
}

/// What each feature of a group's units outputs once the unit's input weights are zero, [units x
/// unit_width]: a head attends uniformly to constant values and outputs its value bias; a neuron
/// outputs GELU of its bias.
pub fn removed_outputs(graph: &Graph, params: &Params, g: &EncoderGroup) -> Result<Tensor> {
    match graph.node(&g.producer).map(|n| &n.op) {
        Some(Op::SelfAttention(a)) => Ok(param(params, &a.value_bias)?.shallow_clone()),
        Some(Op::Linear(l)) => {
            let b = l.bias.as_ref().ok_or_else(|| anyhow!("'{}' has no bias", g.producer))?;
            let form = match graph.node(g.activation.as_deref().unwrap_or("")).map(|n| &n.op) {
                Some(Op::Gelu(gelu)) => gelu.approximate,
                _ => GeluApproximation::None,
            };
            Ok(param(params, b)?.gelu(form.torch_form()))
        }
        _ => bail!("group producer '{}' is not an attention or linear node", g.producer),
    }
}

/// The smaller model that keeps, of each group, the units `keep[i]` lists (in order, no repeats;
/// possibly none), with the removed units' constants folded into the consumers' biases.
pub fn shrink(model: &Model, params: &Params, groups: &[EncoderGroup], keep: &[Vec<usize>]) -> Result<(Model, Params)> {
    if groups.len() != keep.len() {
        bail!("{} groups but {} keep lists", groups.len(), keep.len());
    }
    let _guard = tch::no_grad_guard();
    let mut graph = model.graph.clone();
    let mut out: Params = params.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect();
    for (g, k) in groups.iter().zip(keep) {
        let kept: BTreeSet<usize> = k.iter().copied().collect();
        if kept.len() != k.len() || kept.iter().any(|&u| u >= g.units) {
            bail!(
                "group '{}': keep list {k:?} repeats a unit or names one past {}",
                g.producer,
                g.units
            );
        }
        let gone: Vec<usize> = (0..g.units).filter(|u| !kept.contains(u)).collect();
        let Some(Op::Linear(consumer)) = graph.node(&g.consumer).map(|n| n.op.clone()) else {
            bail!("group consumer '{}' is not a linear layer", g.consumer);
        };
        let Some(out_bias) = consumer.bias.clone() else {
            bail!("'{}' has no bias to take the removed units' constants", g.consumer);
        };
        let w_out = param(&out, &consumer.weight)?.shallow_clone();
        let device = w_out.device();
        let (keep_rows, gone_rows) = (
            unit_rows(k, g.unit_width, device),
            unit_rows(&gone, g.unit_width, device),
        );
        // The removed units' constant outputs, [removed features].
        let constants = removed_outputs(&graph, &out, g)?.index_select(0, &gone_rows);
        shrink_producer(&mut graph, &mut out, g, k.len(), &keep_rows)?;
        let folded = param(&out, &out_bias)?
            + w_out
                .index_select(1, &gone_rows)
                .to_kind(Kind::Float)
                .mv(&constants.to_kind(Kind::Float))
                .to_kind(w_out.kind());
        out.insert(out_bias, folded);
        out.insert(consumer.weight.clone(), w_out.index_select(1, &keep_rows));
        set_op(
            &mut graph,
            &g.consumer,
            Op::Linear(Linear {
                in_features: k.len() * g.unit_width,
                ..consumer
            }),
        );
    }
    let model = Model {
        graph,
        tasks: model.tasks.clone(),
        tokenizer: model.tokenizer.clone(),
    };
    model.validate()?;
    Ok((model, out))
}

/// The group's producer keeps only the rows of the kept units: an attention node its query, key
/// and value rows (and its head count), a linear layer its output rows.
fn shrink_producer(
    graph: &mut Graph,
    out: &mut Params,
    g: &EncoderGroup,
    kept: usize,
    keep_rows: &Tensor,
) -> Result<()> {
    let mut select_rows = |w: &str, b: &str| -> Result<()> {
        let (wt, bt) = (
            param(out, w)?.index_select(0, keep_rows),
            param(out, b)?.index_select(0, keep_rows),
        );
        out.insert(w.to_string(), wt);
        out.insert(b.to_string(), bt);
        Ok(())
    };
    match graph.node(&g.producer).map(|n| n.op.clone()) {
        Some(Op::SelfAttention(mut a)) => {
            for (w, b) in [
                (&a.query, &a.query_bias),
                (&a.key, &a.key_bias),
                (&a.value, &a.value_bias),
            ] {
                select_rows(w, b)?;
            }
            a.heads = kept;
            set_op(graph, &g.producer, Op::SelfAttention(a));
        }
        Some(Op::Linear(l)) => {
            let b = l.bias.clone().ok_or_else(|| anyhow!("'{}' has no bias", g.producer))?;
            select_rows(&l.weight, &b)?;
            set_op(
                graph,
                &g.producer,
                Op::Linear(Linear {
                    out_features: kept,
                    ..l
                }),
            );
        }
        _ => bail!("group producer '{}' is not an attention or linear node", g.producer),
    }
    Ok(())
}

fn set_op(graph: &mut Graph, name: &str, op: Op) {
    if let Some(node) = graph.nodes.iter_mut().find(|n| n.name == name) {
        node.op = op;
    }
}

/// One unit's multiply-accumulates for a sequence of `seq` tokens in a model `hidden` wide: a head's
/// q, k, v and output projections and its scores and context; a neuron's two projections.
pub fn unit_macs(g: &EncoderGroup, hidden: usize, seq: usize) -> u64 {
    let (h, l, d) = (hidden as u64, seq as u64, g.unit_width as u64);
    match g.kind {
        GroupKind::Heads => 4 * l * h * d + 2 * l * l * d,
        GroupKind::Neurons => 2 * l * h,
    }
}

/// One unit's parameters in a model `hidden` wide: a head's rows of q, k, v with their biases and
/// its columns of the output projection; a neuron's row and bias and its output column.
pub fn unit_params(g: &EncoderGroup, hidden: usize) -> u64 {
    let (h, d) = (hidden as u64, g.unit_width as u64);
    match g.kind {
        GroupKind::Heads => 3 * (h * d + d) + h * d,
        GroupKind::Neurons => 2 * h + 1,
    }
}
