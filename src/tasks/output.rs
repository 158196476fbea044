//! Output: an imported model's output whose kind nobody named. It has no labels, loss or metrics
//! of its own: pruning and splitting distil it from the model (`super::distill`), and `cut eval`
//! and `cut train` refuse it and say how to name its kind.

use super::features::Nothing;
use super::{Constant, KindDef, Metrics};
use crate::data::loader::Batch;
use crate::graph::TaskSpec;
use anyhow::{bail, Result};
use tch::Tensor;

pub struct Output;

fn refuse(task: &TaskSpec) -> anyhow::Error {
    anyhow::anyhow!(
        "output '{}' has no labelled kind: name one at import (--task-kinds {}:classification, or segmentation, depth, normal, regression)",
        task.name,
        task.name
    )
}

impl KindDef for Output {
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
