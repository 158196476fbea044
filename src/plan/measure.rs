//! `cut plan --measure`: one real fine-tuning step per block on this machine, with the
//! interpreter: the forward pass of every task, a loss over the outputs, and backward to the
//! block's parameters only (nothing upstream of the block needs a gradient, so autograd stops
//! there). The times calibrate the cost model.

use super::blocks::Block;
use crate::graph::interpreter::{forward_inputs, Inputs, Mode};
use crate::graph::{Model, Params};
use anyhow::Result;
use std::collections::BTreeSet;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Random inputs of `batch` samples at the graph's default sizes (seeded).
fn inputs(model: &Model, batch: usize, device: Device) -> Result<Inputs> {
    tch::manual_seed(0);
    model.graph.random_inputs(batch, &model.graph.sizes, device)
}

/// Median seconds per sample of one fine-tuning step of each block (`reps` timed steps after one
/// warm-up, batches of `batch`).
pub fn measure(model: &Model, params: &Params, blocks: &[Block], batch: usize, reps: usize) -> Result<Vec<f64>> {
    tch::manual_seed(0);
    let device = Device::Cpu;
    let x = inputs(model, batch, device)?;
    let tasks: Vec<&str> = model.tasks.iter().map(|t| t.name.as_str()).collect();
    let mut out = Vec::new();
    for block in blocks {
        let nodes: BTreeSet<&str> = block.nodes.iter().map(String::as_str).collect();
        let mut leaves = Params::new();
        let mut trained = Vec::new();
        for spec in model.graph.param_specs() {
            let t = params[&spec.name].shallow_clone();
            if nodes.contains(spec.node.as_str()) && !spec.role.is_buffer() && t.is_floating_point() {
                let leaf = t.detach().to_kind(Kind::Float).set_requires_grad(true);
                trained.push(leaf.shallow_clone());
                leaves.insert(spec.name, leaf);
            } else {
                leaves.insert(spec.name, t);
            }
        }
        let mut times = Vec::new();
        for rep in 0..=reps {
            let start = Instant::now();
            let outputs = forward_inputs(&model.graph, &leaves, &x, &tasks, Mode::Eval)?;
            let loss = outputs
                .values()
                .map(|y| y.to_kind(Kind::Float).square().mean(Kind::Float))
                .reduce(|a, b| a + b)
                .expect("a task");
            if !trained.is_empty() {
                let refs: Vec<&Tensor> = trained.iter().collect();
                let _grads = Tensor::run_backward(&[&loss], &refs, false, false);
            }
            if rep > 0 {
                times.push(start.elapsed().as_secs_f64());
            }
        }
        times.sort_by(f64::total_cmp);
        out.push(times[times.len() / 2] / batch as f64);
    }
    Ok(out)
}
