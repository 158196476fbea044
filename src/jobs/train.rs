//! `cut train` as one call: [`TrainJob`] in, the model and its log written, [`TrainDone`] out.

use crate::checkpoint::metadata::Provenance;
use crate::checkpoint::{sha256_file, writer, Checkpoint, DType, LoadOptions};
use crate::data::Split;
use crate::device::DeviceChoice;
use crate::fsio;
use crate::graph::{Model, Params};
use crate::train::{task_lambdas, train, Schedule, TrainConfig};
use anyhow::Result;
use std::path::PathBuf;

/// What to train: a checkpoint to fine-tune, or a new model (built by its family) to initialise.
#[derive(Clone, Debug)]
pub enum TrainSource {
    From { path: PathBuf, load: LoadOptions },
    New(Model),
}

/// Everything `cut train` was asked.
#[derive(Clone, Debug)]
pub struct TrainJob {
    pub source: TrainSource,
    /// The dataset (required except by prune) and its batching.
    pub data: crate::data::DataSettings,
    /// Train only these tasks (all when `None`).
    pub tasks: Option<Vec<String>>,
    /// Fine-tune only this block's parameters (as `cut plan` names blocks).
    pub only_block: Option<String>,
    pub schedule: Schedule,
    /// "seg=1,depth=3": loss weights over the defaults by kind.
    pub lambdas: Option<String>,
    pub device: DeviceChoice,
    /// The training log; default: the output with `.log.json`.
    pub log: Option<PathBuf>,
    pub dtype: DType,
    pub out: PathBuf,
    pub force: bool,
    /// The command line, for the provenance record.
    pub command: String,
}

/// What a finished training wrote.
pub struct TrainDone {
    pub out: PathBuf,
    pub log: PathBuf,
    pub best_step: usize,
    pub best_val_loss: f64,
}

/// The model to train, its starting parameters and the source file's hash.
fn starting_point(
    job: &TrainJob,
    device: tch::Device,
    warn: &mut dyn FnMut(&str),
) -> Result<(Model, Params, Option<String>)> {
    match &job.source {
        TrainSource::From { path, load } => {
            let ckpt = Checkpoint::open_with(path, load)?;
            let loaded = ckpt.model(load)?;
            for w in &loaded.warnings {
                warn(w);
            }
            let params = ckpt.load_params(&loaded.model, device)?;
            Ok((loaded.model, params, Some(sha256_file(&ckpt.path)?)))
        }
        TrainSource::New(model) => {
            let params = crate::graph::init::init_params(&model.graph, job.schedule.seed, device);
            Ok((model.clone(), params, None))
        }
    }
}

/// The training configuration, every option checked before the data is read.
fn train_config(
    job: &TrainJob,
    model: &Model,
    tasks: &[crate::graph::TaskSpec],
    device: tch::Device,
) -> Result<TrainConfig> {
    if job.schedule.freeze_norm
        && !model
            .graph
            .nodes
            .iter()
            .any(|n| matches!(n.op, crate::graph::Op::BatchNorm(_)))
    {
        crate::usage_bail!("--freeze-norm applies to models with batch norm; this one has none");
    }
    if job.schedule.steps == 0 {
        crate::usage_bail!("--steps must be positive");
    }
    let cfg = TrainConfig {
        schedule: job.schedule.clone(),
        batch: job.data.batch,
        lambdas: task_lambdas(tasks, job.lambdas.as_deref())?,
        device,
        only: job
            .only_block
            .as_deref()
            .map(|b| crate::plan::blocks::block_params(model, b))
            .transpose()?,
        inference_mode: false,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Trains, validation-selected, and writes the model and its log together. `progress(step,
/// loss)` reports each step.
pub fn run(job: &TrainJob, warn: &mut dyn FnMut(&str), progress: &mut dyn FnMut(usize, f64)) -> Result<TrainDone> {
    let inputs: Vec<&std::path::Path> = match &job.source {
        TrainSource::From { path, .. } => vec![path.as_path()],
        TrainSource::New(_) => Vec::new(),
    };
    fsio::check_output(&job.out, &inputs, job.force)?;
    let log_path = job.log.clone().unwrap_or_else(|| job.out.with_extension("log.json"));
    fsio::check_output(&log_path, &inputs, true)?;
    let device = crate::device::resolve(job.device)?;
    let (model, params, source_sha) = starting_point(job, device, warn)?;
    let tasks = match &job.tasks {
        Some(t) => model.select_tasks(t)?,
        None => model.tasks.clone(),
    };
    let cfg = train_config(job, &model, &tasks, device)?;
    let data = job.data.require(&model, "to train", warn)?;
    let outcome = train(
        &model,
        &params,
        &tasks,
        data.split(Split::Train, job.data.val_fraction)?,
        data.split(Split::Val, job.data.val_fraction)?,
        None,
        &cfg,
        progress,
    )?;
    let model_bytes = writer::model_bytes(
        &model,
        &outcome.params,
        job.dtype,
        false,
        Some(&Provenance::new(job.command.clone(), source_sha)),
    )?;
    let log = serde_json::json!({
        "model": job.out.display().to_string(),
        "best_step": outcome.best_step,
        "best_val_loss": outcome.best_val_loss,
        "tasks": tasks.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        "steps": job.schedule.steps,
        "seed": job.schedule.seed,
        "entries": outcome.log,
    });
    // The model and its log appear together or not at all.
    let mut outputs = fsio::Outputs::new(job.force);
    outputs.stage(&job.out, &model_bytes)?;
    outputs.stage_with(&log_path, serde_json::to_string_pretty(&log)?.as_bytes(), true)?;
    outputs.commit()?;
    Ok(TrainDone {
        out: job.out.clone(),
        log: log_path,
        best_step: outcome.best_step,
        best_val_loss: outcome.best_val_loss,
    })
}
