//! Surface normals: a unit vector per pixel. Labels [N, 3, H, W], zero vectors invalid. Loss:
//! 1 - mean cosine over valid pixels. Metrics: the angle between the L2-normalised prediction and
//! the ground truth, mean, median, % within 11.25, 22.5, 30 degrees. Constant: the mean normal,
//! renormalised.

use super::{at_label_size, metric, Constant, KindDef, Metric, Metrics};
use crate::data::loader::Batch;
use crate::graph::TaskSpec;
use anyhow::Result;
use tch::{Kind, Tensor};

pub struct Normal;

/// The prediction scaled to unit length per pixel.
fn unit(pred: &Tensor) -> Tensor {
    pred / pred
        .square()
        .sum_dim_intlist(1, true, Kind::Float)
        .sqrt()
        .clamp_min(1e-12)
}

impl KindDef for Normal {
    fn fixed_outputs(&self) -> Option<usize> {
        Some(3)
    }
    fn default_loss_weight(&self) -> f64 {
        20.0
    }
    fn label<'b>(&self, _task: &TaskSpec, batch: &'b Batch) -> Result<&'b Tensor> {
        batch.require_label("normal")
    }
    fn loss(&self, _task: &TaskSpec, pred: &Tensor, gt: &Tensor) -> Result<Tensor> {
        let valid = gt.square().sum_dim_intlist(1, false, Kind::Float).gt(0.5);
        let n = valid.sum(Kind::Float);
        let cos = (&unit(pred) * gt).sum_dim_intlist(1, false, Kind::Float);
        let cos_sum = (cos * valid.to_kind(Kind::Float)).sum(Kind::Float);
        Ok(1.0 - cos_sum / n.clamp_min(1.0))
    }
    fn metrics(&self, _task: &TaskSpec) -> Box<dyn Metrics> {
        Box::new(Angles { angles: Vec::new() })
    }
    fn constant(&self, _task: &TaskSpec) -> Result<Box<dyn Constant>> {
        Ok(Box::new(MeanNormal { sum: [0.0; 3] }))
    }
}

struct Angles {
    angles: Vec<f32>,
}

impl Metrics for Angles {
    fn update(&mut self, pred: &Tensor, gt: &Tensor) {
        let _guard = tch::no_grad_guard();
        let pred = at_label_size(pred, gt);
        let valid = gt.square().sum_dim_intlist(1, false, Kind::Float).gt(0.5);
        let cos = (&unit(&pred) * gt)
            .sum_dim_intlist(1, false, Kind::Float)
            .clamp(-1.0, 1.0);
        let deg = cos.acos().masked_select(&valid) * (180.0 / std::f64::consts::PI);
        let deg = deg.to_device(tch::Device::Cpu);
        self.angles.extend(Vec::<f32>::try_from(&deg).expect("float angles"));
    }
    fn finish(&self) -> (u64, Vec<Metric>) {
        let angles = &self.angles;
        let n = angles.len();
        let mut sorted = angles.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let mean = if n > 0 {
            angles.iter().map(|&a| a as f64).sum::<f64>() / n as f64
        } else {
            0.0
        };
        let median = match n {
            0 => 0.0,
            _ if n % 2 == 1 => sorted[n / 2] as f64,
            _ => (sorted[n / 2 - 1] as f64 + sorted[n / 2] as f64) / 2.0,
        };
        let within = |t: f32| {
            if n > 0 {
                angles.iter().filter(|&&a| a < t).count() as f64 / n as f64 * 100.0
            } else {
                0.0
            }
        };
        (
            n as u64,
            vec![
                metric("mean_angle", mean, false, n > 0),
                metric("median_angle", median, false, n > 0),
                metric("within_11.25", within(11.25), true, n > 0),
                metric("within_22.5", within(22.5), true, n > 0),
                metric("within_30", within(30.0), true, n > 0),
            ],
        )
    }
}

/// The sum of every label vector (invalid ones are zero); predicts it renormalised.
struct MeanNormal {
    sum: [f64; 3],
}

impl Constant for MeanNormal {
    fn fit(&mut self, label: &Tensor) -> Result<()> {
        let n = label.sum_dim_intlist([0i64, 2, 3].as_slice(), false, Kind::Double);
        for (k, slot) in self.sum.iter_mut().enumerate() {
            *slot += n.double_value(&[k as i64]);
        }
        Ok(())
    }
    fn predict(&self, label: &Tensor) -> Tensor {
        let (n, hw) = super::batch_and_hw(label);
        let len = self.sum.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        let v: Vec<f32> = self.sum.iter().map(|&x| (x / len) as f32).collect();
        Tensor::from_slice(&v)
            .view([1, 3, 1, 1])
            .expand([n, 3, hw.0, hw.1], false)
    }
}
