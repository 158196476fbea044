//! Task kinds, one file each: what a task of the kind is scored against, its loss, its metrics, its
//! best constant predictor, its default loss weight and output width. [`def`] is the one place a
//! kind is looked up; everything else (training, evaluation, pruning, the CLI) asks it.

mod classification;
mod depth;
pub mod distill;
mod features;
pub mod fidelity;
mod normal;
mod output;
mod regression;
mod segmentation;
mod text;

use crate::data::loader::Batch;
use crate::graph::{TaskKind, TaskSpec};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Everything about one task kind.
pub trait KindDef: Sync {
    /// The output width when a task spec gives none; `None` when it must be given (classes).
    /// A kind with a fixed width defaults to it.
    fn default_outputs(&self) -> Option<usize> {
        self.fixed_outputs()
    }
    /// The only output width the kind's loss and metrics work with, if there is one.
    fn fixed_outputs(&self) -> Option<usize> {
        None
    }
    /// The weight of the kind's loss in a multi-task sum (the reference's lambdas).
    fn default_loss_weight(&self) -> f64 {
        1.0
    }
    /// The ground truth of a task of this kind in a batch.
    fn label<'b>(&self, task: &TaskSpec, batch: &'b Batch) -> Result<&'b Tensor>;
    /// The loss of a prediction against its label (for a spatial prediction [N, C, h, w], a label
    /// already resized to h x w).
    fn loss(&self, task: &TaskSpec, pred: &Tensor, label: &Tensor) -> Result<Tensor>;
    /// The loss importance scores (snip, taylor) differentiate: the training loss, except where
    /// that is at its minimum on the unpruned model (see [`distill`]).
    fn scoring_loss(&self, task: &TaskSpec, pred: &Tensor, label: &Tensor) -> Result<Tensor> {
        self.loss(task, pred, label)
    }
    /// A dataset-wide metric accumulator for a task of this kind.
    fn metrics(&self, task: &TaskSpec) -> Box<dyn Metrics>;
    /// The best constant predictor, to be fitted on a split's labels.
    fn constant(&self, task: &TaskSpec) -> Result<Box<dyn Constant>>;
}

/// Metrics accumulated over a whole split.
pub trait Metrics: Send {
    /// Adds a batch: `pred` is the raw model output, `label` the task's ground truth.
    fn update(&mut self, pred: &Tensor, label: &Tensor);
    /// What was scored (pixels or samples) and the metrics.
    fn finish(&self) -> (u64, Vec<Metric>);
    /// What the user should know about the labels seen (out-of-range values, say).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A predictor that outputs the same value for every input, fitted on labels.
pub trait Constant {
    fn fit(&mut self, label: &Tensor) -> Result<()>;
    /// The constant output for a batch whose label is `label` ([N, C, H, W] for an image label
    /// [N, ..., H, W]; [N, C] or [N, L, C] for sequence and token labels), once fitted.
    fn predict(&self, label: &Tensor) -> Tensor;
}

/// The definition of a kind.
pub fn def(kind: TaskKind) -> &'static dyn KindDef {
    match kind {
        TaskKind::Segmentation => &segmentation::Segmentation,
        TaskKind::Normal => &normal::Normal,
        TaskKind::Depth => &depth::Depth,
        TaskKind::Classification => &classification::Classification,
        TaskKind::Regression => &regression::Regression,
        TaskKind::Token => &text::TOKEN,
        TaskKind::Sequence | TaskKind::SequenceMean => &text::SEQUENCE,
        TaskKind::Features => &features::Features,
        TaskKind::Output => &output::Output,
    }
}

/// The definition a task runs by: its kind's, or distillation's for a distilled task.
pub fn def_for(task: &TaskSpec) -> &'static dyn KindDef {
    if task.distill {
        distill::of(task.kind)
    } else {
        def(task.kind)
    }
}

/// One metric's value and direction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    /// `None` (null in JSON, "-" in tables) when nothing was scored: never a 0 that reads as a
    /// perfect error.
    pub value: Option<f64>,
    pub higher_is_better: bool,
}

impl Metric {
    /// The value for a table: four decimals, or "-" when missing.
    pub fn shown(&self) -> String {
        Metric::show(self.value)
    }

    /// A metric value for a table: four decimals, or "-" when missing.
    pub fn show(value: Option<f64>) -> String {
        value.map_or("-".to_string(), |v| format!("{v:.4}"))
    }
}

/// The batch size and the last two dimensions (H, W) of an image label.
pub(crate) fn batch_and_hw(label: &Tensor) -> (i64, (i64, i64)) {
    let s = label.size();
    (s[0], (s[s.len() - 2], s[s.len() - 1]))
}

/// Nearest resize of [N, C, h, w] predictions to [H, W].
pub fn resize_nearest(pred: &Tensor, hw: (i64, i64)) -> Tensor {
    let s = pred.size();
    if (s[2], s[3]) == hw {
        pred.shallow_clone()
    } else {
        pred.upsample_nearest2d([hw.0, hw.1], None, None)
    }
}

/// A named metric, missing when nothing was scored (`scored` false).
pub(crate) fn metric(name: &str, value: f64, higher_is_better: bool, scored: bool) -> Metric {
    Metric {
        name: name.into(),
        value: scored.then_some(value),
        higher_is_better,
    }
}

/// A per-sample prediction [N, C] from a head that may still be spatial ([N, C, h, w]: averaged).
pub(crate) fn per_sample(pred: &Tensor) -> Tensor {
    if pred.dim() == 4 {
        pred.mean_dim([2i64, 3].as_slice(), false, tch::Kind::Float)
    } else {
        pred.to_kind(tch::Kind::Float)
    }
}

/// The prediction, as f32, resized (nearest) to the label's last two dimensions.
pub(crate) fn at_label_size(pred: &Tensor, label: &Tensor) -> Tensor {
    let ls = label.size();
    let hw = (ls[ls.len() - 2], ls[ls.len() - 1]);
    resize_nearest(&pred.to_kind(tch::Kind::Float), hw)
}

/// The error for a kind the NYUv2 layout has no labels for.
pub(crate) fn no_labels(kind: TaskKind) -> anyhow::Error {
    anyhow::anyhow!("the NYUv2-layout dataset has no {} labels", kind.as_str())
}

/// Parses "seg:segmentation:13,normal:normal,depth:depth" (outputs default to 3 for normal, 1 for depth).
pub fn parse_task_specs(text: &str) -> Result<Vec<TaskSpec>> {
    let specs = crate::graph::parse_task_list(text)
        .iter()
        .map(|item| {
            let parts: Vec<&str> = item.split(':').collect();
            let (name, kind, outputs) = match parts.as_slice() {
                [name, kind] => (*name, TaskKind::parse(kind)?, None),
                [name, kind, n] => (
                    *name,
                    TaskKind::parse(kind)?,
                    Some(
                        n.parse::<usize>()
                            .with_context(|| format!("task '{item}': output count '{n}' is not a number"))?,
                    ),
                ),
                _ => bail!("task '{item}': expected name:kind[:outputs], such as seg:segmentation:13"),
            };
            let outputs = match (outputs, def(kind).default_outputs()) {
                (Some(0), _) => bail!("task '{item}': output count must be positive"),
                (Some(n), _) | (None, Some(n)) => n,
                (None, None) => bail!(
                    "task '{item}': give the number of classes, such as {name}:{}:13",
                    kind.as_str()
                ),
            };
            Ok(TaskSpec {
                name: name.to_string(),
                kind,
                outputs,
                labels: None,
                distill: false,
            })
        })
        .collect::<Result<Vec<TaskSpec>>>()?;
    check_specs(&specs)?;
    Ok(specs)
}

/// Refuses a task list whose output widths do not fit their kinds (a normal task needs 3).
/// The first name that a list holds twice.
pub fn first_duplicate(names: &[String]) -> Option<&str> {
    let mut seen = std::collections::BTreeSet::new();
    names.iter().find(|n| !seen.insert(n.as_str())).map(String::as_str)
}

pub fn check_specs(tasks: &[TaskSpec]) -> Result<()> {
    for t in tasks {
        // One class makes every pixel right: mIoU and accuracy 1.0 whatever the model does.
        if t.kind == TaskKind::Segmentation && t.outputs < 2 {
            bail!(
                "task '{}' (segmentation) has {} output; a segmentation head needs at least two classes",
                t.name,
                t.outputs
            );
        }
        if let Some(label) = t.labels.as_deref().and_then(first_duplicate) {
            bail!("task '{}' lists label '{label}' twice", t.name);
        }
        if let Some(n) = def(t.kind).fixed_outputs() {
            if t.outputs != n {
                bail!(
                    "task '{}' ({}) has {} outputs; {} tasks have {n}",
                    t.name,
                    t.kind.as_str(),
                    t.outputs,
                    t.kind.as_str()
                );
            }
        }
    }
    Ok(())
}
