//! Regression: one value per sample. Labels [N] (the NYUv2 layout has none). Metric: mean absolute
//! error; a spatial head's output is averaged over its pixels first.

use super::{metric, no_labels, per_sample, Constant, KindDef, Metric, Metrics};
use crate::data::loader::Batch;
use crate::graph::{TaskKind, TaskSpec};
use anyhow::{bail, Result};
use tch::{Kind, Tensor};

pub struct Regression;

impl KindDef for Regression {
    fn default_outputs(&self) -> Option<usize> {
        Some(1)
    }
    fn label<'b>(&self, _task: &TaskSpec, _batch: &'b Batch) -> Result<&'b Tensor> {
        Err(no_labels(TaskKind::Regression))
    }
    fn loss(&self, task: &TaskSpec, _pred: &Tensor, _label: &Tensor) -> Result<Tensor> {
        bail!("task '{}': no loss for regression tasks on this dataset", task.name)
    }
    fn metrics(&self, _task: &TaskSpec) -> Box<dyn Metrics> {
        Box::new(AbsoluteError { count: 0, abs: 0.0 })
    }
    fn constant(&self, _task: &TaskSpec) -> Result<Box<dyn Constant>> {
        bail!("no constant predictor for regression tasks")
    }
}

struct AbsoluteError {
    count: u64,
    abs: f64,
}

impl Metrics for AbsoluteError {
    fn update(&mut self, pred: &Tensor, label: &Tensor) {
        let _guard = tch::no_grad_guard();
        let p = per_sample(pred).flatten(0, -1);
        self.abs += (p - label.to_kind(Kind::Float).flatten(0, -1))
            .abs()
            .sum(Kind::Double)
            .double_value(&[]);
        self.count += label.numel() as u64;
    }
    fn finish(&self) -> (u64, Vec<Metric>) {
        (
            self.count,
            vec![metric(
                "mae",
                self.abs / self.count.max(1) as f64,
                false,
                self.count > 0,
            )],
        )
    }
}
