//! Depth: metres per pixel. Labels [N, 1, H, W]; values at or below 3e-5 are invalid. Loss: L1 over
//! valid pixels. Metrics over valid pixels, pixel-weighted over the split: abs error, rel error
//! |d - g| / g, and the share with max(d/g, g/d) below 1.25, 1.25^2, 1.25^3 (predictions clamped to
//! >= 1e-6 for the ratio). Constant: the mean valid depth.

use super::{at_label_size, metric, Constant, KindDef, Metric, Metrics};
use crate::data::layout::DEPTH_VALID_MIN;
use crate::data::loader::Batch;
use crate::graph::TaskSpec;
use anyhow::Result;
use tch::{Device, Kind, Tensor};

pub struct Depth;

impl KindDef for Depth {
    fn fixed_outputs(&self) -> Option<usize> {
        Some(1)
    }
    fn default_loss_weight(&self) -> f64 {
        3.0
    }
    fn label<'b>(&self, _task: &TaskSpec, batch: &'b Batch) -> Result<&'b Tensor> {
        batch.require_label("depth")
    }
    fn loss(&self, _task: &TaskSpec, pred: &Tensor, gt: &Tensor) -> Result<Tensor> {
        let valid = gt.gt(DEPTH_VALID_MIN as f64).to_kind(Kind::Float);
        Ok(((pred - gt).abs() * &valid).sum(Kind::Float) / valid.sum(Kind::Float).clamp_min(1.0))
    }
    fn metrics(&self, _task: &TaskSpec) -> Box<dyn Metrics> {
        Box::new(DepthErrors {
            count: 0,
            abs: 0.0,
            rel: 0.0,
            deltas: [0; 3],
        })
    }
    fn constant(&self, _task: &TaskSpec) -> Result<Box<dyn Constant>> {
        Ok(Box::new(MeanDepth { sum: 0.0, count: 0 }))
    }
}

struct DepthErrors {
    count: u64,
    abs: f64,
    rel: f64,
    deltas: [u64; 3],
}

impl Metrics for DepthErrors {
    fn update(&mut self, pred: &Tensor, label: &Tensor) {
        let _guard = tch::no_grad_guard();
        let pred = at_label_size(pred, label);
        let valid = label.gt(DEPTH_VALID_MIN as f64);
        let g = label.masked_select(&valid).to_kind(Kind::Double);
        let d = pred.masked_select(&valid).to_kind(Kind::Double);
        let err = (&d - &g).abs();
        self.count += g.numel() as u64;
        self.abs += err.sum(Kind::Double).double_value(&[]);
        self.rel += (&err / &g).sum(Kind::Double).double_value(&[]);
        let dc = d.clamp_min(1e-6);
        let ratio = (&dc / &g).maximum(&(&g / &dc));
        for (k, slot) in self.deltas.iter_mut().enumerate() {
            *slot += ratio.lt(1.25f64.powi(k as i32 + 1)).sum(Kind::Int64).int64_value(&[]) as u64;
        }
    }
    fn finish(&self) -> (u64, Vec<Metric>) {
        let (n, scored) = (self.count.max(1) as f64, self.count > 0);
        (
            self.count,
            vec![
                metric("abs_err", self.abs / n, false, scored),
                metric("rel_err", self.rel / n, false, scored),
                metric("delta_1.25", self.deltas[0] as f64 / n * 100.0, true, scored),
                metric("delta_1.25^2", self.deltas[1] as f64 / n * 100.0, true, scored),
                metric("delta_1.25^3", self.deltas[2] as f64 / n * 100.0, true, scored),
            ],
        )
    }
}

struct MeanDepth {
    sum: f64,
    count: u64,
}

impl Constant for MeanDepth {
    fn fit(&mut self, label: &Tensor) -> Result<()> {
        let valid = label.gt(DEPTH_VALID_MIN as f64);
        self.sum += label.masked_select(&valid).sum(Kind::Double).double_value(&[]);
        self.count += valid.sum(Kind::Int64).int64_value(&[]) as u64;
        Ok(())
    }
    fn predict(&self, label: &Tensor) -> Tensor {
        let (n, hw) = super::batch_and_hw(label);
        let mean = if self.count > 0 {
            self.sum / self.count as f64
        } else {
            0.0
        };
        Tensor::full([n, 1, hw.0, hw.1], mean, (Kind::Float, Device::Cpu))
    }
}
