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
        let constants = match graph.node(&g.producer).map(|n| n.op.clone()) {
            Some(Op::SelfAttention(mut a)) => {
                let constant = param(&out, &a.value_bias)?.index_select(0, &gone_rows);
                for (w, b) in [
                    (a.query.clone(), a.query_bias.clone()),
                    (a.key.clone(), a.key_bias.clone()),
                    (a.value.clone(), a.value_bias.clone()),
                ] {
                    let (wt, bt) = (
                        param(&out, &w)?.index_select(0, &keep_rows),
                        param(&out, &b)?.index_select(0, &keep_rows),
                    );
                    out.insert(w, wt);
                    out.insert(b, bt);
                }
                a.heads = k.len();
                set_op(&mut graph, &g.producer, Op::SelfAttention(a));
                constant
            }
            Some(Op::Linear(l)) => {
                let b = l.bias.clone().ok_or_else(|| anyhow!("'{}' has no bias", g.producer))?;
                let approximate = match graph.node(g.activation.as_deref().unwrap_or("")).map(|n| &n.op) {
                    Some(Op::Gelu(gelu)) => gelu.approximate,
                    _ => GeluApproximation::None,
                };
                let form = if approximate == GeluApproximation::Tanh {
                    "tanh"
                } else {
                    "none"
                };
                let constant = param(&out, &b)?.index_select(0, &gone_rows).gelu(form);
                let (wt, bt) = (
                    param(&out, &l.weight)?.index_select(0, &keep_rows),
                    param(&out, &b)?.index_select(0, &keep_rows),
                );
                out.insert(l.weight.clone(), wt);
                out.insert(b, bt);
                set_op(
                    &mut graph,
                    &g.producer,
                    Op::Linear(Linear {
                        out_features: k.len(),
                        ..l
                    }),
                );
                constant
            }
            _ => bail!("group producer '{}' is not an attention or linear node", g.producer),
        };
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

/// Per group and unit, the importance of the unit: each task's weight scores (which sum to 1 over
/// the task's weights) summed over the unit's rows of the producer's weights and its columns of the
/// consumer's weight, added over the tasks.
pub fn unit_scores(
    graph: &Graph,
    groups: &[EncoderGroup],
    scores: &crate::prune::types::Scores,
) -> Result<Vec<Vec<f64>>> {
    let _guard = tch::no_grad_guard();
    let mut out = Vec::new();
    for g in groups {
        let producers: Vec<String> = match graph.node(&g.producer).map(|n| &n.op) {
            Some(Op::SelfAttention(a)) => vec![a.query.clone(), a.key.clone(), a.value.clone()],
            Some(Op::Linear(l)) => vec![l.weight.clone()],
            _ => bail!("group producer '{}' is not an attention or linear node", g.producer),
        };
        let Some(Op::Linear(consumer)) = graph.node(&g.consumer).map(|n| &n.op) else {
            bail!("group consumer '{}' is not a linear layer", g.consumer);
        };
        let mut total = vec![0f64; g.units];
        for task in scores.values() {
            let mut add = |t: &Tensor, dim: i64| -> Result<()> {
                // [features] -> [units]: each unit's `unit_width` features summed.
                let per_feature = t.abs().sum_dim_intlist(1 - dim, false, Kind::Double);
                let per_unit =
                    per_feature
                        .view([g.units as i64, g.unit_width as i64])
                        .sum_dim_intlist(1, false, Kind::Double);
                for (slot, v) in total
                    .iter_mut()
                    .zip(Vec::<f64>::try_from(per_unit.to_device(tch::Device::Cpu))?)
                {
                    *slot += v;
                }
                Ok(())
            };
            for w in &producers {
                if let Some(t) = task.get(w) {
                    add(t, 0)?;
                }
            }
            if let Some(t) = task.get(&consumer.weight) {
                add(t, 1)?;
            }
        }
        out.push(total);
    }
    Ok(out)
}

/// What every layer keeps at least.
#[derive(Clone, Copy, Debug)]
pub struct UnitRules {
    /// Heads per layer (0 lets a layer lose its attention).
    pub min_heads: usize,
    /// FFN widths are kept at a multiple of this (or all of the layer's, or 0).
    pub round_to: usize,
    /// The largest share of a layer's units that may go.
    pub max_layer_ratio: f64,
}

/// The units to keep, per group (sorted): units go in order of score per unit of cost (`macs[i]`
/// is what one unit of group i costs in the budget's measure: MACs, or parameters), lowest first
/// (FFN neurons `round_to` at a time), until `target` is removed, within `rules`. An error names
/// the most the rules let go when `target` is out of reach.
pub fn select(
    groups: &[EncoderGroup],
    scores: &[Vec<f64>],
    macs: &[u64],
    target: u64,
    rules: UnitRules,
) -> Result<Vec<Vec<usize>>> {
    // Per group: units from least to most important, and how many may go.
    let mut order: Vec<Vec<usize>> = Vec::new();
    let mut removable = Vec::new();
    for (g, s) in groups.iter().zip(scores) {
        let mut units: Vec<usize> = (0..g.units).collect();
        units.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(a.cmp(&b)));
        order.push(units);
        let capped = ((g.units as f64) * rules.max_layer_ratio + 1e-9).floor() as usize;
        let floor = match g.kind {
            GroupKind::Heads => rules.min_heads.min(g.units),
            GroupKind::Neurons => 0,
        };
        let mut can = capped.min(g.units - floor);
        if g.kind == GroupKind::Neurons && rules.round_to > 1 && can < g.units {
            can -= can % rules.round_to;
        }
        removable.push(can);
    }
    let step = |g: &EncoderGroup| {
        if g.kind == GroupKind::Neurons {
            rules.round_to.max(1)
        } else {
            1
        }
    };
    let mut removed = vec![0usize; groups.len()];
    let mut done = 0u64;
    while done < target {
        // The group whose next step costs the least importance per MAC saved.
        let next = (0..groups.len())
            .filter(|&i| removed[i] < removable[i])
            .map(|i| {
                let n = step(&groups[i]).min(removable[i] - removed[i]);
                let units = &order[i][removed[i]..removed[i] + n];
                let score: f64 = units.iter().map(|&u| scores[i][u]).sum();
                (i, n, score / (macs[i] * n as u64).max(1) as f64)
            })
            .min_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)));
        let Some((i, n, _)) = next else {
            let most: u64 = groups
                .iter()
                .zip(&removable)
                .zip(macs)
                .map(|((_, &r), &m)| r as u64 * m)
                .sum();
            crate::usage_bail!(
                "the budget asks to remove {target} of the encoder's MACs (or parameters); its rules let at most {most} go (lower --sparsity, or loosen --max-layer-ratio or --round-to)"
            );
        };
        removed[i] += n;
        done += n as u64 * macs[i];
    }
    Ok(order
        .iter()
        .zip(&removed)
        .map(|(units, &r)| {
            let mut keep = units[r..].to_vec();
            keep.sort_unstable();
            keep
        })
        .collect())
}
