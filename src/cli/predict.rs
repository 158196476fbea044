//! `cut predict`: arguments in, a [`PredictJob`] to the library, what was written out.

use super::args::ModelArgs;
use anyhow::Result;
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
    /// Image files: per-channel mean subtracted from pixels scaled to [0, 1], "R,G,B" (or
    /// "B,G,R" with --bgr); torchvision's ImageNet models take 0.485,0.456,0.406.
    #[arg(long, value_name = "R,G,B", default_value = "0,0,0")]
    mean: String,
    /// Image files: per-channel standard deviation the pixels are divided by after the mean;
    /// torchvision's ImageNet models take 0.229,0.224,0.225.
    #[arg(long, value_name = "R,G,B", default_value = "1,1,1")]
    std: String,
    /// Image files: give the model blue, green, red (OpenCV's order) instead of red, green, blue.
    #[arg(long)]
    bgr: bool,
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
        load: a.model.load_options()?,
        inputs: a.inputs.clone(),
        normalisation: cut::data::images::Normalisation {
            mean: three("--mean", &a.mean)?,
            std: three("--std", &a.std)?,
            bgr: a.bgr,
        },
        tasks: a.tasks.as_deref().map(cut::graph::parse_task_list),
        device: a.device,
        out: a.out.clone(),
        force: a.force,
    };
    let done = run_job(&job)?;
    let shapes: Vec<String> = done.outputs.iter().map(|(k, s)| format!("{k} {s:?}")).collect();
    let line = format!("wrote {} ({})", done.wrote.display(), shapes.join(", "));
    super::args::print_wrote(a.json, serde_json::to_value(&done)?, &line)
}

/// Three comma-separated numbers.
fn three(flag: &str, text: &str) -> Result<[f32; 3]> {
    let values: Vec<f32> = text
        .split(',')
        .map(|v| v.trim().parse::<f32>())
        .collect::<std::result::Result<Vec<f32>, _>>()
        .ok()
        .filter(|v: &Vec<f32>| v.len() == 3)
        .unwrap_or_default();
    match values.as_slice() {
        &[a, b, c] => Ok([a, b, c]),
        _ => cut::usage_bail!("{flag} '{text}': expected three numbers such as 0.485,0.456,0.406"),
    }
}
