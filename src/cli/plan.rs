//! `cut plan`: arguments in, a plan from the library, the table or JSON out.

use super::args::ModelArgs;
use anyhow::Result;
use cut::jobs::plan::{run as run_job, PlanJob, PlanRequest};
use cut::plan::blocks::BlockSize;
use cut::plan::report::markdown;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The devices, as JSON: {"devices": [{"name", "flops", "memory", "snr_db" or
    /// "spectral_efficiency", "samples"}]} (see docs/plan.md).
    #[arg(long)]
    devices: PathBuf,
    /// Total uplink bandwidth in Hz (suffixes k, M, G).
    #[arg(long, value_parser = super::args::parse_count, default_value = "20M")]
    bandwidth: u64,
    /// How the backbone is cut into blocks: layer (residual blocks, transformer layers), stage, or
    /// a count of blocks of about equal MACs. Each task head is a block too.
    #[arg(long, default_value = "layer")]
    blocks: String,
    /// Samples per fine-tuning batch (activation memory).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Samples each device fine-tunes on per round, where the devices file gives none.
    #[arg(long, default_value_t = 64)]
    samples: usize,
    /// The edge server's FLOP/s, for the offloading baseline (e.g. 50T).
    #[arg(long, value_parser = super::args::parse_count)]
    server_flops: Option<u64>,
    /// Seed of the random-matching baseline.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Time this many real fine-tuning steps per block on this machine (the interpreter, batch
    /// --batch) and calibrate the cost model with them; devices may then give "speed" (a multiple
    /// of this machine) instead of "flops".
    #[arg(long, value_name = "STEPS", num_args = 0..=1, default_missing_value = "3")]
    measure: Option<usize>,
    /// Also plan with the uplink or every device's memory scaled by 1/8 to 8.
    #[arg(long, value_parser = super::args::choice::<cut::plan::report::Sweep>())]
    sweep: Option<cut::plan::report::Sweep>,
    /// Also write the plan as a Markdown report here.
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Replace an existing report.
    #[arg(long)]
    force: bool,
    /// Print the plan and every input it used as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let job = PlanJob {
        model: a.model.model.clone(),
        load: a.model.load_options()?,
        devices: a.devices.clone(),
        samples: a.samples,
        request: PlanRequest {
            blocks: BlockSize::parse(&a.blocks)?,
            batch: a.batch,
            bandwidth: a.bandwidth as f64,
            server_flops: a.server_flops.map(|f| f as f64),
            seed: a.seed,
            sweep: a.sweep,
            measure: a.measure,
        },
        out: a.out.clone(),
        force: a.force,
    };
    let report = run_job(&job)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", markdown(&report));
    }
    Ok(())
}
