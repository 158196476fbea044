//! Physical channel removal: a smaller graph with smaller tensors, same tensor names.
//!
//! A removed channel's producers are zeroed, so the channel carries a constant (its producers' bias
//! through batch norm, ReLU, additions, pooling). Each consumer gets that constant folded into its
//! bias: b_o += sum_k c_k * sum(W[o, k]). That is exact for unpadded consumers (1x1 convolutions,
//! linear layers) and wherever c_k = 0; a padded convolution sees zeros instead of c_k at its
//! borders, so there the fold is exact only away from the borders, and `inexact` lists it.

use super::channels::{transform_params, ChannelGroup};
use crate::graph::interpreter::{activations, Mode, Params};
use crate::graph::ops::{ChannelRule, Unit};
use crate::graph::passes::slice_dead_taps_for;
use crate::graph::{Graph, Model, Node};
use anyhow::{anyhow, bail, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use tch::{Device, Kind, Tensor};

pub struct Shrunk {
    pub model: Model,
    pub params: Params,
    /// Padded consumers that received a non-zero constant: exact only away from their borders.
    pub inexact: Vec<String>,
}

fn removed(channels: usize, keep: &[i64]) -> Vec<i64> {
    let kept: BTreeSet<i64> = keep.iter().copied().collect();
    (0..channels as i64).filter(|c| !kept.contains(c)).collect()
}

/// Channel indices of a group as a member at `offset` holds them.
fn shifted(channels: &[i64], offset: usize) -> Tensor {
    Tensor::from_slice(&channels.iter().map(|c| c + offset as i64).collect::<Vec<i64>>())
}

/// Whether a node's channel transform sees zero padding (see the module notes).
fn padded(node: &Node) -> bool {
    matches!(node.op.def().channels(), ChannelRule::Transform { padded: true, .. })
}

/// The model in which every removed channel's producers and depthwise filters have zero weights
/// (biases kept): what the shrunk model must reproduce.
pub fn zero_removed(
    model: &Model,
    params: &Params,
    groups: &[ChannelGroup],
    keep: &[Option<Vec<i64>>],
) -> Result<Params> {
    let mut out: Params = params.iter().map(|(k, v)| (k.clone(), v.copy())).collect();
    let _guard = tch::no_grad_guard();
    for (g, k) in groups.iter().zip(keep) {
        let Some(k) = k else { continue };
        let gone = removed(g.channels, k);
        for (w, offset) in g.output_rows(&model.graph)? {
            let t = out.get_mut(&w).ok_or_else(|| anyhow!("tensor '{w}' is missing"))?;
            let rows = shifted(&gone, offset).to_device(t.device());
            let _ = t.index_fill_(0, &rows, 0.0);
        }
    }
    Ok(out)
}

/// Per group and channel: whether removing the channel would leave a non-zero constant at a padded
/// convolution, where the bias fold is exact only away from the borders. A channel's constant
/// depends only on its own producers' biases and the norms, ReLUs and additions of its group, so
/// one pass with every prunable group zeroed finds them all.
pub fn fold_hazards(model: &Model, params: &Params, groups: &[ChannelGroup]) -> Result<Vec<Vec<bool>>> {
    let _guard = tch::no_grad_guard();
    let all_gone: Vec<Option<Vec<i64>>> = groups.iter().map(|g| g.prunable().then(Vec::new)).collect();
    let zeroed = zero_removed(model, params, groups, &all_gone)?;
    let device = zeroed.values().next().map(|t| t.device()).unwrap_or(Device::Cpu);
    let probe = model.graph.zero_inputs(device)?;
    // Each padded consumer's input, and where it holds the group's channels.
    let padded_inputs = |g: &ChannelGroup| -> Vec<(String, usize)> {
        g.consumers
            .iter()
            .filter_map(|c| model.graph.node(c))
            .filter(|n| padded(n))
            .map(|n| (n.inputs[0].clone(), g.offset(&n.name)))
            .collect()
    };
    let wanted: Vec<String> = groups
        .iter()
        .filter(|g| g.prunable())
        .flat_map(padded_inputs)
        .map(|(input, _)| input)
        .collect();
    let wanted_ref: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let acts = activations(
        &slice_dead_taps_for(&model.graph, &probe)?,
        &zeroed,
        &probe,
        &wanted_ref,
        Mode::Eval,
    )?;
    Ok(groups
        .iter()
        .map(|g| {
            let mut hazard = vec![false; g.channels];
            if g.prunable() {
                for (input, offset) in padded_inputs(g) {
                    let a = &acts[&input];
                    let dims: Vec<i64> = (0..a.dim() as i64).filter(|&d| d != 1).collect();
                    let peak = a.abs().amax(dims.as_slice(), false).to_device(Device::Cpu);
                    let peak = Vec::<f32>::try_from(peak).unwrap_or_default();
                    for (h, v) in hazard.iter_mut().zip(peak.into_iter().skip(offset)) {
                        *h |= v > 0.0;
                    }
                }
            }
            hazard
        })
        .collect())
}

/// Removes channels: `keep[i]` lists the channels of `groups[i]` to keep (None keeps them all).
pub fn shrink(model: &Model, params: &Params, groups: &[ChannelGroup], keep: &[Option<Vec<i64>>]) -> Result<Shrunk> {
    let _guard = tch::no_grad_guard();
    check_keep_lists(groups, keep)?;
    let zeroed = zero_removed(model, params, groups, keep)?;
    let acts = consumer_inputs(model, &zeroed, groups, keep)?;
    let mut graph = model.graph.clone();
    let mut out: Params = zeroed;
    let inexact = fold_removed_constants(&mut graph, &mut out, &acts, groups, keep)?;
    slice_groups(&graph, &mut out, groups, keep)?;
    let widths: Vec<usize> = groups
        .iter()
        .zip(keep)
        .map(|(g, k)| k.as_ref().map_or(g.channels, |k| k.len()))
        .collect();
    let model = Model {
        graph: resize(&graph, groups, &widths),
        tasks: model.tasks.clone(),
        tokenizer: model.tokenizer.clone(),
    };
    model.validate()?;
    check_shapes(&model, &out)?;
    Ok(Shrunk {
        model,
        params: out,
        inexact,
    })
}

/// Each keep list belongs to a prunable group and is sorted, unique, in range, whole units, and
/// non-empty unless the units are heads (a layer may lose its attention).
fn check_keep_lists(groups: &[ChannelGroup], keep: &[Option<Vec<i64>>]) -> Result<()> {
    for (g, k) in groups.iter().zip(keep) {
        let Some(k) = k else { continue };
        if !g.prunable() {
            bail!(
                "channels of a fixed group cannot be removed ({})",
                g.fixed.as_deref().unwrap_or("")
            );
        }
        let heads = matches!(g.unit, Unit::Head { .. });
        let width = g.unit.width() as i64;
        let whole_units = k
            .chunks(width as usize)
            .all(|u| u.len() == width as usize && u[0] % width == 0 && u.windows(2).all(|p| p[1] == p[0] + 1));
        if (k.is_empty() && !heads)
            || k.iter().any(|&c| c < 0 || c as usize >= g.channels)
            || k.windows(2).any(|w| w[0] >= w[1])
            || !whole_units
        {
            bail!(
                "keep list for a group of {} channels in {} must be sorted, unique, in range, whole {} and non-empty",
                g.channels,
                g.unit.plural(),
                g.unit.plural()
            );
        }
    }
    Ok(())
}

/// The inputs of every consumer of a shrinking group, on the zero probe with the removed
/// channels zeroed: what each removed channel still carries (its constant) into each consumer.
fn consumer_inputs(
    model: &Model,
    zeroed: &Params,
    groups: &[ChannelGroup],
    keep: &[Option<Vec<i64>>],
) -> Result<BTreeMap<String, Tensor>> {
    let device = zeroed.values().next().map(|t| t.device()).unwrap_or(Device::Cpu);
    let probe = model.graph.zero_inputs(device)?;
    let mut wanted: Vec<&str> = Vec::new();
    for (g, k) in groups.iter().zip(keep) {
        if k.is_some() {
            for c in &g.consumers {
                wanted.push(model.graph.node(c).expect("consumer exists").inputs[0].as_str());
            }
        }
    }
    activations(
        &slice_dead_taps_for(&model.graph, &probe)?,
        zeroed,
        &probe,
        &wanted,
        Mode::Eval,
    )
}

/// Folds each removed channel's constant into its consumers' biases (adding a bias where a
/// consumer has none), using their full, unsliced weights. Returns the padded consumers that got
/// a non-zero constant: there the fold is exact only away from the borders.
fn fold_removed_constants(
    graph: &mut Graph,
    out: &mut Params,
    acts: &BTreeMap<String, Tensor>,
    groups: &[ChannelGroup],
    keep: &[Option<Vec<i64>>],
) -> Result<Vec<String>> {
    let mut inexact = Vec::new();
    for (g, k) in groups.iter().zip(keep) {
        let Some(k) = k else { continue };
        let gone = removed(g.channels, k);
        if gone.is_empty() {
            continue;
        }
        for c in &g.consumers {
            let act = &acts[&graph.node(c).expect("consumer exists").inputs[0]];
            let gone_t = shifted(&gone, g.offset(c)).to_device(act.device());
            let consumer = transform_params(graph, c)?;
            // The consumer reads its input's channels where it writes its own (from the end).
            let channel_dim = act.dim() as i64 - consumer.axis as i64;
            let others: Vec<i64> = (0..act.dim() as i64).filter(|&d| d != channel_dim).collect();
            let per_channel = act.mean_dim(others.as_slice(), false, Kind::Float);
            let consts = per_channel.index_select(0, &gone_t);
            let delta = |w: &Tensor| {
                let taps = if w.dim() == 4 {
                    w.sum_dim_intlist([2i64, 3].as_slice(), false, Kind::Float)
                } else {
                    w.shallow_clone()
                };
                taps.index_select(1, &gone_t).matmul(&consts)
            };
            if padded(graph.node(c).expect("consumer exists")) && consts.abs().max().double_value(&[]) > 0.0 {
                inexact.push(c.clone());
            }
            for (weight, bias) in consumer.weights {
                let node = graph.nodes.iter_mut().find(|n| &n.name == c).expect("consumer exists");
                let change = delta(&out[&weight]);
                let bias_name = match bias {
                    Some(b) => b,
                    None => add_bias(node, out, &weight, c)?,
                };
                let b = out.get_mut(&bias_name).expect("bias exists");
                *b = &*b + change;
            }
        }
    }
    Ok(inexact)
}

/// A zero bias for consumer `c` (whose weight is `weight`), named after the weight; the node's op
/// now reads it.
fn add_bias(node: &mut Node, out: &mut Params, weight: &str, c: &str) -> Result<String> {
    let name = match weight.strip_suffix(".weight") {
        Some(stem) => format!("{stem}.bias"),
        None => format!("{weight}.bias"),
    };
    if out.contains_key(&name) {
        bail!("cannot add bias '{name}' to '{c}': the name is taken");
    }
    let w = &out[weight];
    let zeros = Tensor::zeros([w.size()[0]], (Kind::Float, w.device()));
    out.insert(name.clone(), zeros);
    node.op = node.op.def().with_bias(name.clone()).expect("transforms take a bias");
    Ok(name)
}

/// Keeps only the kept channels: producers and batch norms on the output side, consumers on the
/// input side. A member of several groups (what reads a concatenation) loses each group's removed
/// channels at its offset, in one selection per tensor and axis.
fn slice_groups(graph: &Graph, out: &mut Params, groups: &[ChannelGroup], keep: &[Option<Vec<i64>>]) -> Result<()> {
    let mut gone: BTreeMap<(String, i64), BTreeSet<i64>> = BTreeMap::new();
    for (g, k) in groups.iter().zip(keep) {
        let Some(k) = k else { continue };
        let removed = removed(g.channels, k);
        let mut mark = |tensor: &str, axis: i64, offset: usize| {
            let at = gone.entry((tensor.to_string(), axis)).or_default();
            at.extend(removed.iter().map(|c| c + offset as i64));
        };
        for node in &graph.nodes {
            let name = &node.name;
            match node.op.def().channels() {
                ChannelRule::Transform { weights, .. } => {
                    for (weight, bias) in weights {
                        if g.producers.contains(name) {
                            for t in std::iter::once(weight).chain(bias) {
                                for offset in g.producer_offsets_of(name) {
                                    mark(t, 0, offset);
                                }
                            }
                        }
                        if g.consumers.contains(name) {
                            mark(weight, 1, g.offset(name));
                        }
                    }
                }
                ChannelRule::PerChannel { tensors, .. } if g.norms.contains(name) => {
                    for t in tensors {
                        mark(t, 0, g.offset(name));
                    }
                }
                _ => {}
            }
        }
    }
    mark_constants(graph, groups, keep, &mut gone);
    for ((name, axis), removed) in gone {
        let t = out
            .get_mut(&name)
            .ok_or_else(|| anyhow!("tensor '{name}' is missing"))?;
        let kept: Vec<i64> = (0..t.size()[axis as usize]).filter(|i| !removed.contains(i)).collect();
        *t = t.index_select(axis, &Tensor::from_slice(&kept).to_device(t.device()));
    }
    Ok(())
}

/// Marks the entries of constants with one entry per unit (a head's relative position bias) that
/// removed units lose: `gone` is keyed by tensor and axis from the start, as the constants store
/// a leading batch axis of 1.
fn mark_constants(
    graph: &Graph,
    groups: &[ChannelGroup],
    keep: &[Option<Vec<i64>>],
    gone: &mut BTreeMap<(String, i64), BTreeSet<i64>>,
) {
    for (g, k) in groups.iter().zip(keep) {
        let Some(k) = k else { continue };
        let removed = removed(g.channels, k);
        for (node, &(axis, per_entry)) in &g.constants {
            let Some(n) = graph.node(node) else { continue };
            let Some((tensor, _, shape)) = n.op.def().params().into_iter().next() else {
                continue;
            };
            let at = (shape.len() - axis) as i64;
            let entries = removed.iter().map(|c| c / per_entry as i64);
            gone.entry((tensor, at)).or_default().extend(entries);
        }
    }
}

/// Every parameter has the shape the shrunk graph expects.
fn check_shapes(model: &Model, out: &Params) -> Result<()> {
    let shapes: BTreeMap<String, Vec<usize>> = out
        .iter()
        .map(|(k, v)| (k.clone(), v.size().iter().map(|&d| d as usize).collect()))
        .collect();
    for spec in model.graph.param_specs() {
        if shapes.get(&spec.name) != Some(&spec.shape) {
            bail!(
                "internal error: tensor '{}' has shape {:?}, the graph expects {:?}",
                spec.name,
                shapes.get(&spec.name),
                spec.shape
            );
        }
    }
    Ok(())
}

/// The graph with each group's channel count set to `widths[i]` (no tensors touched): what a
/// shrink to those widths produces, for costing candidate widths. A node that reads several
/// groups (through a concatenation) reads the sum of their widths.
pub fn resize(graph: &Graph, groups: &[ChannelGroup], widths: &[usize]) -> Graph {
    // Per node: the summed new widths it reads and writes, its slice's new bounds, and whether
    // any of them changed.
    let mut reads: HashMap<&str, usize> = HashMap::new();
    let mut writes: HashMap<&str, usize> = HashMap::new();
    let mut before: HashMap<&str, usize> = HashMap::new();
    let mut taken: HashMap<&str, usize> = HashMap::new();
    let mut changed: HashSet<&str> = HashSet::new();
    let mut changed_inputs: HashSet<&str> = HashSet::new();
    for (g, &n) in groups.iter().zip(widths) {
        let inputs = g.consumers.iter().chain(&g.norms).map(|m| (m, false));
        for (member, writer) in inputs.chain(g.producers.iter().map(|p| (p, true))) {
            let sums = if writer { &mut writes } else { &mut reads };
            let times = if writer { g.producer_offsets_of(member).len() } else { 1 };
            *sums.entry(member).or_default() += n * times;
            if n != g.channels {
                changed.insert(member);
                if !writer {
                    changed_inputs.insert(member);
                }
            }
        }
        for (slice, &takes) in &g.slicers {
            *if takes { &mut taken } else { &mut before }.entry(slice).or_default() += n;
            if n != g.channels {
                changed.insert(slice);
            }
        }
    }
    // Reshapes whose target follows a group: the entry counting its heads (or channels).
    let mut reshaped: HashMap<&str, (usize, usize)> = HashMap::new();
    for (g, &n) in groups.iter().zip(widths) {
        for (node, &(axis, per_entry)) in &g.reshapes {
            if n != g.channels {
                reshaped.insert(node, (axis, n / per_entry));
            }
        }
    }
    let mut graph = graph.clone();
    for node in graph.nodes.iter_mut() {
        if let Some(&(axis, size)) = reshaped.get(node.name.as_str()) {
            if let Some(op) = node.op.def().reshaped(axis, size) {
                node.op = op;
            }
        }
    }
    for node in graph.nodes.iter_mut().filter(|n| changed.contains(n.name.as_str())) {
        let name = node.name.as_str();
        if let Some(&len) = taken.get(name) {
            let start = before.get(name).copied().unwrap_or(0);
            if let Some(op) = node.op.def().resliced(start, start + len) {
                node.op = op;
            }
            continue;
        }
        let inputs = reads.get(name).copied().filter(|_| changed_inputs.contains(name));
        if let Some(op) = node.op.def().resized(inputs, writes.get(name).copied()) {
            node.op = op;
        }
    }
    graph
}
