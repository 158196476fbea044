use super::args::SceneNetArgs;
use anyhow::{Context, Result};
use cut::checkpoint::metadata::Provenance;
use cut::checkpoint::{writer, DType};
use cut::fsio;
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
    fsio::check_output(&a.out, &[], a.force)?;
    let family = cut::families::find(&a.family)?;
    let config = match &a.config {
        Some(path) => {
            let text = fsio::read_input_text(path, fsio::limit::JSON, "the configuration")?;
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?
        }
        None if family.name() == "scenenet" => serde_json::to_value(a.scenenet.config()?)?,
        None => cut::usage_bail!("--family {} is built from --config FILE", family.name()),
    };
    let model = family.build(&config).with_context(|| match &a.config {
        Some(path) => format!("{}", path.display()),
        None => "the shape flags".to_string(),
    })?;
    let params = cut::graph::init::init_params(&model.graph, a.seed, tch::Device::Cpu);
    let bytes = writer::model_bytes(
        &model,
        &params,
        a.dtype,
        false,
        Some(&Provenance::new(super::command_line(), None)),
    )?;
    // Without --force, a file that appeared meanwhile is not replaced.
    let mut outputs = fsio::Outputs::new(a.force);
    outputs.stage(&a.out, &bytes)?;
    outputs.commit()?;
    let facts = serde_json::json!({
        "wrote": a.out.display().to_string(),
        "family": family.name(),
        "tasks": model.task_names(),
        "parameters": params.values().map(|t| t.numel()).sum::<usize>(),
    });
    super::args::print_wrote(a.json, facts, &format!("wrote {}", a.out.display()))
}
