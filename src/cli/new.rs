use super::args::SceneNetArgs;
use anyhow::Result;
use cut::checkpoint::metadata::Provenance;
use cut::checkpoint::{writer, DType};
use cut::fsio;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
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
}

pub fn run(a: Args) -> Result<()> {
    fsio::check_output(&a.out, &[], a.force)?;
    let model = a.scenenet.config()?.build()?;
    let params = cut::graph::init::init_params(&model.graph, a.seed, tch::Device::Cpu);
    writer::save_model(
        &a.out,
        &model,
        &params,
        a.dtype,
        false,
        Some(&Provenance::new(super::command_line(), None)),
    )?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
