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
    out: PathBuf,
    /// Training scenes.
    #[arg(long, default_value_t = 200)]
    train: usize,
    /// Test scenes.
    #[arg(long, default_value_t = 50)]
    test: usize,
    /// Image size HxW.
    #[arg(long, default_value = "96x128")]
    size: String,
    /// Seed of the scenes: the same seed gives the same files.
    #[arg(long, default_value_t = 0)]
    seed: u64,
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
            write_dataset(&a.out, &config, threads)?;
            eprintln!(
                "wrote {} training and {} test scenes of {height}x{width} to {}",
                a.train,
                a.test,
                a.out.display()
            );
            Ok(())
        }
    }
}
