use super::scenenet::SceneNetArgs;
use anyhow::{Context, Result};
use cut::checkpoint::DType;
use cut::fsio;
use cut::jobs::new::{run as run_job, NewJob};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model family (scenenet).
    #[arg(long, default_value = "scenenet")]
    family: String,
    /// The family's configuration as a JSON file (a SceneNet's: its fields as `cut inspect` shows
    /// them), instead of the shape flags below.
    #[arg(long, value_name = "FILE", conflicts_with = "tasks")]
    config: Option<PathBuf>,
    #[command(flatten)]
    scenenet: SceneNetArgs,
    /// Seed for the initial weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Storage dtype of the weights.
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
    let (config, config_source) = match &a.config {
        Some(path) => {
            let text = fsio::read_input_text(path, fsio::limit::JSON, "the configuration")?;
            let value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
            (value, path.display().to_string())
        }
        None => (
            serde_json::to_value(a.scenenet.config()?)?,
            "the shape flags (they describe a scenenet; other families read --config FILE)".to_string(),
        ),
    };
    let job = NewJob {
        family: a.family.clone(),
        config,
        config_source,
        seed: a.seed,
        dtype: a.dtype,
        out: a.out.clone(),
        force: a.force,
        command: super::command_line(),
    };
    let done = run_job(&job)?;
    let line = format!("wrote {}", done.wrote.display());
    super::print_wrote(a.json, serde_json::to_value(&done)?, &line)
}
