//! Evaluation of a model (or a constant predictor) on a dataset split.

use crate::data::example::Samples;
use crate::data::loader::{Batch, Loader};
use crate::graph::interpreter::{forward_inputs, Mode, Params};
use crate::graph::passes::{fuse_conv_relu, slice_dead_taps_for};
use crate::graph::{Graph, InputRole, Model, TaskSpec};
use crate::metrics::{label_for, Accumulator, TaskMetrics, MIOU_CONVENTION};
use crate::tasks::fidelity::Fidelity;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Tensor};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EvalReport {
    pub model: String,
    pub data: String,
    pub split: String,
    pub images: usize,
    pub device: String,
    pub seconds: f64,
    pub miou_convention: String,
    pub tasks: Vec<TaskMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_m: Option<f64>,
    /// `--reference`: the model it was compared with, and per task how closely the model's
    /// outputs follow that model's (see `tasks::fidelity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<Vec<TaskMetrics>>,
}

/// Runs the model over `items` in batches and scores the given tasks. `on_batch` is called with the
/// number of images done (for progress bars).
pub fn evaluate(
    model: &Model,
    params: &Params,
    items: Samples,
    tasks: &[TaskSpec],
    batch: usize,
    device: Device,
    on_batch: impl FnMut(usize),
) -> Result<(Vec<TaskMetrics>, usize)> {
    let _guard = tch::no_grad_guard();
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    let (graph, _) = fuse_conv_relu(&model.graph, &names);
    let mut run = |b: &Batch| run_batch(&graph, params, b, &names);
    evaluate_run(&mut run, items, tasks, batch, device, on_batch)
}

/// [`evaluate`] with any runner of the model (the interpreter, ONNX Runtime).
pub fn evaluate_run(
    run: &mut Run,
    items: Samples,
    tasks: &[TaskSpec],
    batch: usize,
    device: Device,
    mut on_batch: impl FnMut(usize),
) -> Result<(Vec<TaskMetrics>, usize)> {
    let mut accs: Vec<Accumulator> = tasks.iter().map(Accumulator::new).collect::<Result<_>>()?;
    let mut images = 0;
    for b in Loader::sequential(items, batch, device) {
        let b = b?.to_device(device);
        let outputs = run(&b)?;
        for (task, acc) in tasks.iter().zip(accs.iter_mut()) {
            let output = outputs
                .get(&task.name)
                .ok_or_else(|| anyhow!("task '{}': the model has no output of that name", task.name))?;
            acc.update(&output.to_device(device), label_for(task, &b)?);
        }
        images += b.len();
        on_batch(images);
    }
    Ok((tasks.iter().zip(&accs).map(|(t, a)| a.finish(t)).collect(), images))
}

/// The tasks' outputs for one batch, in inference mode.
fn run_batch(graph: &Graph, params: &Params, b: &Batch, names: &[&str]) -> Result<BTreeMap<String, Tensor>> {
    let inputs = b.graph_inputs(graph)?;
    forward_inputs(
        &slice_dead_taps_for(graph, &inputs)?,
        params,
        &inputs,
        names,
        Mode::Eval,
    )
}

/// A model scored beside a reference model in one pass over the same batches.
pub struct Compared {
    pub metrics: Vec<TaskMetrics>,
    pub reference_metrics: Vec<TaskMetrics>,
    /// How closely the model's outputs follow the reference's (see `tasks::fidelity`).
    pub fidelity: Vec<TaskMetrics>,
    pub images: usize,
}

/// [`evaluate`] for `model` and `reference` together: both scored on each batch, and the model's
/// fidelity to the reference, with one read of the data. Outputs of a task must have one shape.
/// Only tasks with labels have metrics: distilled tasks (whose labels are a teacher's outputs),
/// and labelled kinds on labelled data; every task has its fidelity.
pub fn evaluate_against(
    model: (&Model, &Params),
    reference: (&Model, &Params),
    items: Samples,
    tasks: &[TaskSpec],
    batch: usize,
    device: Device,
) -> Result<Compared> {
    let _guard = tch::no_grad_guard();
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    let (graph, _) = fuse_conv_relu(&model.0.graph, &names);
    let (reference_graph, _) = fuse_conv_relu(&reference.0.graph, &names);
    let mut got = |b: &Batch| run_batch(&graph, model.1, b, &names);
    let mut want = |b: &Batch| run_batch(&reference_graph, reference.1, b, &names);
    let mask = model.0.graph.input_named_by(InputRole::AttentionMask);
    compare_runs(&mut got, &mut want, mask, items, tasks, batch, device)
}

/// One batch's outputs by task name, from any runner (the interpreter, ONNX Runtime).
pub type Run<'a> = dyn FnMut(&Batch) -> Result<BTreeMap<String, Tensor>> + 'a;

/// [`evaluate_against`] over two runners: `got` scored and compared with `want` on each batch.
/// `mask` names the input that marks real tokens (fidelity counts only those).
pub fn compare_runs(
    got: &mut Run,
    want: &mut Run,
    mask: Option<&str>,
    items: Samples,
    tasks: &[TaskSpec],
    batch: usize,
    device: Device,
) -> Result<Compared> {
    let new_accs = || tasks.iter().map(Accumulator::new).collect::<Result<Vec<_>>>();
    let (mut accs, mut reference_accs) = (new_accs()?, new_accs()?);
    let mut fidelity: Vec<Fidelity> = tasks.iter().map(|t| Fidelity::new(t.kind)).collect();
    let labelled: Vec<bool> = tasks
        .iter()
        .map(|t| t.distill || (items.labelled() && t.kind.has_labels()))
        .collect();
    let mut images = 0;
    for b in Loader::sequential(items, batch, device) {
        let b = b?.to_device(device);
        let (got, want) = (got(&b)?, want(&b)?);
        let weights = mask.map(|m| b.input(m)).transpose()?;
        for (k, task) in tasks.iter().enumerate() {
            let output = |outputs: &BTreeMap<String, Tensor>| {
                outputs
                    .get(&task.name)
                    .map(|t| t.to_device(device))
                    .ok_or_else(|| anyhow!("task '{}': no output of that name", task.name))
            };
            let (g, w) = (output(&got)?, output(&want)?);
            if g.size() != w.size() {
                bail!(
                    "task '{}': the outputs have shapes {:?} and {:?} (per batch); fidelity compares outputs of one shape",
                    task.name,
                    w.size(),
                    g.size()
                );
            }
            if labelled[k] {
                let label = label_for(task, &b)?;
                accs[k].update(&g, label);
                reference_accs[k].update(&w, label);
            }
            fidelity[k].update(&w, &g, weights);
        }
        images += b.len();
    }
    let finish = |accs: &[Accumulator]| {
        tasks
            .iter()
            .zip(accs)
            .zip(&labelled)
            .filter(|(_, &l)| l)
            .map(|((t, a), _)| a.finish(t))
            .collect()
    };
    Ok(Compared {
        metrics: finish(&accs),
        reference_metrics: finish(&reference_accs),
        fidelity: tasks
            .iter()
            .zip(&fidelity)
            .map(|(t, f)| TaskMetrics::of_fidelity(f, t))
            .collect(),
        images,
    })
}

/// The best constant predictor of each task (see its kind: the majority class, the mean normal,
/// the mean valid depth), fitted on the labels of `fit` items.
pub struct ConstantPredictor {
    constants: Vec<(TaskSpec, Box<dyn crate::tasks::Constant>)>,
}

impl ConstantPredictor {
    pub fn fit(items: Samples, tasks: &[TaskSpec]) -> Result<ConstantPredictor> {
        let mut constants = tasks
            .iter()
            .map(|t| Ok((t.clone(), crate::tasks::def_for(t).constant(t)?)))
            .collect::<Result<Vec<_>>>()?;
        for b in Loader::sequential(items, 16, Device::Cpu) {
            let b = b?;
            for (task, constant) in constants.iter_mut() {
                constant.fit(label_for(task, &b)?)?;
            }
        }
        Ok(ConstantPredictor { constants })
    }

    /// The constant output for a task, shaped for a batch whose label is `label`.
    pub fn predict(&self, task: &TaskSpec, label: &Tensor) -> Result<Tensor> {
        match self.constants.iter().find(|(t, _)| t.name == task.name) {
            Some((_, constant)) => Ok(constant.predict(label)),
            None => bail!("no constant predictor was fitted for task '{}'", task.name),
        }
    }

    pub fn evaluate(&self, items: Samples, tasks: &[TaskSpec]) -> Result<(Vec<TaskMetrics>, usize)> {
        let mut accs: Vec<Accumulator> = tasks.iter().map(Accumulator::new).collect::<Result<_>>()?;
        let mut images = 0;
        for b in Loader::sequential(items, 16, Device::Cpu) {
            let b = b?;
            for (task, acc) in tasks.iter().zip(accs.iter_mut()) {
                let label = label_for(task, &b)?;
                acc.update(&self.predict(task, label)?, label);
            }
            images += b.len();
        }
        Ok((tasks.iter().zip(&accs).map(|(t, a)| a.finish(t)).collect(), images))
    }
}

/// Reads the per-task metrics of a baseline: a `cut eval --json` report, or a `cut prune` report
/// (its metrics before pruning).
pub fn read_baseline(path: &Path) -> Result<Vec<TaskMetrics>> {
    let text = crate::fsio::read_input_text(path, crate::fsio::limit::JSON, "the baseline")?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: baseline is not JSON", path.display()))?;
    let tasks = value
        .get("tasks")
        .filter(|t| t.is_array())
        .or_else(|| {
            value
                .get("accuracy")
                .and_then(|a| a.get("before"))
                .filter(|b| b.is_array())
        })
        .ok_or_else(|| {
            anyhow!(
                "{}: baseline has no 'tasks' metrics (expected the JSON of cut eval or cut prune)",
                path.display()
            )
        })?;
    serde_json::from_value(tasks.clone())
        .with_context(|| format!("{}: field 'tasks' is not a list of task metrics", path.display()))
}

/// The report's metrics as `MIOU_CONVENTION` says.
pub fn convention() -> String {
    MIOU_CONVENTION.to_string()
}
