//! Parameter blocks of a model for cooperative fine-tuning: the backbone cut where a single tensor
//! crosses (between residual blocks, between transformer layers), and each task head. Per block:
//! parameters, forward MACs and the activations it keeps for backward, per sample.

use crate::graph::{shapes, Model, Op};
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How finely the backbone is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockSize {
    /// Residual blocks, transformer layers.
    Layer,
    /// Layers grouped by the name they share (a ResNet stage, all encoder layers).
    Stage,
    /// Layers merged into this many blocks of about equal MACs.
    Count(usize),
}

impl BlockSize {
    pub fn parse(text: &str) -> Result<BlockSize> {
        Ok(match text {
            "layer" => BlockSize::Layer,
            "stage" => BlockSize::Stage,
            n => match n.parse::<usize>() {
                Ok(k) if k > 0 => BlockSize::Count(k),
                _ => crate::usage_bail!("--blocks '{text}': expected layer, stage or a positive count"),
            },
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Block {
    pub name: String,
    /// The task whose head this is; `None` for the backbone.
    pub head: Option<String>,
    pub nodes: Vec<String>,
    pub params: u64,
    /// Forward multiply-accumulates per sample.
    pub macs: u64,
    /// Bytes of the block's outputs per sample (f32): what backward through it keeps.
    pub activation_bytes: u64,
}

/// The dotted prefix that more than half of `names` share, longest first.
fn majority_prefix(names: &[&str]) -> String {
    let split: Vec<Vec<&str>> = names.iter().map(|n| n.split('.').collect()).collect();
    let longest = split.iter().map(Vec::len).max().unwrap_or(0);
    for depth in (1..longest).rev() {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for s in split.iter().filter(|s| s.len() > depth) {
            *counts.entry(s[..depth].join(".")).or_default() += 1;
        }
        if let Some((p, _)) = counts.into_iter().find(|(_, c)| 2 * c > names.len()) {
            return p;
        }
    }
    names.first().map(|n| n.to_string()).unwrap_or_default()
}

/// The model's blocks, backbone from input to output, then one per task head.
pub fn blocks(model: &Model, sizes: &BTreeMap<String, usize>, by: BlockSize) -> Result<Vec<Block>> {
    let graph = &model.graph;
    let shapes = shapes::infer_sizes(graph, sizes)?;
    let macs = shapes::macs(graph, &shapes);
    let tasks: Vec<&str> = model.tasks.iter().map(|t| t.name.as_str()).collect();
    let needed_by: Vec<BTreeSet<String>> = tasks.iter().map(|t| graph.needed_nodes(&[t])).collect();
    let is_input = |name: &str| matches!(graph.node(name).map(|n| &n.op), Some(Op::Input));
    // A head: the nodes only its task needs (none in a one-task model, which is all backbone).
    let mut heads: Vec<(String, Vec<String>)> = Vec::new();
    let mut in_head: BTreeSet<String> = BTreeSet::new();
    for (i, task) in tasks.iter().enumerate().filter(|_| tasks.len() > 1) {
        let own: Vec<String> = graph
            .nodes
            .iter()
            .filter(|n| needed_by[i].contains(&n.name) && !is_input(&n.name))
            .filter(|n| {
                needed_by
                    .iter()
                    .enumerate()
                    .all(|(j, s)| j == i || !s.contains(&n.name))
            })
            .map(|n| n.name.clone())
            .collect();
        in_head.extend(own.iter().cloned());
        heads.push((task.to_string(), own));
    }
    let needed: BTreeSet<&String> = needed_by.iter().flatten().collect();
    let backbone: Vec<&str> = graph
        .nodes
        .iter()
        .filter(|n| needed.contains(&n.name) && !in_head.contains(&n.name) && !is_input(&n.name))
        .map(|n| n.name.as_str())
        .collect();
    if backbone.is_empty() {
        bail!("the model has no shared backbone to split into blocks");
    }
    // Where only one backbone tensor crosses (graph inputs are available everywhere).
    let position: HashMap<&str, usize> = backbone.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut last_read = vec![0usize; backbone.len()];
    for node in &graph.nodes {
        let reader = position.get(node.name.as_str()).copied().unwrap_or(usize::MAX);
        for input in &node.inputs {
            if let Some(&p) = position.get(input.as_str()) {
                if needed.contains(&node.name) {
                    last_read[p] = last_read[p].max(reader);
                }
            }
        }
    }
    let mut segments: Vec<Vec<&str>> = vec![Vec::new()];
    for (p, name) in backbone.iter().enumerate() {
        segments.last_mut().expect("one open").push(name);
        let crossing = (0..=p).filter(|&q| last_read[q] > p).count();
        if crossing == 1 && p + 1 < backbone.len() {
            segments.push(Vec::new());
        }
    }
    let has_macs = |seg: &[&str]| seg.iter().any(|n| macs.contains_key(*n));
    // Segments without MACs (a batch norm after its convolution) join the one before.
    let mut layers: Vec<Vec<&str>> = Vec::new();
    for seg in segments {
        match layers.last_mut() {
            Some(prev) if !has_macs(&seg) => prev.extend(seg),
            _ => layers.push(seg),
        }
    }
    let name_of = |seg: &[&str]| {
        let with_macs: Vec<&str> = seg.iter().copied().filter(|n| macs.contains_key(*n)).collect();
        majority_prefix(if with_macs.is_empty() { seg } else { &with_macs })
    };
    // A transformer layer's attention half and FFN half share a name: "encoder.layer.0.attention"
    // and "encoder.layer.0".
    let mut named: Vec<(String, Vec<&str>)> = Vec::new();
    for seg in layers {
        let name = name_of(&seg);
        match named.last_mut() {
            Some((prev, nodes)) if prev.starts_with(&format!("{name}.")) => {
                *prev = name;
                nodes.extend(seg);
            }
            _ => named.push((name, seg)),
        }
    }
    let grouped: Vec<(String, Vec<&str>)> = match by {
        BlockSize::Layer => named,
        BlockSize::Stage => {
            let mut out: Vec<(String, Vec<&str>)> = Vec::new();
            for (name, nodes) in named {
                let stage = name.rsplit_once('.').map(|(s, _)| s.to_string()).unwrap_or(name);
                match out.last_mut() {
                    Some((prev, ns)) if *prev == stage => ns.extend(nodes),
                    _ => out.push((stage, nodes)),
                }
            }
            out
        }
        BlockSize::Count(k) => {
            // Layer i goes to the k-th of the MACs its middle falls in: consecutive, about equal.
            let cost = |ns: &[&str]| ns.iter().map(|n| macs.get(*n).copied().unwrap_or(0)).sum::<u64>();
            let total = named.iter().map(|(_, ns)| cost(ns)).sum::<u64>().max(1) as f64;
            let mut out: Vec<(usize, String, Vec<&str>)> = Vec::new();
            let mut before = 0u64;
            for (name, nodes) in named {
                let c = cost(&nodes);
                let group = (((before as f64 + c as f64 / 2.0) / total * k as f64) as usize).min(k - 1);
                before += c;
                match out.last_mut() {
                    Some((g, n, ns)) if *g == group => {
                        *n = format!("{}..{name}", n.split("..").next().unwrap_or(n));
                        ns.extend(nodes);
                    }
                    _ => out.push((group, name, nodes)),
                }
            }
            out.into_iter().map(|(_, n, ns)| (n, ns)).collect()
        }
    };
    let specs = graph.param_specs();
    let describe = |name: String, head: Option<String>, nodes: Vec<String>| -> Block {
        let set: BTreeSet<&str> = nodes.iter().map(String::as_str).collect();
        Block {
            params: specs
                .iter()
                .filter(|s| set.contains(s.node.as_str()) && !s.role.is_buffer())
                .map(|s| s.numel() as u64)
                .sum(),
            macs: nodes.iter().map(|n| macs.get(n).copied().unwrap_or(0)).sum(),
            activation_bytes: nodes
                .iter()
                .map(|n| 4 * shapes[n].iter().product::<usize>() as u64)
                .sum(),
            name,
            head,
            nodes,
        }
    };
    let mut out: Vec<Block> = grouped
        .into_iter()
        .map(|(name, ns)| describe(name, None, ns.into_iter().map(String::from).collect()))
        .collect();
    for (task, nodes) in heads {
        if !nodes.is_empty() {
            out.push(describe(format!("head:{task}"), Some(task), nodes));
        }
    }
    Ok(out)
}

/// The parameter tensors of the block named `name` (at `--blocks layer`, or a head as "head:task").
pub fn block_params(model: &Model, name: &str) -> Result<Vec<String>> {
    let all = blocks(model, &model.graph.sizes, BlockSize::Layer)?;
    let Some(block) = all.iter().find(|b| b.name == name) else {
        crate::usage_bail!(
            "no block '{name}'; the model's blocks are {}",
            all.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", ")
        );
    };
    let nodes: BTreeSet<&str> = block.nodes.iter().map(String::as_str).collect();
    Ok(model
        .graph
        .param_specs()
        .into_iter()
        .filter(|s| nodes.contains(s.node.as_str()) && !s.role.is_buffer())
        .map(|s| s.name)
        .collect())
}
