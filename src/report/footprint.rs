//! A model's footprint per tensor and per group (backbone, each head): elements, bytes as stored
//! and packed, zero weights, and multiply-accumulates dense and with zero weights skipped. The
//! inspection and the prune report both read it, for a checkpoint as stored or for parameters as
//! they are about to be written.

use crate::checkpoint::{Checkpoint, DType};
use crate::graph::{shapes, Group, Model, ParamRole, Params};
use anyhow::Result;
use std::collections::BTreeMap;
use tch::Kind;

/// One parameter tensor's part of a footprint.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorFootprint {
    pub name: String,
    pub node: String,
    pub group: Group,
    pub role: ParamRole,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub elements: u64,
    /// Bytes as stored (in the file, or in the dtype it will be written in, dense).
    pub bytes: u64,
    /// Bytes in the packed layout: a bitmask plus the non-zero values for a prunable weight,
    /// `bytes` otherwise (and for a checkpoint as stored).
    pub bytes_packed: u64,
    /// Exactly-zero elements; counted for prunable weights only (biases and batch norms are not
    /// pruned).
    pub zeros: u64,
    /// A value no model should hold (NaN, a negative running variance), for a checkpoint as stored.
    pub problem: Option<&'static str>,
}

/// Totals of one group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupFootprint {
    pub tensors: usize,
    /// Trainable elements (batch-norm running statistics and counters excluded).
    pub params: u64,
    /// Conv and linear weights: what pruning zeroes.
    pub weights: u64,
    pub zeros: u64,
    pub bytes: u64,
    pub bytes_packed: u64,
    /// Storage dtypes of the trainable tensors, in order of first appearance.
    pub dtypes: Vec<String>,
    pub macs_dense: u64,
    /// Multiply-accumulates weighted by each node's share of non-zero weights.
    pub macs_effective: u64,
}

/// The tensors of a checkpoint as stored: zeros counted and values checked in one streaming pass
/// over the file (packed masks checked against their values).
pub fn of_checkpoint(ckpt: &Checkpoint, model: &Model) -> Result<Vec<TensorFootprint>> {
    let groups = model.graph.node_groups();
    model
        .graph
        .param_specs()
        .into_iter()
        .map(|spec| {
            let entry = ckpt.entry(&spec.name)?;
            let scan = ckpt.scan(entry)?;
            let zeros = if spec.role.is_prunable_weight() {
                scan.zeros as u64
            } else {
                0
            };
            Ok(TensorFootprint {
                group: groups[&spec.node].clone(),
                role: spec.role,
                dtype: entry.dtype,
                shape: entry.shape.clone(),
                elements: entry.numel() as u64,
                bytes: entry.bytes() as u64,
                bytes_packed: entry.bytes() as u64,
                zeros,
                problem: scan.problem(spec.role),
                name: spec.name,
                node: spec.node,
            })
        })
        .collect()
}

/// The tensors of in-memory parameters as they would be written in `dtype` (batch-norm counters
/// stay i64).
pub fn of_params(model: &Model, params: &Params, dtype: DType) -> Vec<TensorFootprint> {
    let groups = model.graph.node_groups();
    model
        .graph
        .param_specs()
        .into_iter()
        .map(|spec| {
            let n = spec.numel() as u64;
            let (dtype, size) = if spec.role == ParamRole::BnBatchesTracked {
                (DType::I64, 8)
            } else {
                (dtype, dtype.size() as u64)
            };
            let (zeros, bytes_packed) = if spec.role.is_prunable_weight() {
                let nz = params[&spec.name].ne(0.0).sum(Kind::Int64).int64_value(&[]) as u64;
                (n - nz, n.div_ceil(8) + nz * size)
            } else {
                (0, n * size)
            };
            TensorFootprint {
                group: groups[&spec.node].clone(),
                role: spec.role,
                dtype,
                shape: spec.shape.clone(),
                elements: n,
                bytes: n * size,
                bytes_packed,
                zeros,
                problem: None,
                name: spec.name,
                node: spec.node,
            }
        })
        .collect()
}

/// Totals per group, the backbone first and then each task's head in task order (every group is
/// present, empty or not), with multiply-accumulates for one sample at the inputs' named `sizes`
/// (the graph's defaults fill any not given).
pub fn by_group(
    model: &Model,
    tensors: &[TensorFootprint],
    sizes: &BTreeMap<String, usize>,
) -> Result<Vec<(Group, GroupFootprint)>> {
    let mut order = vec![Group::Backbone];
    order.extend(model.tasks.iter().map(|t| Group::Head(t.name.clone())));
    let mut totals: BTreeMap<Group, GroupFootprint> =
        order.iter().map(|g| (g.clone(), GroupFootprint::default())).collect();
    let mut density: BTreeMap<&str, f64> = BTreeMap::new();
    for t in tensors {
        let g = totals.get_mut(&t.group).expect("every group is listed");
        g.tensors += 1;
        g.bytes += t.bytes;
        g.bytes_packed += t.bytes_packed;
        if !t.role.is_buffer() {
            g.params += t.elements;
            let dtype = t.dtype.to_string();
            if !g.dtypes.contains(&dtype) {
                g.dtypes.push(dtype);
            }
        }
        if t.role.is_prunable_weight() {
            g.weights += t.elements;
            g.zeros += t.zeros;
            density.insert(&t.node, (t.elements - t.zeros) as f64 / t.elements.max(1) as f64);
        }
    }
    let graph = &model.graph;
    let node_groups = graph.node_groups();
    for (node, m) in shapes::macs(graph, &shapes::infer_sizes(graph, sizes)?) {
        let g = totals.get_mut(&node_groups[&node]).expect("every group is listed");
        g.macs_dense = g.macs_dense.saturating_add(m);
        let effective = (m as f64 * density.get(node.as_str()).copied().unwrap_or(1.0)).round() as u64;
        g.macs_effective = g.macs_effective.saturating_add(effective);
    }
    Ok(order
        .into_iter()
        .map(|g| {
            let totals = totals.remove(&g).expect("every group is listed");
            (g, totals)
        })
        .collect())
}
