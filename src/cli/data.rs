use super::args::parse_input_size;
use anyhow::Result;
use cut::data::synth::{write_dataset, SynthConfig};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Write a synthetic indoor-scene dataset (image, class, depth, normal) in the NYUv2 3-task layout.
    Synth(SynthArgs),
}

#[derive(clap::Args)]
pub struct SynthArgs {
    /// Output folder (must be new or empty).
    #[arg(short, long, required_unless_present = "folder")]
    out: Option<PathBuf>,
    /// The output folder given without -o (the first spelling).
    #[arg(hide = true, conflicts_with = "out")]
    folder: Option<PathBuf>,
    /// Training scenes.
    #[arg(long, default_value_t = 200)]
    train: usize,
    /// Test scenes.
    #[arg(long, default_value_t = 50)]
    test: usize,
    /// Image size HxW.
    #[arg(long = "input", alias = "size", value_name = "HxW", default_value = "96x128")]
    size: String,
    /// Seed of the scenes: the same seed gives the same files.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print what was written as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Synth(a) => {
            let [_, height, width] = parse_input_size(&a.size, 3)?;
            let config = SynthConfig {
                train: a.train,
                test: a.test,
                height,
                width,
                seed: a.seed,
            };
            let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            let out = a.out.or(a.folder).expect("clap requires one");
            write_dataset(&out, &config, threads)?;
            let facts = serde_json::json!({
                "wrote": out.display().to_string(),
                "train": a.train,
                "test": a.test,
                "height": height,
                "width": width,
            });
            let line = format!(
                "wrote {} training and {} test scenes of {height}x{width} to {}",
                a.train,
                a.test,
                out.display()
            );
            super::args::print_wrote(a.json, facts, &line)
        }
    }
}
