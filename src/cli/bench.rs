use super::args::{parse_input_size, ModelArgs};
use anyhow::{bail, Result};
use cut::bench::{bench, BenchConfig};
use cut::checkpoint::Checkpoint;
use cut::device::{resolve, DeviceChoice};
use cut::graph::parse_task_list;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Tasks whose heads run (default: all).
    #[arg(long, value_name = "a,b")]
    tasks: Option<String>,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceChoice,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Input size CxHxW (default: the graph's).
    #[arg(long, value_name = "CxHxW")]
    input: Option<String>,
    /// Untimed runs first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.batch == 0 || a.runs == 0 {
        bail!("--batch and --runs must be positive");
    }
    let ckpt = Checkpoint::open(&a.model.model)?;
    let model = ckpt.model(&a.model.load_options()?)?.model;
    let tasks = match &a.tasks {
        Some(t) => model.select_tasks(&parse_task_list(t))?,
        None => model.tasks.clone(),
    };
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    let g = &model.graph.input;
    let input = match &a.input {
        Some(text) => parse_input_size(text, g.channels)?,
        None => [g.channels, g.height, g.width],
    };
    cut::graph::shapes::infer(&model.graph, input)?;
    let device = resolve(a.device)?;
    let params = ckpt.load_params(&model, device)?;
    let cfg = BenchConfig {
        device,
        batch: a.batch,
        input,
        warmup: a.warmup,
        runs: a.runs,
    };
    let r = bench(&model, &params, &names, cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{} ({}) on {} ({} threads), batch {} of {}x{}x{}: median {:.2} ms (min {:.2}, p90 {:.2}, max {:.2}; {} runs after {} warm-up), {:.1} images/s{}",
            a.model.model.display(),
            r.tasks.join(", "),
            r.device,
            r.threads,
            r.batch,
            r.input[0],
            r.input[1],
            r.input[2],
            r.median_ms,
            r.min_ms,
            r.p90_ms,
            r.max_ms,
            r.runs,
            r.warmup,
            r.images_per_s,
            r.peak_memory_bytes.map(|b| format!(", peak memory {}", cut::report::table::bytes(b as f64))).unwrap_or_default()
        );
    }
    Ok(())
}
