//! A task's loss against its label from a batch. An image label is resized (nearest) to a spatial
//! prediction's size.

use crate::data::loader::Batch;
use crate::graph::TaskSpec;
use anyhow::Result;
use tch::{Kind, Tensor};

fn resize_label(label: &Tensor, hw: (i64, i64)) -> Tensor {
    let s = label.size();
    if (s[s.len() - 2], s[s.len() - 1]) == hw {
        return label.shallow_clone();
    }
    if label.dim() == 3 {
        // [N, H, W] integer classes.
        label
            .unsqueeze(1)
            .to_kind(Kind::Float)
            .upsample_nearest2d([hw.0, hw.1], None, None)
            .squeeze_dim(1)
            .to_kind(Kind::Int64)
    } else {
        label.upsample_nearest2d([hw.0, hw.1], None, None)
    }
}

/// The task's loss as its kind defines it (cross-entropy ignoring 255, 1 - mean cosine over valid
/// normals, L1 over valid depth; see `src/tasks/`), against its label from the batch.
pub fn task_loss(task: &TaskSpec, pred: &Tensor, batch: &Batch) -> Result<Tensor> {
    let kind = crate::tasks::def_for(task);
    let label = sized_label(kind.label(task, batch)?, pred);
    kind.loss(task, pred, &label)
}

/// The loss importance scores differentiate (see `KindDef::scoring_loss`), against the same label.
pub fn scoring_loss(task: &TaskSpec, pred: &Tensor, batch: &Batch) -> Result<Tensor> {
    let kind = crate::tasks::def_for(task);
    let label = sized_label(kind.label(task, batch)?, pred);
    kind.scoring_loss(task, pred, &label)
}

/// The label resized to a spatial prediction's size; as it is for any other prediction.
fn sized_label(label: &Tensor, pred: &Tensor) -> Tensor {
    if pred.dim() != 4 {
        return label.shallow_clone();
    }
    let s = pred.size();
    resize_label(label, (s[2], s[3]))
}
