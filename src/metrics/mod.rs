//! Task metrics accumulated over a whole dataset, and the multi-task summary delta_m. Which metrics
//! a task has is its kind's business (`src/tasks/`, one file per kind); predictions are resized
//! (nearest) to the label size before scoring, as in the reference. The mIoU convention: averaged
//! over the classes present in ground truth or prediction (the reference averages only over classes
//! with a nonzero diagonal, which inflates it).

use crate::data::loader::Batch;
use crate::graph::{TaskKind, TaskSpec};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

pub use crate::tasks::fidelity;

pub use crate::tasks::{resize_nearest, Metric};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    pub task: String,
    pub kind: TaskKind,
    /// Pixels (or samples) scored.
    pub count: u64,
    pub metrics: Vec<Metric>,
    /// What the user should know about the labels (out-of-range classes, nothing scored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl TaskMetrics {
    /// Task `task`'s fidelity (see [`fidelity`]) as a report entry.
    pub fn of_fidelity(f: &fidelity::Fidelity, task: &TaskSpec) -> TaskMetrics {
        let (count, metrics) = f.values();
        TaskMetrics {
            task: task.name.clone(),
            kind: task.kind,
            count,
            metrics,
            warnings: Vec::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.name == name).and_then(|m| m.value)
    }
}

pub const MIOU_CONVENTION: &str =
    "mean IoU over classes present in ground truth or prediction (dataset-wide confusion matrix)";

/// The label a task is scored against, as its kind finds it in a batch.
pub fn label_for<'b>(task: &TaskSpec, batch: &'b Batch) -> Result<&'b Tensor> {
    crate::tasks::def_for(task).label(task, batch)
}

/// Dataset-wide metrics of one task, as its kind defines them (see [`crate::tasks`]).
pub struct Accumulator {
    inner: Box<dyn crate::tasks::Metrics>,
}

impl Accumulator {
    pub fn new(task: &TaskSpec) -> Result<Accumulator> {
        Ok(Accumulator {
            inner: crate::tasks::def_for(task).metrics(task),
        })
    }

    /// Adds a batch: `pred` is the raw model output [N, C, h, w], `label` the task's ground truth.
    pub fn update(&mut self, pred: &Tensor, label: &Tensor) {
        self.inner.update(pred, label);
    }

    pub fn finish(&self, task: &TaskSpec) -> TaskMetrics {
        let (count, metrics) = self.inner.finish();
        let mut warnings = self.inner.warnings();
        if count == 0 {
            warnings.push("nothing was scored (no valid labels): its metrics are missing".into());
        }
        TaskMetrics {
            task: task.name.clone(),
            kind: task.kind,
            count,
            metrics,
            warnings,
        }
    }
}

/// delta_m (Maninis et al. 2019) in percent: the mean over tasks of the mean relative change of each
/// metric against the baseline, signed so that positive is better. Tasks or metrics missing from the
/// baseline are skipped; an error if nothing can be compared.
pub fn delta_m(current: &[TaskMetrics], baseline: &[TaskMetrics]) -> Result<f64> {
    let mut per_task = Vec::new();
    for t in current {
        let Some(b) = baseline.iter().find(|b| b.task == t.task) else {
            continue;
        };
        let mut terms = Vec::new();
        for metric in &t.metrics {
            let Some(bv) = b.get(&metric.name) else { continue };
            if bv == 0.0 {
                continue;
            }
            let sign = if metric.higher_is_better { 1.0 } else { -1.0 };
            let Some(v) = metric.value else { continue };
            terms.push(sign * (v - bv) / bv * 100.0);
        }
        if !terms.is_empty() {
            per_task.push(terms.iter().sum::<f64>() / terms.len() as f64);
        }
    }
    if per_task.is_empty() {
        bail!("no task and metric in common with the baseline");
    }
    Ok(per_task.iter().sum::<f64>() / per_task.len() as f64)
}
