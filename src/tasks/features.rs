//! Features: the output of a split model's device part, the tensor it sends to the cloud part
//! (see `crate::split`). It has no labels, loss or metrics: `cut eval` and `cut train` refuse it and
//! point to the cloud part.

use super::{Constant, KindDef, Metric, Metrics};
use crate::data::loader::Batch;
use crate::graph::TaskSpec;
use anyhow::{bail, Result};
use tch::Tensor;

pub struct Features;

fn refuse(task: &TaskSpec) -> anyhow::Error {
    anyhow::anyhow!(
        "output '{}' is a split model's features (what its device part sends), not a task with labels; evaluate the cloud part",
        task.name
    )
}

impl KindDef for Features {
    fn label<'b>(&self, task: &TaskSpec, _batch: &'b Batch) -> Result<&'b Tensor> {
        Err(refuse(task))
    }
    fn loss(&self, task: &TaskSpec, _pred: &Tensor, _label: &Tensor) -> Result<Tensor> {
        Err(refuse(task))
    }
    fn metrics(&self, _task: &TaskSpec) -> Box<dyn Metrics> {
        Box::new(Nothing)
    }
    fn constant(&self, task: &TaskSpec) -> Result<Box<dyn Constant>> {
        bail!("{}", refuse(task))
    }
}

/// Metrics of a kind without labels: none.
pub(super) struct Nothing;

impl Metrics for Nothing {
    fn update(&mut self, _pred: &Tensor, _label: &Tensor) {}
    fn finish(&self) -> (u64, Vec<Metric>) {
        (0, Vec::new())
    }
}
