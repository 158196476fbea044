//! Task metrics, accumulated over a whole dataset, and the multi-task summary delta_m.
//!
//! Predictions are resized (nearest) to the label size before scoring, as in the reference.
//! - segmentation: mIoU from the dataset-wide confusion matrix, averaged over the classes present
//!   in ground truth or prediction (the standard convention; the reference averages only over classes
//!   with a nonzero diagonal, which inflates it), and pixel accuracy. Label 255 is ignored.
//! - normal: angle between the L2-normalised prediction and ground truth over valid pixels
//!   (ground truth is a zero vector where invalid): mean, median, % within 11.25, 22.5, 30 degrees.
//! - depth: over pixels with ground truth > 3e-5: abs error, rel error |d - g| / g, and the share
//!   with max(d/g, g/d) below 1.25, 1.25^2, 1.25^3 (predictions are clamped to >= 1e-6 for the ratio).
//!   Means are pixel-weighted over the whole split.
//! - classification: accuracy; regression: mean absolute error (per sample; a spatial head's output
//!   is averaged over its pixels first).

use crate::data::layout::{DEPTH_VALID_MIN, SEG_IGNORE};
use crate::data::loader::Batch;
use crate::graph::{TaskKind, TaskSpec};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub higher_is_better: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    pub task: String,
    pub kind: TaskKind,
    /// Pixels (or samples) scored.
    pub count: u64,
    pub metrics: Vec<Metric>,
}

impl TaskMetrics {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.name == name).map(|m| m.value)
    }
}

pub const MIOU_CONVENTION: &str =
    "mean IoU over classes present in ground truth or prediction (dataset-wide confusion matrix)";

/// The label a task of this kind is scored against.
pub fn label_for(kind: TaskKind, batch: &Batch) -> Result<&Tensor> {
    match kind {
        TaskKind::Segmentation => Ok(&batch.seg),
        TaskKind::Normal => Ok(&batch.normal),
        TaskKind::Depth => Ok(&batch.depth),
        TaskKind::Classification | TaskKind::Regression => {
            bail!("the NYUv2-layout dataset has no {} labels", kind.as_str())
        }
    }
}

/// Nearest resize of [N, C, h, w] predictions to [H, W].
pub fn resize_nearest(pred: &Tensor, hw: (i64, i64)) -> Tensor {
    let s = pred.size();
    if (s[2], s[3]) == hw {
        pred.shallow_clone()
    } else {
        pred.upsample_nearest2d([hw.0, hw.1], None, None)
    }
}

/// Dataset-wide accumulator for one task.
pub enum Accumulator {
    Segmentation {
        classes: usize,
        confusion: Vec<u64>,
    },
    Normal {
        angles: Vec<f32>,
    },
    Depth {
        count: u64,
        abs: f64,
        rel: f64,
        deltas: [u64; 3],
    },
    Classification {
        correct: u64,
        total: u64,
    },
    Regression {
        count: u64,
        abs: f64,
    },
}

/// A per-sample prediction [N, C] from a head that may still be spatial ([N, C, h, w]: averaged).
fn per_sample(pred: &Tensor) -> Tensor {
    if pred.dim() == 4 {
        pred.mean_dim([2i64, 3].as_slice(), false, Kind::Float)
    } else {
        pred.to_kind(Kind::Float)
    }
}

impl Accumulator {
    pub fn new(task: &TaskSpec) -> Result<Accumulator> {
        Ok(match task.kind {
            TaskKind::Segmentation => Accumulator::Segmentation {
                classes: task.outputs,
                confusion: vec![0; task.outputs * task.outputs],
            },
            TaskKind::Normal => Accumulator::Normal { angles: Vec::new() },
            TaskKind::Depth => Accumulator::Depth {
                count: 0,
                abs: 0.0,
                rel: 0.0,
                deltas: [0; 3],
            },
            TaskKind::Classification => Accumulator::Classification { correct: 0, total: 0 },
            TaskKind::Regression => Accumulator::Regression { count: 0, abs: 0.0 },
        })
    }

    /// Adds a batch: `pred` is the raw model output [N, C, h, w], `label` the task's ground truth.
    pub fn update(&mut self, pred: &Tensor, label: &Tensor) {
        let _guard = tch::no_grad_guard();
        // Per-sample kinds: labels are [N] (class index or value), nothing to resize.
        match self {
            Accumulator::Classification { correct, total } => {
                let hit = per_sample(pred)
                    .argmax(1, false)
                    .eq_tensor(&label.to_kind(Kind::Int64).flatten(0, -1));
                *correct += hit.sum(Kind::Int64).int64_value(&[]) as u64;
                *total += hit.numel() as u64;
                return;
            }
            Accumulator::Regression { count, abs } => {
                let p = per_sample(pred).flatten(0, -1);
                *abs += (p - label.to_kind(Kind::Float).flatten(0, -1))
                    .abs()
                    .sum(Kind::Double)
                    .double_value(&[]);
                *count += label.numel() as u64;
                return;
            }
            _ => {}
        }
        let ls = label.size();
        let hw = (ls[ls.len() - 2], ls[ls.len() - 1]);
        let pred = resize_nearest(&pred.to_kind(Kind::Float), hw);
        match self {
            Accumulator::Segmentation { classes, confusion } => {
                let c = *classes as i64;
                let gt = label.flatten(0, -1);
                let pr = pred.argmax(1, false).flatten(0, -1);
                let valid = gt.ne(SEG_IGNORE).logical_and(&gt.lt(c)).logical_and(&gt.ge(0));
                let idx = gt.masked_select(&valid) * c + pr.masked_select(&valid);
                let counts = idx.bincount(None::<Tensor>, c * c).to_device(tch::Device::Cpu);
                let counts: Vec<i64> = Vec::<i64>::try_from(&counts).expect("bincount is int64");
                for (acc, v) in confusion.iter_mut().zip(counts) {
                    *acc += v as u64;
                }
            }
            Accumulator::Normal { angles } => {
                let gt = label;
                let valid = gt.square().sum_dim_intlist(1, false, Kind::Float).gt(0.5);
                let p = &pred
                    / pred
                        .square()
                        .sum_dim_intlist(1, true, Kind::Float)
                        .sqrt()
                        .clamp_min(1e-12);
                let cos = (&p * gt).sum_dim_intlist(1, false, Kind::Float).clamp(-1.0, 1.0);
                let deg = cos.acos().masked_select(&valid) * (180.0 / std::f64::consts::PI);
                let deg = deg.to_device(tch::Device::Cpu);
                angles.extend(Vec::<f32>::try_from(&deg).expect("float angles"));
            }
            Accumulator::Depth {
                count,
                abs,
                rel,
                deltas,
            } => {
                let valid = label.gt(DEPTH_VALID_MIN as f64);
                let g = label.masked_select(&valid).to_kind(Kind::Double);
                let d = pred.masked_select(&valid).to_kind(Kind::Double);
                let err = (&d - &g).abs();
                *count += g.numel() as u64;
                *abs += err.sum(Kind::Double).double_value(&[]);
                *rel += (&err / &g).sum(Kind::Double).double_value(&[]);
                let dc = d.clamp_min(1e-6);
                let ratio = (&dc / &g).maximum(&(&g / &dc));
                for (k, slot) in deltas.iter_mut().enumerate() {
                    *slot += ratio.lt(1.25f64.powi(k as i32 + 1)).sum(Kind::Int64).int64_value(&[]) as u64;
                }
            }
            Accumulator::Classification { .. } | Accumulator::Regression { .. } => {
                unreachable!("per-sample kinds return above")
            }
        }
    }

    pub fn finish(&self, task: &TaskSpec) -> TaskMetrics {
        let m = |name: &str, value: f64, higher_is_better: bool| Metric {
            name: name.into(),
            value,
            higher_is_better,
        };
        let (count, metrics) = match self {
            Accumulator::Classification { correct, total } => (
                *total,
                vec![m(
                    "accuracy",
                    if *total > 0 {
                        *correct as f64 / *total as f64
                    } else {
                        0.0
                    },
                    true,
                )],
            ),
            Accumulator::Regression { count, abs } => (*count, vec![m("mae", abs / (*count).max(1) as f64, false)]),
            Accumulator::Segmentation { classes, confusion } => {
                let c = *classes;
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
                (total, vec![m("miou", miou, true), m("pixel_acc", acc, true)])
            }
            Accumulator::Normal { angles } => {
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
                        m("mean_angle", mean, false),
                        m("median_angle", median, false),
                        m("within_11.25", within(11.25), true),
                        m("within_22.5", within(22.5), true),
                        m("within_30", within(30.0), true),
                    ],
                )
            }
            Accumulator::Depth {
                count,
                abs,
                rel,
                deltas,
            } => {
                let n = (*count).max(1) as f64;
                (
                    *count,
                    vec![
                        m("abs_err", abs / n, false),
                        m("rel_err", rel / n, false),
                        m("delta_1.25", deltas[0] as f64 / n * 100.0, true),
                        m("delta_1.25^2", deltas[1] as f64 / n * 100.0, true),
                        m("delta_1.25^3", deltas[2] as f64 / n * 100.0, true),
                    ],
                )
            }
        };
        TaskMetrics {
            task: task.name.clone(),
            kind: task.kind,
            count,
            metrics,
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
            terms.push(sign * (metric.value - bv) / bv * 100.0);
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
