use super::args::{DataArgs, SceneNetArgs};
use super::progress::progress;
use anyhow::Result;
use cut::checkpoint::metadata::Provenance;
use cut::checkpoint::{sha256_file, writer, Checkpoint, DType};
use cut::data::Split;
use cut::device::{resolve, DeviceChoice};
use cut::fsio;
use cut::graph::parse_task_list;
use cut::train::task_lambdas;
use cut::train::{train, TrainConfig};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Fine-tune this checkpoint (or Hugging Face model folder) instead of building a new SceneNet.
    #[arg(long, conflicts_with = "tasks")]
    from: Option<PathBuf>,
    /// With --from, the task kinds of a checkpoint without a cut graph (see `cut inspect --help`),
    /// such as pos:token,genre:sequence-mean for a text encoder's heads.
    #[arg(long, requires = "from", value_name = "a:k1,b:k2")]
    task_kinds: Option<String>,
    #[command(flatten)]
    scenenet: SceneNetArgs,
    #[command(flatten)]
    data: DataArgs,
    /// With --from, fine-tune only this block's parameters (a block as `cut plan` names it:
    /// "backbone.blocks.2.0", "encoder.layer.3", "head:seg"); everything else, batch-norm
    /// statistics included, stays as it is.
    #[arg(long, requires = "from", value_name = "BLOCK")]
    only_block: Option<String>,
    /// Train only these tasks of the model (default: all).
    #[arg(long, value_name = "a,b")]
    train_tasks: Option<String>,
    /// Optimiser steps (batches), validation-selected.
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Learning rate (Adam). 1e-3 trains a model from scratch (the demo's); fine-tuning a
    /// pre-trained one with --from wants less (1e-4, as prune and split use).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Weight decay (L2).
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    /// Multiply the learning rate by --gamma every this many steps.
    #[arg(long, default_value_t = 1000)]
    step_size: usize,
    /// Learning-rate decay factor applied every --step-size steps.
    #[arg(long, default_value_t = 0.7)]
    gamma: f64,
    /// Loss weight per task, e.g. seg=1,normal=20,depth=3; default by kind: segmentation 1, normal 20, depth 3.
    #[arg(long, value_name = "t=w,...")]
    lambdas: Option<String>,
    /// Seed of the initial weights and the batch order: the same seed and data give the same bytes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Validate (and maybe keep the checkpoint) every N steps.
    #[arg(long, default_value_t = 100)]
    val_every: usize,
    /// Where the model runs: cpu, cuda, or auto (cuda when present).
    #[arg(long, value_parser = super::args::choice::<DeviceChoice>(), default_value = "cpu")]
    device: DeviceChoice,
    /// Keep batch norm's running statistics fixed while training (useful for fine-tuning).
    #[arg(long)]
    freeze_norm: bool,
    /// Training log (JSON); default: OUT with .log.json.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Storage dtype of the output (f16 and bf16 halve the file; training runs in f32 either way).
    #[arg(long, default_value = "f32", value_parser = DType::parse)]
    dtype: DType,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
    /// Output checkpoint.
    #[arg(short, long)]
    out: PathBuf,
    /// Print what was written as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let inputs: Vec<&std::path::Path> = a.from.iter().map(|p| p.as_path()).collect();
    fsio::check_output(&a.out, &inputs, a.force)?;
    let log_path = a.log.clone().unwrap_or_else(|| a.out.with_extension("log.json"));
    fsio::check_output(&log_path, &inputs, true)?;
    let device = resolve(a.device)?;
    let (model, params, source_sha) = match &a.from {
        Some(path) => {
            let ckpt = Checkpoint::open(path)?;
            let loaded = ckpt.model(&super::args::load_options(None, a.task_kinds.as_deref())?)?;
            for w in &loaded.warnings {
                eprintln!("cut: warning: {w}");
            }
            let model = loaded.model;
            let params = ckpt.load_params(&model, device)?;
            (model, params, Some(sha256_file(&ckpt.path)?))
        }
        None => {
            let model = a.scenenet.config()?.build()?;
            let params = cut::graph::init::init_params(&model.graph, a.seed, device);
            (model, params, None)
        }
    };
    if a.freeze_norm
        && !model
            .graph
            .nodes
            .iter()
            .any(|n| matches!(n.op, cut::graph::Op::BatchNorm(_)))
    {
        cut::usage_bail!("--freeze-norm applies to models with batch norm; this one has none");
    }
    let tasks = match &a.train_tasks {
        Some(t) => model.select_tasks(&parse_task_list(t))?,
        None => model.tasks.clone(),
    };
    let lambdas = task_lambdas(&tasks, a.lambdas.as_deref())?;
    if a.steps == 0 {
        cut::usage_bail!("--steps must be positive");
    }
    let cfg = TrainConfig {
        steps: a.steps,
        batch: a.data.batch,
        lr: a.lr,
        weight_decay: a.weight_decay,
        step_size: a.step_size,
        gamma: a.gamma,
        lambdas,
        seed: a.seed,
        val_every: a.val_every,
        device,
        freeze_norm: a.freeze_norm,
        only: a
            .only_block
            .as_deref()
            .map(|b| cut::plan::blocks::block_params(&model, b))
            .transpose()?,
    };
    // Every option checked before the data is read.
    cfg.validate()?;
    let data = a.data.require_for(&model, "to train")?;
    let train_items = data.split(Split::Train, a.data.val_fraction)?;
    let val_items = data.split(Split::Val, a.data.val_fraction)?;
    let bar = progress(a.steps as u64, "train");
    let outcome = train(
        &model,
        &params,
        &tasks,
        train_items,
        val_items,
        None,
        &cfg,
        |step, loss| {
            bar.set_position(step as u64);
            bar.set_message(format!("loss {loss:.4}"));
        },
    )?;
    bar.finish_and_clear();
    let model_bytes = writer::model_bytes(
        &model,
        &outcome.params,
        a.dtype,
        false,
        Some(&Provenance::new(super::command_line(), source_sha)),
    )?;
    let log = serde_json::json!({
        "model": a.out.display().to_string(),
        "best_step": outcome.best_step,
        "best_val_loss": outcome.best_val_loss,
        "tasks": tasks.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        "steps": a.steps,
        "seed": a.seed,
        "entries": outcome.log,
    });
    // The model and its log appear together or not at all.
    let mut outputs = fsio::Outputs::new(a.force);
    outputs.stage(&a.out, &model_bytes)?;
    outputs.stage_with(&log_path, serde_json::to_string_pretty(&log)?.as_bytes(), true)?;
    outputs.commit()?;
    let facts = serde_json::json!({
        "wrote": a.out.display().to_string(),
        "log": log_path.display().to_string(),
        "best_step": outcome.best_step,
        "best_val_loss": outcome.best_val_loss,
    });
    let line = format!(
        "wrote {} (best validation loss {:.4} at step {}), log {}",
        a.out.display(),
        outcome.best_val_loss,
        outcome.best_step,
        log_path.display()
    );
    super::args::print_wrote(a.json, facts, &line)
}
