//! Segmentation: per-pixel classes. Labels [N, H, W] int64, 255 ignored. Loss: cross-entropy.
//! Metrics: mIoU from the dataset-wide confusion matrix, averaged over the classes present in ground
//! truth or prediction, and pixel accuracy. Constant: the majority class of the fitted labels.

use super::{at_label_size, metric, Constant, KindDef, Metric, Metrics};
use crate::data::layout::SEG_IGNORE;
use crate::data::loader::Batch;
use crate::graph::TaskSpec;
use anyhow::Result;
use tch::{Kind, Reduction, Tensor};

pub struct Segmentation;

impl KindDef for Segmentation {
    fn label<'b>(&self, _task: &TaskSpec, batch: &'b Batch) -> Result<&'b Tensor> {
        batch.require_label("seg")
    }
    fn loss(&self, task: &TaskSpec, pred: &Tensor, gt: &Tensor) -> Result<Tensor> {
        let gt = gt.where_self(&gt.lt(task.outputs as i64), &Tensor::full_like(gt, SEG_IGNORE));
        if gt.ne(SEG_IGNORE).sum(Kind::Int64).int64_value(&[]) == 0 {
            return Ok(pred.sum(Kind::Float) * 0.0);
        }
        Ok(pred.cross_entropy_loss::<Tensor>(&gt, None, Reduction::Mean, SEG_IGNORE, 0.0))
    }
    fn metrics(&self, task: &TaskSpec) -> Box<dyn Metrics> {
        Box::new(Confusion {
            classes: task.outputs,
            confusion: vec![0; task.outputs * task.outputs],
            out_of_range: 0,
        })
    }
    fn constant(&self, task: &TaskSpec) -> Result<Box<dyn Constant>> {
        Ok(Box::new(Majority {
            hist: vec![0; task.outputs.max(1)],
        }))
    }
}

struct Confusion {
    classes: usize,
    confusion: Vec<u64>,
    /// Labels other than the ignore value that are not a class of the model.
    out_of_range: u64,
}

impl Metrics for Confusion {
    fn warnings(&self) -> Vec<String> {
        if self.out_of_range == 0 {
            return Vec::new();
        }
        vec![format!(
            "{} labelled pixels hold a class at or above the model's {} (or below 0) and were not scored",
            self.out_of_range, self.classes
        )]
    }
    fn update(&mut self, pred: &Tensor, label: &Tensor) {
        let _guard = tch::no_grad_guard();
        let pred = at_label_size(pred, label);
        let c = self.classes as i64;
        let gt = label.flatten(0, -1);
        let pr = pred.argmax(1, false).flatten(0, -1);
        let valid = gt.ne(SEG_IGNORE).logical_and(&gt.lt(c)).logical_and(&gt.ge(0));
        let labelled = gt.ne(SEG_IGNORE).sum(Kind::Int64).int64_value(&[]);
        self.out_of_range += (labelled - valid.sum(Kind::Int64).int64_value(&[])) as u64;
        let idx = gt.masked_select(&valid) * c + pr.masked_select(&valid);
        let counts = idx.bincount(None::<Tensor>, c * c).to_device(tch::Device::Cpu);
        let counts: Vec<i64> = Vec::<i64>::try_from(&counts).expect("bincount is int64");
        for (acc, v) in self.confusion.iter_mut().zip(counts) {
            *acc += v as u64;
        }
    }
    fn finish(&self) -> (u64, Vec<Metric>) {
        let (c, confusion) = (self.classes, &self.confusion);
        let total: u64 = confusion.iter().sum();
        let diag: u64 = (0..c).map(|i| confusion[i * c + i]).sum();
        let mut ious = Vec::new();
        for k in 0..c {
            let tp = confusion[k * c + k];
            let gt: u64 = (0..c).map(|j| confusion[k * c + j]).sum();
            let pr: u64 = (0..c).map(|i| confusion[i * c + k]).sum();
            let union = gt + pr - tp;
            if union > 0 {
                ious.push(tp as f64 / union as f64);
            }
        }
        let miou = if ious.is_empty() {
            0.0
        } else {
            ious.iter().sum::<f64>() / ious.len() as f64
        };
        let acc = if total > 0 { diag as f64 / total as f64 } else { 0.0 };
        let scored = total > 0;
        (
            total,
            vec![
                metric("miou", miou, true, scored),
                metric("pixel_acc", acc, true, scored),
            ],
        )
    }
}

/// Counts of each class in the fitted labels; predicts the most frequent one.
struct Majority {
    hist: Vec<u64>,
}

impl Constant for Majority {
    fn fit(&mut self, label: &Tensor) -> Result<()> {
        let classes = self.hist.len() as i64;
        let seg = label.flatten(0, -1);
        let valid = seg.ne(SEG_IGNORE).logical_and(&seg.lt(classes));
        let counts = Vec::<i64>::try_from(&seg.masked_select(&valid).bincount(None::<Tensor>, classes))?;
        for (h, c) in self.hist.iter_mut().zip(counts) {
            *h += c as u64;
        }
        Ok(())
    }
    fn predict(&self, label: &Tensor) -> Tensor {
        let (n, hw) = super::batch_and_hw(label);
        let c = self.hist.len() as i64;
        let majority = self
            .hist
            .iter()
            .enumerate()
            .max_by_key(|(_, &count)| count)
            .map(|(i, _)| i)
            .unwrap_or(0);
        let mut logits = vec![0f32; c as usize];
        logits[majority] = 1.0;
        Tensor::from_slice(&logits)
            .view([1, c, 1, 1])
            .expand([n, c, hw.0, hw.1], false)
    }
}
