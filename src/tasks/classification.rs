//! Classification: one class per sample. Labels [N] class indices (the NYUv2 layout has none).
//! Metric: accuracy; a spatial head's output is averaged over its pixels first.

use super::{metric, no_labels, per_sample, Constant, KindDef, Metric, Metrics};
use crate::data::loader::Batch;
use crate::graph::{TaskKind, TaskSpec};
use anyhow::{bail, Result};
use tch::{Kind, Tensor};

pub struct Classification;

impl KindDef for Classification {
    fn label<'b>(&self, _task: &TaskSpec, _batch: &'b Batch) -> Result<&'b Tensor> {
        Err(no_labels(TaskKind::Classification))
    }
    fn loss(&self, task: &TaskSpec, _pred: &Tensor, _label: &Tensor) -> Result<Tensor> {
        bail!("task '{}': no loss for classification tasks on this dataset", task.name)
    }
    fn metrics(&self, _task: &TaskSpec) -> Box<dyn Metrics> {
        Box::new(Accuracy { correct: 0, total: 0 })
    }
    fn constant(&self, _task: &TaskSpec) -> Result<Box<dyn Constant>> {
        bail!("no constant predictor for classification tasks")
    }
}

struct Accuracy {
    correct: u64,
    total: u64,
}

impl Metrics for Accuracy {
    fn update(&mut self, pred: &Tensor, label: &Tensor) {
        let _guard = tch::no_grad_guard();
        let hit = per_sample(pred)
            .argmax(1, false)
            .eq_tensor(&label.to_kind(Kind::Int64).flatten(0, -1));
        self.correct += hit.sum(Kind::Int64).int64_value(&[]) as u64;
        self.total += hit.numel() as u64;
    }
    fn finish(&self) -> (u64, Vec<Metric>) {
        let accuracy = if self.total > 0 {
            self.correct as f64 / self.total as f64
        } else {
            0.0
        };
        (self.total, vec![metric("accuracy", accuracy, true, self.total > 0)])
    }
}
