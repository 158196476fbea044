use super::args::parse_input_size;
use anyhow::Result;
use cut::data::synth::SynthConfig;
use cut::jobs::synth::{run as run_job, SynthJob};
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
            let job = SynthJob {
                scenes: SynthConfig {
                    train: a.train,
                    test: a.test,
                    height,
                    width,
                    seed: a.seed,
                },
                out: a.out.or(a.folder).expect("clap requires one"),
            };
            let done = run_job(&job)?;
            let line = format!(
                "wrote {} training and {} test scenes of {height}x{width} to {}",
                done.train,
                done.test,
                done.wrote.display()
            );
            super::print_wrote(a.json, serde_json::to_value(&done)?, &line)
        }
    }
}
