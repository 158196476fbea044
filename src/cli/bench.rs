//! `cut bench`: arguments in, a [`BenchJob`] to the library, a line per model or JSON out.

use super::args::{parse_input_size, ModelArgs};
use anyhow::Result;
use cut::device::DeviceChoice;
use cut::graph::parse_task_list;
use cut::jobs::bench::{run as run_job, BenchJob};
use cut::report::bench::{line, profile_tables};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Tasks whose heads run (default: all).
    #[arg(long, value_name = "a,b")]
    tasks: Option<String>,
    /// Where the model runs: cpu, cuda, or auto (cuda when present).
    #[arg(long, value_parser = super::args::choice::<DeviceChoice>(), default_value = "cpu")]
    device: DeviceChoice,
    /// Samples per timed forward pass.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// A text model's sequence length (default: the graph's, 128).
    #[arg(long, value_name = "N")]
    seq_len: Option<usize>,
    /// Untimed runs first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// CPU threads for intra-op parallelism (default: libtorch's choice, usually the core count).
    #[arg(long)]
    threads: Option<usize>,
    /// Another checkpoint (all its heads) to time in the same runs, interleaved, for a speed-up.
    #[arg(long, value_name = "MODEL")]
    baseline: Option<std::path::PathBuf>,
    /// Time the model as stored, batch norms separate, instead of folding each batch norm into
    /// the convolution before it as a deployment would.
    #[arg(long)]
    keep_batch_norm: bool,
    /// Also time every node separately and print where the time goes: per op kind, and the
    /// slowest nodes (`--json`: every node).
    #[arg(long, conflicts_with = "baseline")]
    profile: bool,
    /// With --device cuda: record each model's forward once as a CUDA graph and time replays of it
    /// (one launch per forward instead of one per kernel). Hidden until it has run on a GPU: the
    /// sessions that wrote it had none.
    #[arg(long, hide = true, conflicts_with = "profile")]
    cuda_graph: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    // An unnamed --input CxHxW is the timed size; HxW leaves the channels at 0: the job takes the
    // graph's.
    let (load, run_size) = a.model.load_options_and_run_size()?;
    let input = run_size.as_deref().map(|text| parse_input_size(text, 0)).transpose()?;
    let job = BenchJob {
        model: a.model.model.clone(),
        load,
        tasks: a.tasks.as_deref().map(parse_task_list),
        device: a.device,
        batch: a.batch,
        input,
        seq_len: a.seq_len,
        warmup: a.warmup,
        runs: a.runs,
        threads: a.threads,
        baseline: a.baseline.clone(),
        fold_batch_norm: !a.keep_batch_norm,
        cuda_graph: a.cuda_graph,
        profile: a.profile,
    };
    let done = run_job(&job)?;
    let name = a.model.model.display().to_string();
    if let Some(nodes) = &done.nodes {
        if a.json {
            let json = serde_json::json!({ "model": done.model, "nodes": nodes });
            println!("{}", serde_json::to_string_pretty(&json)?);
        } else {
            println!("{}", line(&name, &done.model));
            print!("{}", profile_tables(nodes, done.model.median_ms));
        }
        return Ok(());
    }
    if a.json {
        let json = match &done.baseline {
            Some((b, ratio)) => serde_json::json!({
                "model": done.model,
                "baseline": b,
                "baseline_path": a.baseline.as_ref().map(|p| p.display().to_string()),
                "speedup": ratio.median_over_median,
                "speedup_per_round": {
                    "median": ratio.per_round_median,
                    "p10": ratio.per_round_p10,
                    "p90": ratio.per_round_p90,
                },
            }),
            None => serde_json::to_value(&done.model)?,
        };
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("{}", line(&name, &done.model));
        if let (Some((b, ratio)), Some(path)) = (&done.baseline, &a.baseline) {
            println!("{}", line(&path.display().to_string(), b));
            println!(
                "speedup {:.2}x (median against median, runs interleaved; per round: median {:.2}x, 10-90% {:.2}x-{:.2}x)",
                ratio.median_over_median, ratio.per_round_median, ratio.per_round_p10, ratio.per_round_p90
            );
        }
    }
    Ok(())
}
