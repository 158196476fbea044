//! `cut split`: arguments in, the split from the library, a summary or JSON out.

use super::args::{DataArgs, FinetuneArgs, ModelArgs};
use super::progress::with_phase_bars;
use anyhow::Result;
use cut::graph::ops::{ScaleGranularity, WireFormat};
use cut::jobs::split::{run as run_job, SplitJob, BANDWIDTH_PRESETS};
use cut::report::split::markdown;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    norm: super::args::NormArgs,
    /// The tasks the split keeps, comma-separated.
    #[arg(long, value_name = "a,b")]
    tasks: String,
    /// The node the device part ends with, or `auto` to try every node after which one tensor
    /// crosses.
    #[arg(long, default_value = "auto")]
    at: String,
    /// Pooling of what crosses, comma-separated to compare: 1 (none), 2 (mean of 2 adjacent tokens,
    /// or of 2x2 pixels of a feature map), 4.
    #[arg(long, default_value = "2")]
    pool: String,
    /// Wire formats, comma-separated to compare: f32, f16, int8.
    #[arg(long, default_value = "int8")]
    wire: String,
    /// Int8 scales: one per sample (tensor) or per sample and channel.
    #[arg(long, value_enum, default_value = "tensor")]
    scale: Scale,
    /// The dataset (required): test metrics, fine-tuning and the payload probes.
    #[command(flatten)]
    data: DataArgs,
    /// Fine-tuning of the cloud part with the compression in place.
    #[command(flatten)]
    finetune: FinetuneArgs,
    /// Fine-tune the device part too.
    #[arg(long)]
    finetune_device: bool,
    /// Recover every task by matching the unsplit model's outputs (distillation), even where
    /// --data has labels; tasks without labels are distilled anyway.
    #[arg(long)]
    distill: bool,
    /// Uplink data rates in Mbit/s, comma-separated (default: 3G, 4G and Wi-Fi, 1.1, 5.85,
    /// 18.88). (`cut plan --bandwidth` is a spectrum in Hz, another quantity.)
    #[arg(long = "rate", alias = "bandwidth", value_name = "MBIT", allow_hyphen_values = true)]
    bandwidth: Option<String>,
    /// Round-trip time added to every offloaded inference, ms.
    #[arg(long, default_value_t = 20.0)]
    rtt: f64,
    /// How much faster the cloud runs than this machine (cloud latencies are divided by it).
    #[arg(long, default_value_t = 1.0)]
    cloud_speedup: f64,
    /// Timed runs per latency (medians; after 3 warm-up runs).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Points a task may lose for a split to be chosen for writing.
    #[arg(long, default_value_t = 2.0, allow_hyphen_values = true)]
    max_drop: f64,
    /// Output prefix: OUT.device.safetensors, OUT.cloud.safetensors, OUT.report.json, OUT.report.md.
    #[arg(short, long)]
    out: PathBuf,
    /// Replace existing output files.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Scale {
    Tensor,
    Channel,
}

fn list<T>(flag: &str, text: &str, parse: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    let items: Vec<T> = text.split(',').map(|p| parse(p.trim())).collect::<Result<_>>()?;
    if items.is_empty() {
        cut::usage_bail!("{flag}: give at least one value");
    }
    Ok(items)
}

pub fn run(a: Args) -> Result<()> {
    let pools = list("--pool", &a.pool, |p| {
        p.parse::<usize>()
            .map_err(|_| anyhow::Error::from(cut::error::UsageError(format!("--pool '{p}': expected 1, 2 or 4"))))
    })?;
    let wires = list("--wire", &a.wire, WireFormat::parse)?;
    let bandwidths = match &a.bandwidth {
        Some(text) => list("--rate", text, |b| {
            b.parse::<f64>().map_err(|_| {
                anyhow::Error::from(cut::error::UsageError(format!(
                    "--rate '{b}': expected Mbit/s such as 5.85"
                )))
            })
        })?,
        None => BANDWIDTH_PRESETS.to_vec(),
    };
    let job = SplitJob {
        model: a.model.model.clone(),
        load: a.norm.apply(a.model.load_options()?)?,
        tasks: cut::graph::parse_task_list(&a.tasks),
        at: (a.at != "auto").then(|| a.at.clone()),
        pools,
        wires,
        scale: match a.scale {
            Scale::Tensor => ScaleGranularity::Tensor,
            Scale::Channel => ScaleGranularity::Channel,
        },
        data: a.data.settings(),
        // Split fine-tunes without weight decay, batch norm training.
        finetune: a.finetune.schedule(0.0, false),
        finetune_device: a.finetune_device,
        distill: a.distill,
        bandwidths,
        rtt_ms: a.rtt,
        cloud_speedup: a.cloud_speedup,
        runs: a.runs,
        max_drop: a.max_drop,
        out: a.out.clone(),
        force: a.force,
        command: super::command_line(),
    };
    let done = with_phase_bars(|progress| run_job(&job, &mut |w| eprintln!("cut: warning: {w}"), progress));
    let done = done?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&done.report)?);
    } else {
        print!("{}", markdown(&done.report));
        println!(
            "\nreport {} and {}",
            done.report_json.display(),
            done.report_md.display()
        );
    }
    Ok(())
}
