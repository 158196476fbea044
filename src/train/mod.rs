//! Training and fine-tuning: per-task weighted losses, Adam with step decay, model selection on the
//! validation split, optional fixed masks that keep pruned weights exactly zero.

pub mod loss;

use crate::data::example::Samples;
use crate::data::loader::Loader;
use crate::graph::interpreter::{forward_inputs, Mode, Params};
use crate::graph::passes::slice_dead_taps_for;
use crate::graph::{Model, TaskSpec};
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor};

/// How the optimiser runs: the settings `train` and the fine-tuning inside `prune` and `split`
/// share, declared once (the CLI's groups fill it, the reports serialise it).
#[derive(Clone, Debug, Serialize)]
pub struct Schedule {
    /// Seed of the batch order and any random draw: the same seed and inputs give the same bytes.
    pub seed: u64,
    /// Optimiser steps (batches); 0 skips training. Reports have always called it `finetune_steps`.
    #[serde(rename = "finetune_steps")]
    pub steps: usize,
    /// Adam's learning rate.
    pub lr: f64,
    pub weight_decay: f64,
    /// Multiply the learning rate by `gamma` every `step_size` steps.
    pub step_size: usize,
    pub gamma: f64,
    /// Validate every this many steps (and at the end).
    pub val_every: usize,
    /// Keep batch norm's running statistics fixed (and use them) while training.
    pub freeze_norm: bool,
}

impl Schedule {
    /// Refuses option values the loop cannot use, naming the option: a learning rate, weight decay
    /// or decay factor that is not a finite number >= 0, and a decay or validation interval of 0.
    pub fn validate(&self) -> Result<()> {
        for (option, value) in [
            ("--lr", self.lr),
            ("--weight-decay", self.weight_decay),
            ("--gamma", self.gamma),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                crate::usage_bail!("{option} {value} must be a finite number >= 0");
            }
        }
        for (option, value) in [("--step-size", self.step_size), ("--val-every", self.val_every)] {
            if value == 0 {
                crate::usage_bail!("{option} must be at least 1");
            }
        }
        Ok(())
    }
}

/// One training run: the schedule and what the run itself decides (batch size, loss weights,
/// device, the parameters that train).
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub schedule: Schedule,
    pub batch: usize,
    /// Loss weight per task; tasks not listed weigh 1.
    pub lambdas: BTreeMap<String, f64>,
    pub device: Device,
    /// Train only these parameter tensors (one block, as a device of a cooperative round would);
    /// the others stay as they are. `None` trains every parameter.
    pub only: Option<Vec<String>>,
    /// Train in inference mode (no dropout, batch norm's running statistics): for distillation,
    /// whose targets are the teacher's outputs in inference mode; dropout's noise only keeps the
    /// student from matching them (on the demo it made depth drift away from its teacher).
    pub inference_mode: bool,
}

impl TrainConfig {
    /// The schedule's checks, and a batch size of at least 1.
    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 {
            crate::usage_bail!("--batch must be at least 1");
        }
        self.schedule.validate()
    }
}

/// Loss weights for `tasks`: the defaults by kind, overridden by `text` ("seg=1,normal=20"). Each
/// named task must be one of `tasks`, named once, with a finite weight >= 0.
pub fn task_lambdas(tasks: &[TaskSpec], text: Option<&str>) -> Result<BTreeMap<String, f64>> {
    let mut lambdas = default_lambdas(tasks);
    let Some(text) = text else { return Ok(lambdas) };
    let mut given = std::collections::BTreeSet::new();
    for item in crate::graph::parse_task_list(text) {
        let Some((name, value)) = item.split_once('=') else {
            crate::usage_bail!("--lambdas '{item}': expected task=weight");
        };
        let name = name.trim();
        let w: f64 = match value.trim().parse() {
            Ok(w) => w,
            Err(_) => crate::usage_bail!("--lambdas '{item}': '{value}' is not a number"),
        };
        if !(w >= 0.0 && w.is_finite()) {
            crate::usage_bail!("--lambdas '{item}': weight must be a non-negative number");
        }
        if !tasks.iter().any(|t| t.name == name) {
            let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
            crate::usage_bail!(
                "--lambdas names task '{name}', which is not among the tasks being trained ({})",
                names.join(", ")
            );
        }
        if !given.insert(name.to_string()) {
            crate::usage_bail!("--lambdas names task '{name}' twice");
        }
        lambdas.insert(name.to_string(), w);
    }
    Ok(lambdas)
}

#[derive(Clone, Debug, Serialize)]
pub struct LogEntry {
    pub step: usize,
    pub lr: f64,
    /// Training loss per task, averaged over the steps since the previous entry.
    pub train: BTreeMap<String, f64>,
    pub train_total: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_total: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val: Option<BTreeMap<String, f64>>,
}

pub struct TrainOutcome {
    /// The parameters at the step with the lowest validation loss, on the CPU.
    pub params: Params,
    pub best_step: usize,
    pub best_val_loss: f64,
    pub log: Vec<LogEntry>,
}

/// The reference's NYUv2 loss weights by task kind: segmentation 1, normal 20, depth 3; others 1.
pub fn default_lambdas(tasks: &[TaskSpec]) -> BTreeMap<String, f64> {
    tasks
        .iter()
        .map(|t| (t.name.clone(), crate::tasks::def_for(t).default_loss_weight()))
        .collect()
}

/// The VarStore forbids '.' in names.
fn mangle(name: &str) -> String {
    name.replace('.', "|")
}

fn weighted_loss(
    model: &Model,
    params: &Params,
    tasks: &[TaskSpec],
    lambdas: &BTreeMap<String, f64>,
    batch: &crate::data::loader::Batch,
    mode: Mode,
) -> Result<(Tensor, BTreeMap<String, f64>)> {
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    let inputs = batch.graph_inputs(&model.graph)?;
    let graph = slice_dead_taps_for(&model.graph, &inputs)?;
    let outputs = forward_inputs(&graph, params, &inputs, &names, mode)?;
    let mut total: Option<Tensor> = None;
    let mut parts = BTreeMap::new();
    for task in tasks {
        let l = loss::task_loss(task, &outputs[&task.name], batch)?;
        parts.insert(task.name.clone(), l.double_value(&[]));
        let w = lambdas.get(&task.name).copied().unwrap_or(1.0);
        let term = l * w;
        total = Some(match total {
            Some(t) => t + term,
            None => term,
        });
    }
    Ok((total.expect("at least one task"), parts))
}

/// Mean weighted loss over a split, in inference mode.
pub fn validation_loss(
    model: &Model,
    params: &Params,
    tasks: &[TaskSpec],
    lambdas: &BTreeMap<String, f64>,
    items: &Samples,
    batch: usize,
    device: Device,
) -> Result<(f64, BTreeMap<String, f64>)> {
    let _guard = tch::no_grad_guard();
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    let fused = Model {
        graph: crate::graph::passes::fuse_conv_relu(&model.graph, &names).0,
        tasks: model.tasks.clone(),
        tokenizer: model.tokenizer.clone(),
    };
    let model = &fused;
    let (mut total, mut n) = (0.0, 0usize);
    let mut parts: BTreeMap<String, f64> = BTreeMap::new();
    for b in Loader::sequential(items.clone(), batch, device) {
        let b = b?.to_device(device);
        let k = b.len();
        let (loss, p) = weighted_loss(model, params, tasks, lambdas, &b, Mode::Eval)?;
        total += loss.double_value(&[]) * k as f64;
        for (name, v) in p {
            *parts.entry(name).or_default() += v * k as f64;
        }
        n += k;
    }
    let n = n.max(1) as f64;
    Ok((total / n, parts.into_iter().map(|(k, v)| (k, v / n)).collect()))
}

/// Trains `params` (any device; the result is on the CPU) on `train_items`, selecting the step with
/// the lowest validation loss. With `masks`, each masked tensor is multiplied by its mask after every
/// step, so zeros stay exactly zero. `on_step(step, train_total)` reports progress.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &Model,
    params: &Params,
    tasks: &[TaskSpec],
    train_items: Samples,
    val_items: Samples,
    masks: Option<&BTreeMap<String, Tensor>>,
    cfg: &TrainConfig,
    mut on_step: impl FnMut(usize, f64),
) -> Result<TrainOutcome> {
    if tasks.is_empty() {
        bail!("no tasks to train");
    }
    cfg.validate()?;
    if val_items.count() == 0 {
        bail!("model selection needs a validation split; use a positive --val-fraction");
    }
    // Dropout draws from libtorch's generator.
    tch::manual_seed(cfg.schedule.seed as i64);
    let device = cfg.device;
    let trainable: Vec<String> = model
        .graph
        .param_specs()
        .iter()
        .filter(|s| !s.role.is_buffer())
        .filter(|s| cfg.only.as_ref().is_none_or(|only| only.contains(&s.name)))
        .map(|s| s.name.clone())
        .collect();
    if trainable.is_empty() {
        bail!("nothing to train: the parameters asked for are not in the model");
    }
    let vs = tch::nn::VarStore::new(device);
    let mut live = Params::new();
    {
        let root = vs.root();
        for spec in model.graph.param_specs() {
            let t = params
                .get(&spec.name)
                .ok_or_else(|| anyhow::anyhow!("tensor '{}' is missing", spec.name))?;
            if trainable.contains(&spec.name) {
                live.insert(
                    spec.name.clone(),
                    root.var_copy(&mangle(&spec.name), &t.to_device(device)),
                );
            } else {
                live.insert(spec.name.clone(), t.to_device(device).copy());
            }
        }
    }
    let device_masks: BTreeMap<String, Tensor> = masks
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.to_device(device).to_kind(Kind::Float)))
                .collect()
        })
        .unwrap_or_default();
    let apply_masks = |live: &Params| {
        let _guard = tch::no_grad_guard();
        for (name, mask) in &device_masks {
            if let Some(t) = live.get(name) {
                let mut t = t.shallow_clone();
                t *= mask;
            }
        }
    };
    apply_masks(&live);

    let mut opt = tch::nn::Adam {
        wd: cfg.schedule.weight_decay,
        ..Default::default()
    }
    .build(&vs, cfg.schedule.lr)?;
    let snapshot = |live: &Params| -> Params {
        live.iter()
            .map(|(k, v)| (k.clone(), v.detach().to_device(Device::Cpu).copy()))
            .collect()
    };
    let (mut best_val, parts) = validation_loss(model, &live, tasks, &cfg.lambdas, &val_items, cfg.batch, device)?;
    let mut best = snapshot(&live);
    let mut best_step = 0;
    let mut log = vec![LogEntry {
        step: 0,
        lr: cfg.schedule.lr,
        train: BTreeMap::new(),
        train_total: f64::NAN,
        val_total: Some(best_val),
        val: Some(parts),
    }];
    let mut loader = Loader::shuffled(train_items, cfg.batch, cfg.schedule.seed, cfg.device);
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    let (mut total_sum, mut since) = (0.0, 0usize);
    for step in 1..=cfg.schedule.steps {
        let lr = cfg.schedule.lr * cfg.schedule.gamma.powi(((step - 1) / cfg.schedule.step_size) as i32);
        opt.set_lr(lr);
        let b = loader
            .next()
            .ok_or_else(|| anyhow::anyhow!("training data ran out"))??
            .to_device(device);
        // A single block trains with batch norm's statistics fixed, so nothing outside it moves.
        let mode = if cfg.inference_mode {
            Mode::Eval
        } else if cfg.schedule.freeze_norm || cfg.only.is_some() {
            Mode::TrainFrozenNorm
        } else {
            Mode::Train
        };
        let (loss, p) = weighted_loss(model, &live, tasks, &cfg.lambdas, &b, mode)?;
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            bail!("training loss became {value} at step {step}; lower --lr");
        }
        opt.backward_step(&loss);
        apply_masks(&live);
        for (k, v) in p {
            *sums.entry(k).or_default() += v;
        }
        total_sum += value;
        since += 1;
        on_step(step, value);
        if step % cfg.schedule.val_every == 0 || step == cfg.schedule.steps {
            let (val, val_parts) = validation_loss(model, &live, tasks, &cfg.lambdas, &val_items, cfg.batch, device)?;
            log.push(LogEntry {
                step,
                lr,
                train: sums.iter().map(|(k, v)| (k.clone(), v / since as f64)).collect(),
                train_total: total_sum / since as f64,
                val_total: Some(val),
                val: Some(val_parts),
            });
            sums.clear();
            total_sum = 0.0;
            since = 0;
            if val < best_val {
                best_val = val;
                best_step = step;
                best = snapshot(&live);
            }
        }
    }
    Ok(TrainOutcome {
        params: best,
        best_step,
        best_val_loss: best_val,
        log,
    })
}
