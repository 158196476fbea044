use super::args::ModelArgs;
use anyhow::{anyhow, Result};
use cut::checkpoint::{hf_folder, Checkpoint};
use cut::fsio;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Format {
    /// A Hugging Face model folder (text encoders): model.safetensors, config.json, tokenizer.json,
    /// labels.json.
    HfFolder,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, value_enum)]
    format: Format,
    /// Replace files of the same names in OUT.
    #[arg(long)]
    force: bool,
    /// Output folder (created if missing).
    #[arg(short, long)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let ckpt = Checkpoint::open(&a.model.model)?;
    let loaded = ckpt.model(&a.model.load_options()?)?;
    for w in &loaded.warnings {
        eprintln!("cut: warning: {w}");
    }
    let params = ckpt.load_params(&loaded.model, tch::Device::Cpu)?;
    let Format::HfFolder = a.format;
    let files = hf_folder::files(&loaded.model, &params).map_err(|e| anyhow!("{}: {e}", a.model.model.display()))?;
    if a.out.exists() && !a.out.is_dir() {
        cut::usage_bail!("{}: -o names a file; give a folder", a.out.display());
    }
    let paths: Vec<PathBuf> = files.iter().map(|(name, _)| a.out.join(name)).collect();
    for p in &paths {
        fsio::check_output(p, &[&ckpt.path], a.force).or_else(|e| {
            // The folder itself may not exist yet; everything else is a real refusal.
            if a.out.exists() {
                Err(e)
            } else {
                Ok(())
            }
        })?;
    }
    std::fs::create_dir_all(&a.out).map_err(|e| anyhow!("{}: cannot create ({e})", a.out.display()))?;
    let mut outputs = fsio::Outputs::new(a.force);
    for (path, (_, bytes)) in paths.iter().zip(&files) {
        outputs.stage(path, bytes)?;
    }
    outputs.commit()?;
    eprintln!(
        "wrote {} ({})",
        a.out.display(),
        files.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}
