//! Per-task importance of every prunable weight (conv and linear weights of the backbone and of the
//! task's own head), or, for Taylor, of every prunable channel.

use super::channels::{task_scores_group, transform_params, ChannelGroup};
pub use super::types::{ChannelScores, Scores};
use crate::data::example::Samples;
use crate::data::loader::{Batch, Loader};
use crate::graph::interpreter::{channels_last, forward_inputs, forward_inputs_observed, Inputs, Mode, Params};
use crate::graph::passes::slice_dead_taps_for;
use crate::graph::{Group, Model, ParamRole, TaskSpec};
use crate::train::loss::scoring_loss;
use anyhow::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardUniform};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tch::{Device, Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Criterion {
    /// Sum over calibration batches of |w * dL_t/dw| on the pre-trained weights (the reference's).
    Snip,
    /// |w|: no data needed (the one-shot baseline).
    Magnitude,
    /// Seeded uniform scores (a baseline).
    Random,
    /// Channel pruning only: first-order Taylor estimate of the loss change when a channel is
    /// removed, |sum over positions of dL/da * (a - bias)| at its producers' outputs.
    Taylor,
}

crate::choices!(Criterion { Snip => "snip", Magnitude => "magnitude", Random => "random", Taylor => "taylor" });

impl Criterion {
    /// Whether the criterion scores with calibration data.
    pub fn needs_data(self) -> bool {
        matches!(self, Criterion::Snip | Criterion::Taylor)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// One forward per batch shared by all selected tasks, one backward per task (cut's).
    Shared,
    /// One forward per task per batch, as the reference loop runs.
    PerTask,
}

crate::choices!(Strategy { Shared => "shared", PerTask => "per-task" });

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    /// Convolutions and linear layers (weights, biases, activations) in bf16; batch norm and the
    /// losses in f32; scores accumulated in f32.
    Bf16,
}

crate::choices!(Precision { F32 => "f32", Bf16 => "bf16" });

impl Precision {
    /// The element type of the scored activations.
    pub fn kind(self) -> Kind {
        match self {
            Precision::F32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        }
    }
}

/// The weights task `task` is scored on: backbone plus its own head, by name.
pub fn scored_weights(model: &Model, task: &str) -> Vec<String> {
    let groups = model.graph.param_groups();
    model
        .graph
        .param_specs()
        .into_iter()
        .filter(|s| s.role.is_prunable_weight())
        .filter(|s| match &groups[&s.name] {
            Group::Backbone => true,
            Group::Head(t) => t == task,
        })
        .map(|s| s.name)
        .collect()
}

fn normalise(scores: &mut BTreeMap<String, Tensor>) {
    let total: f64 = scores.values().map(|s| s.sum(Kind::Double).double_value(&[])).sum();
    if total > 0.0 {
        for s in scores.values_mut() {
            *s = &*s / total;
        }
    }
}

pub fn magnitude(model: &Model, params: &Params, tasks: &[TaskSpec]) -> Scores {
    tasks
        .iter()
        .map(|t| {
            let mut s: BTreeMap<String, Tensor> = scored_weights(model, &t.name)
                .into_iter()
                .map(|n| {
                    let v = params[&n].abs();
                    (n, v)
                })
                .collect();
            normalise(&mut s);
            (t.name.clone(), s)
        })
        .collect()
}

pub fn random(model: &Model, params: &Params, tasks: &[TaskSpec], seed: u64) -> Scores {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    tasks
        .iter()
        .map(|t| {
            let mut s: BTreeMap<String, Tensor> = scored_weights(model, &t.name)
                .into_iter()
                .map(|n| {
                    let w = &params[&n];
                    let values: Vec<f32> = (0..w.numel()).map(|_| StandardUniform.sample(&mut rng)).collect();
                    (
                        n,
                        Tensor::from_slice(&values)
                            .view(w.size().as_slice())
                            .to_device(w.device()),
                    )
                })
                .collect();
            normalise(&mut s);
            (t.name.clone(), s)
        })
        .collect()
}

/// The calibration batches data-driven scores are computed on.
pub struct Calibration {
    /// Samples to draw from (the train split).
    pub items: Samples,
    /// How many batches to score on.
    pub batches: usize,
    pub batch_size: usize,
    /// Seed of the shuffle.
    pub seed: u64,
    pub device: Device,
}

impl Calibration {
    /// Calls `f` with each batch's index and the batch on the device, in the seeded shuffle's order.
    pub(crate) fn each_batch(self, mut f: impl FnMut(usize, Batch) -> Result<()>) -> Result<()> {
        if self.batches == 0 {
            crate::usage_bail!("--calib-batches must be positive");
        }
        // A distilled task's scoring loss draws its targets from libtorch's generator.
        tch::manual_seed(self.seed as i64);
        let mut loader = Loader::shuffled(self.items, self.batch_size, self.seed, self.device);
        for i in 0..self.batches {
            let batch = loader
                .next()
                .ok_or_else(|| anyhow::anyhow!("calibration data ran out"))??
                .to_device(self.device);
            f(i, batch)?;
        }
        Ok(())
    }
}

/// The weights and biases of convolutions and linear layers, which bf16 scoring stores in bf16
/// (none for f32).
fn low_precision_weights(model: &Model, precision: Precision) -> BTreeSet<String> {
    if precision == Precision::F32 {
        return BTreeSet::new();
    }
    model
        .graph
        .param_specs()
        .into_iter()
        .filter(|s| {
            matches!(
                s.role,
                ParamRole::ConvWeight | ParamRole::ConvBias | ParamRole::LinearWeight | ParamRole::LinearBias
            )
        })
        .map(|s| s.name)
        .collect()
}

/// A 4-d tensor channels-last on a GPU (`nhwc`), anything else as it is.
fn layout(t: Tensor, nhwc: bool) -> Tensor {
    if nhwc && t.dim() == 4 {
        channels_last(&t)
    } else {
        t
    }
}

/// The parameters as scoring reads them: in their scoring precision and layout, the scored
/// weights made differentiable leaves, everything else a constant.
fn scoring_leaves(
    params: &Params,
    names: &BTreeMap<String, Vec<String>>,
    low: &BTreeSet<String>,
    nhwc: bool,
) -> Params {
    let mut leaves = Params::new();
    for (name, t) in params {
        let t = if low.contains(name) {
            t.to_kind(Kind::BFloat16)
        } else {
            t.shallow_clone()
        };
        let t = layout(t, nhwc);
        let is_scored = names.values().any(|v| v.contains(name));
        leaves.insert(
            name.clone(),
            if is_scored {
                t.detach().set_requires_grad(true)
            } else {
                t
            },
        );
    }
    leaves
}

/// SNIP on the pre-trained weights, in inference mode (batch norm running statistics, no dropout) so
/// that scores do not depend on batch composition or random draws. `on_batch` reports progress.
pub fn snip(
    model: &Model,
    params: &Params,
    tasks: &[TaskSpec],
    calibration: Calibration,
    strategy: Strategy,
    precision: Precision,
    mut on_batch: impl FnMut(usize),
) -> Result<Scores> {
    let device = calibration.device;
    // Weights scored by each task, made differentiable leaves; everything else is a constant.
    let names: BTreeMap<String, Vec<String>> = tasks
        .iter()
        .map(|t| (t.name.clone(), scored_weights(model, &t.name)))
        .collect();
    // On a GPU, cuDNN's tensor-core convolutions want channels-last (NHWC) weights and activations.
    let nhwc = device.is_cuda();
    let leaves = scoring_leaves(params, &names, &low_precision_weights(model, precision), nhwc);
    let input_kind = precision.kind();
    let mut acc: Scores = names
        .iter()
        .map(|(t, ns)| {
            (
                t.clone(),
                ns.iter().map(|n| (n.clone(), params[n].zeros_like())).collect(),
            )
        })
        .collect();
    // |w| in f32, once: each batch then adds |w| * |dL/dw| (= |w * dL/dw|) with one fused kernel.
    let magnitudes: HashMap<&str, Tensor> = names
        .values()
        .flatten()
        .map(|n| (n.as_str(), leaves[n].detach().to_kind(Kind::Float).abs()))
        .collect();
    let clock = PhaseClock::new(device);
    calibration.each_batch(|i, b| {
        clock.lap("batch ready on the device");
        let graph_inputs = b.graph_inputs(&model.graph)?;
        let graph = slice_dead_taps_for(&model.graph, &graph_inputs)?;
        let inputs = scoring_inputs(graph_inputs, input_kind, nhwc);
        let mut accumulate = |task: &TaskSpec, loss: &Tensor, keep_graph: bool| {
            let ws: Vec<&Tensor> = names[&task.name].iter().map(|n| &leaves[n]).collect();
            let grads = Tensor::run_backward(&[loss], &ws, keep_graph, false);
            clock.lap(&format!("{} backward", task.name));
            let _guard = tch::no_grad_guard();
            for (n, g) in names[&task.name].iter().zip(grads) {
                let slot = acc.get_mut(&task.name).unwrap().get_mut(n).unwrap();
                let _ = slot.addcmul_(&magnitudes[n.as_str()], &g.abs());
            }
            clock.lap(&format!("{} scores added", task.name));
        };
        task_losses(&graph, &leaves, &inputs, tasks, strategy, &b, &clock, &mut accumulate)?;
        clock.report(i);
        on_batch(i + 1);
        Ok(())
    })?;
    for s in acc.values_mut() {
        normalise(s);
    }
    Ok(acc)
}

/// Images in the scoring precision and layout; token ids and masks as they are.
fn scoring_inputs(graph_inputs: Inputs, kind: Kind, nhwc: bool) -> Inputs {
    graph_inputs
        .into_iter()
        .map(|(k, t)| match t.is_floating_point() {
            true => (k, layout(t.to_kind(kind), nhwc)),
            false => (k, t),
        })
        .collect()
}

/// Each task's loss on one batch, handed to `accumulate(task, loss, keep_graph)`: from one shared
/// forward (the graph kept for the next task's backward), or one forward per task.
#[allow(clippy::too_many_arguments)]
fn task_losses(
    graph: &crate::graph::Graph,
    leaves: &Params,
    inputs: &Inputs,
    tasks: &[TaskSpec],
    strategy: Strategy,
    batch: &Batch,
    clock: &PhaseClock,
    accumulate: &mut dyn FnMut(&TaskSpec, &Tensor, bool),
) -> Result<()> {
    match strategy {
        Strategy::Shared => {
            let task_names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
            let outputs = forward_inputs(graph, leaves, inputs, &task_names, Mode::Eval)?;
            clock.lap("forward");
            for (k, task) in tasks.iter().enumerate() {
                let loss = scoring_loss(task, &outputs[&task.name].to_kind(Kind::Float), batch)?;
                accumulate(task, &loss, k + 1 < tasks.len());
            }
        }
        Strategy::PerTask => {
            for task in tasks {
                let outputs = forward_inputs(graph, leaves, inputs, &[task.name.as_str()], Mode::Eval)?;
                clock.lap(&format!("{} forward", task.name));
                let loss = scoring_loss(task, &outputs[&task.name].to_kind(Kind::Float), batch)?;
                accumulate(task, &loss, false);
            }
        }
    }
    Ok(())
}

/// With `CUT_TRACE_SCORING` set in the environment, prints to stderr where each calibration batch's
/// time goes. It waits for the GPU at every lap, which removes the overlap it measures around, so
/// the laps add up to a little more than an untraced batch takes.
struct PhaseClock {
    device: Option<Device>,
    /// Start of the current lap and the laps so far (shared by closures that each take a lap).
    laps: std::cell::RefCell<(std::time::Instant, Vec<(String, f64)>)>,
}

impl PhaseClock {
    fn new(device: Device) -> PhaseClock {
        PhaseClock {
            device: std::env::var_os("CUT_TRACE_SCORING").map(|_| device),
            laps: std::cell::RefCell::new((std::time::Instant::now(), Vec::new())),
        }
    }

    fn lap(&self, label: &str) {
        let Some(device) = self.device else { return };
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
        let now = std::time::Instant::now();
        let mut laps = self.laps.borrow_mut();
        let ms = (now - laps.0).as_secs_f64() * 1e3;
        laps.1.push((label.to_string(), ms));
        laps.0 = now;
    }

    fn report(&self, batch: usize) {
        if self.device.is_none() {
            return;
        }
        let mut laps = self.laps.borrow_mut();
        let total: f64 = laps.1.iter().map(|(_, ms)| ms).sum();
        let parts: Vec<String> = laps.1.drain(..).map(|(l, ms)| format!("{l} {ms:.1}")).collect();
        eprintln!("scoring batch {batch}: {total:.1} ms = {}", parts.join(", "));
    }
}

/// First-order Taylor channel scores (Molchanov et al., 2017), per task, on the pre-trained weights
/// in inference mode (as snip). Removing channel k of a group leaves each of its producers' outputs
/// at the producer's bias, so the task's loss changes by about
/// `sum_p sum_positions dL/da_p[k] * (bias_p[k] - a_p[k])`; a channel scores the absolute value of
/// that per image, summed over the calibration images. A task scores the prunable groups whose
/// producers all belong to the backbone or to its own head.
pub fn taylor(
    model: &Model,
    params: &Params,
    tasks: &[TaskSpec],
    groups: &[ChannelGroup],
    calibration: Calibration,
    mut on_batch: impl FnMut(usize),
) -> Result<ChannelScores> {
    let graph = &model.graph;
    let removed_as = removed_outputs(graph, groups)?;
    let scored_groups = groups_scored_by_task(model, tasks, groups);
    let mut acc: ChannelScores = tasks
        .iter()
        .zip(&scored_groups)
        .map(|(t, ids)| {
            let zeros = ids.iter().map(|&i| (i, vec![0.0; groups[i].units()])).collect();
            (t.name.clone(), zeros)
        })
        .collect();
    let task_names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    calibration.each_batch(|i, b| {
        let (inputs, leaves) = differentiable(b.graph_inputs(graph)?, params);
        let sliced = slice_dead_taps_for(graph, &inputs)?;
        let mut outputs_of: HashMap<String, Tensor> = HashMap::new();
        let outputs = forward_inputs_observed(
            &sliced,
            &leaves,
            &inputs,
            &task_names,
            Mode::Eval,
            &mut |node, value| {
                if removed_as.contains_key(node.name.as_str()) {
                    outputs_of.insert(node.name.clone(), value.shallow_clone());
                }
            },
        )?;
        for (k, (task, ids)) in tasks.iter().zip(&scored_groups).enumerate() {
            if ids.is_empty() {
                continue;
            }
            let loss = scoring_loss(task, &outputs[&task.name], &b)?;
            let nodes: Vec<&str> = ids
                .iter()
                .flat_map(|&g| groups[g].producers.iter().map(String::as_str))
                .collect();
            let values: Vec<&Tensor> = nodes.iter().map(|n| &outputs_of[*n]).collect();
            let grads = Tensor::run_backward(&[&loss], &values, k + 1 < tasks.len(), false);
            let _guard = tch::no_grad_guard();
            let grad_of: HashMap<&str, Tensor> = nodes.iter().copied().zip(grads).collect();
            for &g in ids {
                let Some(change) = first_order_change(&groups[g], &outputs_of, &grad_of, &removed_as, params) else {
                    continue;
                };
                let scores = unit_scores(&groups[g], &change)?;
                let slot = acc
                    .get_mut(&task.name)
                    .and_then(|t| t.get_mut(&g))
                    .expect("allocated above");
                slot.iter_mut().zip(scores).for_each(|(s, v)| *s += v);
            }
        }
        on_batch(i + 1);
        Ok(())
    })?;
    Ok(acc)
}

/// Per prunable group's producer: what its removed output channel carries (None: zero), and
/// where its channels lie (counted from the last axis).
fn removed_outputs<'g>(
    graph: &'g crate::graph::Graph,
    groups: &'g [ChannelGroup],
) -> Result<HashMap<&'g str, (Option<String>, usize)>> {
    let mut removed_as = HashMap::new();
    for g in groups.iter().filter(|g| g.prunable()) {
        for p in &g.producers {
            let t = transform_params(graph, p)?;
            removed_as.insert(p.as_str(), (t.constant, t.axis));
        }
    }
    Ok(removed_as)
}

/// A batch's scores per unit of `group` from its per-image, per-channel changes: a unit (a head)
/// goes whole, so its channels' changes add up before the absolute value; summed over images.
fn unit_scores(group: &ChannelGroup, change: &Tensor) -> Result<Vec<f64>> {
    let n = change.size()[0];
    let per_unit = change
        .view([n, group.units() as i64, group.unit.width() as i64])
        .sum_dim_intlist([2i64].as_slice(), false, Kind::Double);
    let scores = per_unit.abs().sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
    Ok(Vec::<f64>::try_from(scores.to_device(Device::Cpu))?)
}

/// Per task, the groups whose channels feed weights the task is scored on.
fn groups_scored_by_task(model: &Model, tasks: &[TaskSpec], groups: &[ChannelGroup]) -> Vec<Vec<usize>> {
    tasks
        .iter()
        .map(|t| {
            let scored: BTreeSet<String> = scored_weights(model, &t.name).into_iter().collect();
            (0..groups.len())
                .filter(|&i| task_scores_group(&model.graph, &groups[i], |w| scored.contains(w)))
                .collect()
        })
        .collect()
}

/// The batch's inputs and the parameters with gradients on the tape: float inputs (images) are
/// made differentiable, which puts every activation on it; a graph whose inputs are all integers
/// (token ids) gets differentiable parameters instead. Only the gradients at the producers'
/// outputs are asked for either way.
fn differentiable(mut inputs: Inputs, params: &Params) -> (Inputs, Params) {
    let mut any_float = false;
    for t in inputs.values_mut() {
        if t.is_floating_point() {
            *t = t.to_kind(Kind::Float).detach().set_requires_grad(true);
            any_float = true;
        }
    }
    let leaves = params
        .iter()
        .map(|(n, t)| {
            let t = if !any_float && t.is_floating_point() {
                t.detach().set_requires_grad(true)
            } else {
                t.shallow_clone()
            };
            (n.clone(), t)
        })
        .collect();
    (inputs, leaves)
}

/// Per image and channel of `group`: the first-order change of the loss were each channel's
/// producers' outputs replaced by what a removed channel carries (the bias; an attention's value
/// bias), summed over the producers (None when no producer has a gradient for this task).
fn first_order_change(
    group: &ChannelGroup,
    outputs_of: &HashMap<String, Tensor>,
    grad_of: &HashMap<&str, Tensor>,
    removed_as: &HashMap<&str, (Option<String>, usize)>,
    params: &Params,
) -> Option<Tensor> {
    let mut change: Option<Tensor> = None;
    for p in &group.producers {
        let (a, grad) = (&outputs_of[p], &grad_of[p.as_str()]);
        if !grad.defined() {
            continue;
        }
        let (constant, axis) = &removed_as[p.as_str()];
        let channel_dim = a.dim() - axis;
        let delta = match constant {
            Some(c) => {
                let mut shape = vec![1i64; a.dim()];
                shape[channel_dim] = -1;
                a - params[c].view(shape.as_slice())
            }
            None => a.shallow_clone(),
        };
        // [N, ..., C, ...] -> [N, C]: summed over positions (spatial or tokens).
        let per_position = (delta * grad).to_kind(Kind::Double).movedim(channel_dim as i64, 1);
        let positions: Vec<i64> = (2..per_position.dim() as i64).collect();
        let per_image = if positions.is_empty() {
            per_position
        } else {
            per_position.sum_dim_intlist(positions.as_slice(), false, Kind::Double)
        };
        // A producer a split cuts writes this group's channels from an offset on (a fused
        // projection, at one offset per part).
        for offset in group.producer_offsets_of(p) {
            let part = per_image.narrow(1, offset as i64, group.channels as i64);
            change = Some(match change {
                Some(c) => c + part,
                None => part,
            });
        }
    }
    change
}
