//! The reference's single-task losses. Ground truth is resized (nearest) to the prediction's size.

use crate::data::layout::{DEPTH_VALID_MIN, SEG_IGNORE};
use crate::data::loader::Batch;
use crate::graph::{TaskKind, TaskSpec};
use crate::metrics::label_for;
use anyhow::Result;
use tch::{Kind, Reduction, Tensor};

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

/// Cross-entropy (ignore 255), 1 - mean cosine over valid normals, or L1 over valid depth.
pub fn task_loss(task: &TaskSpec, pred: &Tensor, batch: &Batch) -> Result<Tensor> {
    let s = pred.size();
    let hw = (s[2], s[3]);
    let gt = resize_label(label_for(task.kind, batch)?, hw);
    Ok(match task.kind {
        TaskKind::Segmentation => {
            let gt = gt.where_self(&gt.lt(task.outputs as i64), &Tensor::full_like(&gt, SEG_IGNORE));
            if gt.ne(SEG_IGNORE).sum(Kind::Int64).int64_value(&[]) == 0 {
                return Ok(pred.sum(Kind::Float) * 0.0);
            }
            pred.cross_entropy_loss::<Tensor>(&gt, None, Reduction::Mean, SEG_IGNORE, 0.0)
        }
        TaskKind::Normal => {
            let valid = gt.square().sum_dim_intlist(1, false, Kind::Float).gt(0.5);
            let n = valid.sum(Kind::Float);
            let p = pred
                / pred
                    .square()
                    .sum_dim_intlist(1, true, Kind::Float)
                    .sqrt()
                    .clamp_min(1e-12);
            let cos = (&p * &gt).sum_dim_intlist(1, false, Kind::Float);
            let cos_sum = (cos * valid.to_kind(Kind::Float)).sum(Kind::Float);
            1.0 - cos_sum / n.clamp_min(1.0)
        }
        TaskKind::Depth => {
            let valid = gt.gt(DEPTH_VALID_MIN as f64).to_kind(Kind::Float);
            ((pred - &gt).abs() * &valid).sum(Kind::Float) / valid.sum(Kind::Float).clamp_min(1.0)
        }
        other => anyhow::bail!(
            "task '{}': no loss for {} tasks on this dataset",
            task.name,
            other.as_str()
        ),
    })
}
