//! Evaluation of a model (or a constant predictor) on a dataset split.

use crate::data::layout::{Item, SEG_IGNORE};
use crate::data::loader::Loader;
use crate::graph::interpreter::{forward, Mode, Params};
use crate::graph::{Model, TaskKind, TaskSpec};
use crate::metrics::{label_for, Accumulator, TaskMetrics, MIOU_CONVENTION};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Kind, Tensor};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EvalReport {
    pub model: String,
    pub data: String,
    pub split: String,
    pub images: usize,
    pub device: String,
    pub seconds: f64,
    pub miou_convention: String,
    pub tasks: Vec<TaskMetrics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_m: Option<f64>,
}

/// Runs the model over `items` in batches and scores the given tasks. `on_batch` is called with the
/// number of images done (for progress bars).
pub fn evaluate(
    model: &Model,
    params: &Params,
    items: Vec<Item>,
    tasks: &[TaskSpec],
    batch: usize,
    device: Device,
    mut on_batch: impl FnMut(usize),
) -> Result<(Vec<TaskMetrics>, usize)> {
    let _guard = tch::no_grad_guard();
    let mut accs: Vec<Accumulator> = tasks.iter().map(Accumulator::new).collect::<Result<_>>()?;
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    let mut images = 0;
    for b in Loader::sequential(items, batch, device) {
        let b = b?.to_device(device);
        let outputs = forward(&model.graph, params, &b.image, &names, Mode::Eval)?;
        for (task, acc) in tasks.iter().zip(accs.iter_mut()) {
            acc.update(&outputs[&task.name], label_for(task.kind, &b)?);
        }
        images += b.len();
        on_batch(images);
    }
    Ok((tasks.iter().zip(&accs).map(|(t, a)| a.finish(t)).collect(), images))
}

/// The best constant predictors, fitted on `fit` items: the majority class, the mean normal
/// (renormalised) and the mean depth, over valid pixels.
pub struct ConstantPredictor {
    pub majority_class: i64,
    pub mean_normal: [f64; 3],
    pub mean_depth: f64,
}

impl ConstantPredictor {
    pub fn fit(items: Vec<Item>, seg_classes: usize) -> Result<ConstantPredictor> {
        let mut hist = vec![0u64; seg_classes.max(1)];
        let mut normal_sum = [0f64; 3];
        let (mut depth_sum, mut depth_n) = (0f64, 0u64);
        for b in Loader::sequential(items, 16, Device::Cpu) {
            let b = b?;
            let seg = b.seg.flatten(0, -1);
            let valid = seg.ne(SEG_IGNORE).logical_and(&seg.lt(seg_classes as i64));
            let counts = Vec::<i64>::try_from(&seg.masked_select(&valid).bincount(None::<Tensor>, seg_classes as i64))?;
            for (h, c) in hist.iter_mut().zip(counts) {
                *h += c as u64;
            }
            let n = b.normal.sum_dim_intlist([0i64, 2, 3].as_slice(), false, Kind::Double);
            for (k, slot) in normal_sum.iter_mut().enumerate() {
                *slot += n.double_value(&[k as i64]);
            }
            let valid = b.depth.gt(crate::data::layout::DEPTH_VALID_MIN as f64);
            depth_sum += b.depth.masked_select(&valid).sum(Kind::Double).double_value(&[]);
            depth_n += valid.sum(Kind::Int64).int64_value(&[]) as u64;
        }
        let majority_class = hist
            .iter()
            .enumerate()
            .max_by_key(|(_, &c)| c)
            .map(|(i, _)| i as i64)
            .unwrap_or(0);
        let len = normal_sum.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        Ok(ConstantPredictor {
            majority_class,
            mean_normal: normal_sum.map(|v| v / len),
            mean_depth: if depth_n > 0 { depth_sum / depth_n as f64 } else { 0.0 },
        })
    }

    /// Constant output of shape [N, C, H, W] for a task.
    pub fn predict(&self, task: &TaskSpec, n: i64, hw: (i64, i64)) -> Result<Tensor> {
        let opts = (Kind::Float, Device::Cpu);
        let c = task.outputs as i64;
        Ok(match task.kind {
            TaskKind::Segmentation => {
                let mut logits = vec![0f32; c as usize];
                logits[self.majority_class.min(c - 1) as usize] = 1.0;
                Tensor::from_slice(&logits)
                    .view([1, c, 1, 1])
                    .expand([n, c, hw.0, hw.1], false)
            }
            TaskKind::Normal => {
                let v: Vec<f32> = self.mean_normal.iter().map(|&x| x as f32).collect();
                Tensor::from_slice(&v)
                    .view([1, 3, 1, 1])
                    .expand([n, 3, hw.0, hw.1], false)
            }
            TaskKind::Depth => Tensor::full([n, 1, hw.0, hw.1], self.mean_depth, opts),
            other => bail!("no constant predictor for {} tasks", other.as_str()),
        })
    }

    pub fn evaluate(&self, items: Vec<Item>, tasks: &[TaskSpec]) -> Result<(Vec<TaskMetrics>, usize)> {
        let mut accs: Vec<Accumulator> = tasks.iter().map(Accumulator::new).collect::<Result<_>>()?;
        let mut images = 0;
        for b in Loader::sequential(items, 16, Device::Cpu) {
            let b = b?;
            let s = b.image.size();
            for (task, acc) in tasks.iter().zip(accs.iter_mut()) {
                acc.update(&self.predict(task, s[0], (s[2], s[3]))?, label_for(task.kind, &b)?);
            }
            images += b.len();
        }
        Ok((tasks.iter().zip(&accs).map(|(t, a)| a.finish(t)).collect(), images))
    }
}

/// Reads the per-task metrics of a baseline: a `cut eval --json` report, or a `cut prune` report
/// (its metrics before pruning).
pub fn read_baseline(path: &Path) -> Result<Vec<TaskMetrics>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("{}: cannot read baseline ({e})", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: baseline is not JSON", path.display()))?;
    let tasks = value
        .get("tasks")
        .filter(|t| t.is_array())
        .or_else(|| {
            value
                .get("accuracy")
                .and_then(|a| a.get("before"))
                .filter(|b| b.is_array())
        })
        .ok_or_else(|| {
            anyhow!(
                "{}: baseline has no 'tasks' metrics (expected the JSON of cut eval or cut prune)",
                path.display()
            )
        })?;
    serde_json::from_value(tasks.clone())
        .with_context(|| format!("{}: field 'tasks' is not a list of task metrics", path.display()))
}

/// The report's metrics as `MIOU_CONVENTION` says.
pub fn convention() -> String {
    MIOU_CONVENTION.to_string()
}
