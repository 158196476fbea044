//! Infers the SceneNet graph of a state dict saved by the reference code (converted to
//! safetensors, no `cut.graph`) from its tensor names and shapes.

use super::SceneNetConfig;
use crate::families::{LoadOptions, LoadedModel, TensorShapes};
use crate::graph::{TaskKind, TaskSpec};
use anyhow::{bail, Result};

/// The reference's fixed stage layout and head rates; names and shapes do not record them.
const STRIDES: [usize; 4] = [1, 2, 1, 1];
const DILATIONS: [usize; 4] = [1, 1, 2, 4];
const RATES: [usize; 4] = [6, 12, 18, 24];

pub fn infer(shapes: &TensorShapes, opts: &LoadOptions) -> Result<LoadedModel> {
    let Some(stem) = shapes.get("backbone.conv1.weight") else {
        bail!("tensor 'backbone.conv1.weight' is missing");
    };
    if stem.len() != 4 {
        bail!("tensor 'backbone.conv1.weight' has shape {stem:?}, expected a 4-d convolution weight");
    }
    let mut blocks = Vec::new();
    let mut widths = Vec::new();
    while let Some(w) = shapes.get(format!("backbone.blocks.{}.0.conv1.weight", blocks.len()).as_str()) {
        let stage = blocks.len();
        let count = (0..)
            .take_while(|b| shapes.contains_key(format!("backbone.blocks.{stage}.{b}.conv1.weight").as_str()))
            .count();
        blocks.push(count);
        widths.push(w[0]);
    }
    if blocks.len() != STRIDES.len() {
        bail!(
            "the reference SceneNet has {} backbone stages; found {} ('backbone.blocks.N.0.conv1.weight')",
            STRIDES.len(),
            blocks.len()
        );
    }

    let mut heads = Vec::new();
    while let Some(w) = shapes.get(format!("task{}_fc1_c0.conv1.weight", heads.len() + 1).as_str()) {
        let t = heads.len() + 1;
        let branches = (0..)
            .take_while(|k| shapes.contains_key(format!("task{t}_fc1_c{k}.conv1.weight").as_str()))
            .count();
        if branches > RATES.len() {
            bail!(
                "task{t} has {branches} head branches; the reference has at most {}",
                RATES.len()
            );
        }
        let Some(out) = shapes.get(format!("task{t}_fc1_c0.conv3.weight").as_str()) else {
            bail!("tensor 'task{t}_fc1_c0.conv3.weight' is missing");
        };
        heads.push((w[0], branches, out[0]));
    }
    if heads.is_empty() {
        bail!("no task heads found (expected tensors named 'task1_fc1_c0.conv1.weight', ...)");
    }
    let (head_width, branches, _) = heads[0];
    if heads.iter().any(|&(w, b, _)| w != head_width || b != branches) {
        bail!("task heads differ in width or branch count; the reference SceneNet's heads are identical");
    }

    let mut warnings = Vec::new();
    let names: Vec<String> = match &opts.task_names {
        Some(names) if names.len() != heads.len() => {
            bail!(
                "--task-names gives {} names but the checkpoint has {} task heads",
                names.len(),
                heads.len()
            )
        }
        Some(names) => names.clone(),
        None => (1..=heads.len()).map(|t| format!("task{t}")).collect(),
    };
    let kinds: Vec<TaskKind> = match &opts.task_kinds {
        Some(kinds) if kinds.len() != heads.len() => {
            bail!(
                "--task-kinds gives {} kinds but the checkpoint has {} task heads",
                kinds.len(),
                heads.len()
            )
        }
        Some(kinds) => kinds.clone(),
        None => {
            let kinds: Vec<TaskKind> = heads
                .iter()
                .map(|&(_, _, n)| match n {
                    1 => TaskKind::Depth,
                    3 => TaskKind::Normal,
                    _ => TaskKind::Segmentation,
                })
                .collect();
            let guessed: Vec<String> = names
                .iter()
                .zip(&kinds)
                .map(|(n, k)| format!("{n}={}", k.as_str()))
                .collect();
            warnings.push(format!(
                "task kinds guessed from output widths ({}); pass --task-kinds to set them",
                guessed.join(", ")
            ));
            kinds
        }
    };
    let tasks = names
        .into_iter()
        .zip(kinds)
        .zip(&heads)
        .map(|((name, kind), &(_, _, outputs))| TaskSpec {
            name,
            kind,
            outputs,
            labels: None,
            distill: false,
        })
        .collect();

    let mut config = SceneNetConfig::reference(tasks);
    config.in_channels = stem[1];
    config.stem_width = stem[0];
    config.blocks = blocks;
    config.widths = widths;
    config.strides = STRIDES.to_vec();
    config.dilations = DILATIONS.to_vec();
    config.head_width = head_width;
    config.rates = RATES[..branches].to_vec();
    let mut model = config.build()?;
    // Some converters drop batch norm's int64 counters; accept the file either way.
    if !shapes.contains_key("backbone.bn1.num_batches_tracked") {
        for node in &mut model.graph.nodes {
            if let crate::graph::Op::BatchNorm(bn) = &mut node.op {
                bn.num_batches_tracked = None;
            }
        }
    }
    Ok(LoadedModel {
        ignored: Vec::new(),
        model,
        warnings,
        inferred: true,
    })
}
