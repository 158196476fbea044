//! `cut inspect`: sizes, sparsity and compute of a checkpoint per group (backbone, each head).

use super::footprint;
use crate::checkpoint::metadata::{read_provenance, Provenance};
use crate::checkpoint::{Checkpoint, LoadOptions};
use crate::graph::{image_sizes, Group, TaskSpec};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct GroupStats {
    /// "backbone" or the task name of a head.
    pub group: String,
    pub task: Option<String>,
    pub tensors: usize,
    /// Trainable elements (batch norm running statistics and counters excluded).
    pub params: u64,
    /// Conv and linear weights: what pruning masks.
    pub weights: u64,
    pub bytes: u64,
    pub dtypes: Vec<String>,
    /// Exactly-zero conv and linear weights (biases and batch norm are not counted: they are not pruned).
    pub zeros: u64,
    /// zeros / weights: the sparsity of the group.
    pub zero_share: f64,
    /// Multiply-accumulates for one input of the inspected size ("overflow" in JSON past 2^64).
    #[serde(serialize_with = "super::table::serialize_macs")]
    pub macs: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TensorStats {
    pub name: String,
    pub group: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub elements: u64,
    pub bytes: u64,
    pub zeros: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DropSaving {
    pub task: String,
    pub params: u64,
    pub bytes: u64,
    #[serde(serialize_with = "super::table::serialize_macs")]
    pub macs: u64,
    pub share_of_params: f64,
    pub share_of_bytes: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Inspection {
    pub file: String,
    pub file_bytes: u64,
    pub family: Option<String>,
    /// True when the graph was inferred from reference tensor names.
    pub inferred_graph: bool,
    pub warnings: Vec<String>,
    /// An image graph's [C, H, W] for the MAC counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<[usize; 3]>,
    /// Another graph's named sizes for the MAC counts (`seq` for a text encoder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sizes: Option<BTreeMap<String, usize>>,
    pub tasks: Vec<TaskSpec>,
    pub groups: Vec<GroupStats>,
    pub total: GroupStats,
    pub drop_head_savings: Vec<DropSaving>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensor_list: Option<Vec<TensorStats>>,
    pub provenance: Option<Provenance>,
    /// What channel pruning can narrow (`--prunable`): every group of channels a layer writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prunable: Option<Vec<PrunableGroup>>,
}

/// One group of channels as channel pruning sees it: the layers writing it, its unit (channels,
/// neurons, heads, convolution groups) and count, and why it must stay whole, if it must.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PrunableGroup {
    /// The first layer writing the group.
    pub layer: String,
    /// Every layer writing it (a residual stream has many).
    pub producers: usize,
    pub unit: &'static str,
    pub units: usize,
    pub channels: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
}

/// The graph's channel groups that layers write, in graph order (see `prune::channels`).
pub fn prunable_groups(graph: &crate::graph::Graph) -> Result<Vec<PrunableGroup>> {
    Ok(crate::prune::channels::channel_groups(graph)?
        .into_iter()
        .filter(|g| !g.producers.is_empty())
        .map(|g| PrunableGroup {
            layer: g.producers[0].clone(),
            producers: g.producers.len(),
            unit: g.unit.plural(),
            units: g.units(),
            channels: g.channels,
            fixed: g.fixed,
        })
        .collect())
}

fn group_label(group: &Group) -> (String, Option<String>) {
    match group {
        Group::Backbone => ("backbone".into(), None),
        Group::Head(t) => (format!("head {t}"), Some(t.clone())),
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole > 0 {
        part as f64 / whole as f64
    } else {
        0.0
    }
}

/// An image graph's [C, H, W] (none for other graphs) and the named sizes.
pub type ResolvedInput = (Option<[usize; 3]>, BTreeMap<String, usize>);

/// The input size to count MACs at: an image graph's [C, H, W], or a sequence length.
#[derive(Clone, Copy, Debug, Default)]
pub struct InputChoice {
    pub image: Option<[usize; 3]>,
    pub seq_len: Option<usize>,
}

impl InputChoice {
    /// The graph's sizes with the choice applied: `(image [C, H, W] if an image graph, sizes)`.
    pub fn resolve(&self, graph: &crate::graph::Graph) -> Result<ResolvedInput> {
        if let Ok(default) = graph.image_input() {
            if self.seq_len.is_some() {
                crate::usage_bail!("--seq-len applies to text models; this one reads images (give --input CxHxW)");
            }
            let input = self.image.unwrap_or(default);
            // Checks the input size against the graph (channels, kernel spans) before anything is read.
            crate::graph::shapes::infer(graph, input).with_context(|| format!("input size {input:?}"))?;
            return Ok((Some(input), image_sizes(input[1], input[2])));
        }
        if self.image.is_some() {
            crate::usage_bail!(
                "--input CxHxW applies to image models; this one reads {}",
                input_names(graph)
            );
        }
        let mut sizes = graph.sizes.clone();
        if let Some(n) = self.seq_len {
            if !sizes.contains_key("seq") {
                crate::usage_bail!("--seq-len: this model has no sequence input");
            }
            if n == 0 {
                crate::usage_bail!("--seq-len must be at least 1");
            }
            sizes.insert("seq".into(), n);
        }
        crate::graph::shapes::infer_sizes(graph, &sizes).with_context(|| format!("sizes {sizes:?}"))?;
        Ok((None, sizes))
    }
}

fn input_names(graph: &crate::graph::Graph) -> String {
    graph
        .inputs
        .iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The groups with their zero shares, and their sum (MACs saturating, as each group's do).
fn with_total(stats: impl Iterator<Item = GroupStats>) -> (Vec<GroupStats>, GroupStats) {
    let mut total = GroupStats {
        group: "total".into(),
        ..Default::default()
    };
    let groups: Vec<GroupStats> = stats
        .map(|mut s| {
            s.zero_share = share(s.zeros, s.weights);
            total.tensors += s.tensors;
            total.params += s.params;
            total.weights += s.weights;
            total.bytes += s.bytes;
            total.zeros += s.zeros;
            total.macs = total.macs.saturating_add(s.macs);
            for d in &s.dtypes {
                if !total.dtypes.contains(d) {
                    total.dtypes.push(d.clone());
                }
            }
            s
        })
        .collect();
    total.zero_share = share(total.zeros, total.weights);
    (groups, total)
}

/// Summarises a checkpoint, with MACs counted at the input size `input` chooses.
pub fn inspect(ckpt: &Checkpoint, opts: &LoadOptions, input: InputChoice, list_tensors: bool) -> Result<Inspection> {
    let loaded = ckpt.model(opts)?;
    let model = &loaded.model;
    let graph = &model.graph;
    let (image, sizes) = input.resolve(graph).with_context(|| ckpt.path.display().to_string())?;
    let tensors = footprint::of_checkpoint(ckpt, model)?;
    let totals = footprint::by_group(model, &tensors, &sizes)?;
    let mut stats: BTreeMap<Group, GroupStats> = BTreeMap::new();
    let order: Vec<Group> = totals.iter().map(|(g, _)| g.clone()).collect();
    for (g, t) in totals {
        let (group, task) = group_label(&g);
        let s = GroupStats {
            group,
            task,
            tensors: t.tensors,
            params: t.params,
            weights: t.weights,
            bytes: t.bytes,
            dtypes: t.dtypes,
            zeros: t.zeros,
            zero_share: 0.0,
            macs: t.macs_dense,
        };
        stats.insert(g, s);
    }
    let problems: Vec<String> = tensors
        .iter()
        .filter_map(|t| Some(format!("tensor '{}' {}", t.name, t.problem?)))
        .collect();
    let tensor_list: Vec<TensorStats> = tensors
        .iter()
        .map(|t| TensorStats {
            name: t.name.clone(),
            group: group_label(&t.group).0,
            dtype: t.dtype.to_string(),
            shape: t.shape.clone(),
            elements: t.elements,
            bytes: t.bytes,
            zeros: t.zeros,
        })
        .collect();
    let (groups, total) = with_total(order.iter().map(|g| stats.remove(g).expect("every group is listed")));
    let drop_head_savings = groups
        .iter()
        .filter_map(|g| {
            let task = g.task.clone()?;
            Some(DropSaving {
                task,
                params: g.params,
                bytes: g.bytes,
                macs: g.macs,
                share_of_params: g.params as f64 / total.params.max(1) as f64,
                share_of_bytes: g.bytes as f64 / total.bytes.max(1) as f64,
            })
        })
        .collect();
    Ok(Inspection {
        file: ckpt.path.display().to_string(),
        file_bytes: ckpt.file_len() as u64,
        family: graph.family.clone(),
        inferred_graph: loaded.inferred,
        warnings: loaded.warnings.into_iter().chain(problems).collect(),
        input: image,
        sizes: image.is_none().then_some(sizes),
        tasks: model.tasks.clone(),
        groups,
        total,
        drop_head_savings,
        tensor_list: list_tensors.then_some(tensor_list),
        provenance: read_provenance(&ckpt.metadata),
        prunable: None,
    })
}
