//! `cut predict`: arguments in, a [`PredictJob`] to the library, what was written out.

use super::args::ModelArgs;
use anyhow::Result;
use cut::checkpoint::LoadOptions;
use cut::device::DeviceChoice;
use cut::jobs::predict::{run as run_job, PredictJob};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Inputs: FILE.npy (the model's only input, or NAME=FILE.npy), FILE.npz or FILE.safetensors
    /// (arrays named by input; batch first, f32, i64 for token ids), image files (.png, .jpg: one
    /// batch, resized to the model's size) or a .jsonl of texts ("text" per line; models with a
    /// tokenizer).
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<String>,
    #[command(flatten)]
    norm: super::args::NormArgs,
    /// Only these tasks' outputs (default: all).
    #[arg(long, value_name = "a,b")]
    tasks: Option<String>,
    /// Where the model runs: cpu, cuda, or auto (cuda when present).
    #[arg(long, value_parser = super::args::choice::<DeviceChoice>(), default_value = "cpu")]
    device: DeviceChoice,
    /// Output: .safetensors or .npz, one array per task, named by task.
    #[arg(short, long)]
    out: PathBuf,
    /// Replace the output if it exists.
    #[arg(long)]
    force: bool,
    /// Print what was written as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let job = PredictJob {
        model: a.model.model.clone(),
        load: LoadOptions {
            normalisation: a.norm.normalisation()?,
            ..a.model.load_options()?
        },
        inputs: a.inputs.clone(),
        tasks: a.tasks.as_deref().map(cut::graph::parse_task_list),
        device: a.device,
        out: a.out.clone(),
        force: a.force,
    };
    let done = run_job(&job)?;
    for w in &done.warnings {
        eprintln!("cut: warning: {w}");
    }
    let shapes: Vec<String> = done.outputs.iter().map(|(k, s)| format!("{k} {s:?}")).collect();
    let line = format!("wrote {} ({})", done.wrote.display(), shapes.join(", "));
    super::print_wrote(a.json, serde_json::to_value(&done)?, &line)
}
