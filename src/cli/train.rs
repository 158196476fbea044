use super::args::DataArgs;
use super::progress::progress;
use super::scenenet::SceneNetArgs;
use anyhow::Result;
use cut::checkpoint::DType;
use cut::device::DeviceChoice;
use cut::graph::parse_task_list;
use cut::jobs::train::{run as run_job, TrainJob, TrainSource};
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
    norm: super::args::NormArgs,
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
    let source = match &a.from {
        Some(path) => TrainSource::From {
            path: path.clone(),
            load: a.norm.apply(cut::checkpoint::LoadOptions {
                input_sizes: cut::checkpoint::LoadOptions::parse_input_sizes(a.scenenet.input_size.as_slice())?,
                ..cut::checkpoint::LoadOptions::from_flags(None, a.task_kinds.as_deref())?
            })?,
        },
        None => {
            let mut model = a.scenenet.config()?.build()?;
            if let Some(norm) = a.norm.normalisation()? {
                model.graph.set_image_normalisation(&norm)?;
            }
            TrainSource::New(model)
        }
    };
    let job = TrainJob {
        source,
        data: a.data.settings(),
        tasks: a.train_tasks.as_deref().map(parse_task_list),
        only_block: a.only_block.clone(),
        schedule: cut::train::Schedule {
            seed: a.seed,
            steps: a.steps,
            lr: a.lr,
            weight_decay: a.weight_decay,
            step_size: a.step_size,
            gamma: a.gamma,
            val_every: a.val_every,
            freeze_norm: a.freeze_norm,
        },
        lambdas: a.lambdas.clone(),
        device: a.device,
        log: a.log.clone(),
        dtype: a.dtype,
        out: a.out.clone(),
        force: a.force,
        command: super::command_line(),
    };
    let bar = progress(a.steps as u64, "train");
    let done = run_job(&job, &mut |w| eprintln!("cut: warning: {w}"), &mut |step, loss| {
        bar.set_position(step as u64);
        bar.set_message(format!("loss {loss:.4}"));
    });
    bar.finish_and_clear();
    let done = done?;
    let facts = serde_json::json!({
        "wrote": done.out.display().to_string(),
        "log": done.log.display().to_string(),
        "best_step": done.best_step,
        "best_val_loss": done.best_val_loss,
    });
    let line = format!(
        "wrote {} (best validation loss {:.4} at step {}), log {}",
        done.out.display(),
        done.best_val_loss,
        done.best_step,
        done.log.display()
    );
    super::print_wrote(a.json, facts, &line)
}
