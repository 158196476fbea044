//! `--criterion taylor` for a text encoder's heads and FFN neurons: the gradient of each task's
//! loss with respect to a mask on each unit (Michel et al. 2019 for heads, Kwon et al. 2022 for
//! heads and neurons), taken on the pre-trained weights in inference mode.
//!
//! The mask interpolates between the unit's output a and what the unit outputs once removed, c
//! (its value bias for a head, GELU of its bias for a neuron; see `encoder::removed_outputs`):
//! a' = c + m (a - c). At m = 1, dL/dm = sum over its features and positions of dL/da (a - c),
//! which is the first-order change of the loss when the unit goes, as `cut` removes it. (With zero
//! biases it is exactly the papers' mask gradient.) A unit scores |dL/dm| per sentence, summed over
//! the calibration sentences.

use super::encoder::{removed_outputs, EncoderGroup, GroupKind};
use super::score::Calibration;
use super::unit_select::UnitScores;
use crate::graph::interpreter::{forward_inputs_observed, Inputs, Mode, Params};
use crate::graph::{Model, TaskSpec};
use crate::train::loss::task_loss;
use anyhow::Result;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// The node whose output holds a group's units: the attention node, or the FFN's activation.
fn unit_output(g: &EncoderGroup) -> &str {
    match g.kind {
        GroupKind::Heads => &g.producer,
        GroupKind::Neurons => g.activation.as_deref().unwrap_or(&g.producer),
    }
}

/// Taylor unit scores per task (every task scores every unit: the encoder is shared).
pub fn unit_taylor(
    model: &Model,
    params: &Params,
    tasks: &[TaskSpec],
    groups: &[EncoderGroup],
    calibration: Calibration,
    mut on_batch: impl FnMut(usize),
) -> Result<UnitScores> {
    let graph = &model.graph;
    // Token ids cannot carry gradients; differentiable weights put every activation on the tape,
    // and only the gradients at the units' outputs are asked for.
    let leaves: Params = params
        .iter()
        .map(|(n, t)| {
            let t = t.detach();
            let t = if t.is_floating_point() {
                t.set_requires_grad(true)
            } else {
                t
            };
            (n.clone(), t)
        })
        .collect();
    let removed: Vec<Tensor> = groups
        .iter()
        .map(|g| removed_outputs(graph, params, g).map(|c| c.detach().to_kind(Kind::Float)))
        .collect::<Result<_>>()?;
    let watched: HashMap<&str, usize> = groups.iter().enumerate().map(|(i, g)| (unit_output(g), i)).collect();
    let mut acc: UnitScores = tasks
        .iter()
        .map(|t| (t.name.clone(), groups.iter().map(|g| vec![0.0; g.units]).collect()))
        .collect();
    let task_names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    calibration
        .each_batch(|i, b| {
            let inputs: Inputs = b.graph_inputs(graph)?;
            let mut values: Vec<Option<Tensor>> = groups.iter().map(|_| None).collect();
            let outputs = forward_inputs_observed(graph, &leaves, &inputs, &task_names, Mode::Eval, &mut |node, v| {
                if let Some(&g) = watched.get(node.name.as_str()) {
                    values[g] = Some(v.shallow_clone());
                }
            })?;
            let values: Vec<Tensor> = values
                .into_iter()
                .zip(groups)
                .map(|(v, g)| {
                    v.ok_or_else(|| anyhow::anyhow!("'{}' did not run for the selected tasks", unit_output(g)))
                })
                .collect::<Result<_>>()?;
            for (k, task) in tasks.iter().enumerate() {
                let loss = task_loss(task, &outputs[&task.name].to_kind(Kind::Float), &b)?;
                let refs: Vec<&Tensor> = values.iter().collect();
                let grads = Tensor::run_backward(&[&loss], &refs, k + 1 < tasks.len(), true);
                let _guard = tch::no_grad_guard();
                let slots = acc.get_mut(&task.name).expect("allocated above");
                for (g, group) in groups.iter().enumerate() {
                    let grad = &grads[g];
                    if !grad.defined() {
                        continue;
                    }
                    let a = values[g].to_kind(Kind::Float);
                    // [N, L, units * width] -> per sentence and unit: sum of dL/da (a - c).
                    let change = ((a - &removed[g]) * grad.to_kind(Kind::Float))
                        .to_kind(Kind::Double)
                        .sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
                    let n = change.size()[0];
                    let per_unit = change
                        .view([n, group.units as i64, group.unit_width as i64])
                        .sum_dim_intlist([2i64].as_slice(), false, Kind::Double);
                    let scores = per_unit.abs().sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
                    let scores = Vec::<f64>::try_from(scores.to_device(Device::Cpu))?;
                    slots[g].iter_mut().zip(scores).for_each(|(s, v)| *s += v);
                }
            }
            on_batch(i + 1);
            Ok(())
        })
        .map(|()| acc)
}
