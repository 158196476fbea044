//! `cut prune`: arguments in, a [`PruneJob`] to the library, the summary or JSON out.

use super::args::{DataArgs, FinetuneArgs, ModelArgs};
use super::progress::with_phase_bars;
use anyhow::Result;
use cut::checkpoint::DType;
use cut::data::Split;
use cut::device::DeviceChoice;
use cut::graph::parse_task_list;
use cut::jobs::prune::{run as run_job, PruneJob};
use cut::prune::mask::Fusion;
use cut::prune::policy::{Fold, NormMode, PruneRequest};
use cut::prune::score::{Criterion, Precision, Strategy};
use cut::prune::{Granularity, PruneOptions};
use cut::report::prune::summary;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    norm: super::args::NormArgs,
    /// Tasks the pruned model must keep, e.g. seg,depth. Other heads are removed from the file.
    #[arg(long, value_name = "a,b")]
    tasks: String,
    #[command(flatten)]
    data: DataArgs,
    /// Importance score: snip and taylor (channel granularity only) need --data; magnitude and random do not.
    /// Default: snip with --data, magnitude without.
    #[arg(long, value_parser = super::args::choice::<Criterion>())]
    criterion: Option<Criterion>,
    /// How the selected tasks' keep decisions combine on the shared backbone.
    #[arg(long, value_parser = super::args::choice::<Fusion>(), default_value = "vote")]
    fusion: Fusion,
    /// With --fusion vote: selected tasks that must keep a backbone weight (default min(2, tasks)).
    #[arg(long)]
    min_votes: Option<usize>,
    /// weight: zero individual conv and linear weights (tensors keep their shapes); channel: remove
    /// whole channels (smaller tensors, a faster model).
    #[arg(long, value_parser = super::args::choice::<Granularity>(), default_value = "weight")]
    granularity: Granularity,
    #[command(flatten)]
    budget: super::budget::BudgetArgs,
    /// Time a forward pass (batch 1, the graph's input size) of the input model with all heads, of
    /// the input with the selected heads, and of the output, and add the figures to the report.
    #[arg(long)]
    bench: bool,
    /// Also write the pruned model as ONNX beside the output (<output stem>.onnx; see `cut export`).
    #[arg(long)]
    onnx: bool,
    /// With --int8, also int8 ONNX (<output stem>.int8.onnx), both ONNX files measured in ONNX Runtime.
    #[command(flatten)]
    int8: super::int8::Int8Args,
    /// Calibration batches (of --batch images from the train split) for snip and taylor: default
    /// 20, at most one pass over the train split (capped, with a warning, when given).
    #[arg(long)]
    calib_batches: Option<usize>,
    /// shared: one forward per batch, one backward per task; per-task: the reference's loop.
    #[arg(long, value_parser = super::args::choice::<Strategy>(), default_value = "shared")]
    scoring: Strategy,
    /// Arithmetic for snip scoring: f32, or bf16 convolutions (faster on GPUs with bf16 units).
    #[arg(long, value_parser = super::args::choice::<Precision>(), default_value = "f32")]
    precision: Precision,
    /// Fine-tuning with the masks (or the removed channels) fixed.
    #[command(flatten)]
    finetune: FinetuneArgs,
    /// Fine-tuning weight decay (L2, as the reference's Adam).
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    /// Loss weight per task; default by kind: segmentation 1, normal 20, depth 3 (the reference's).
    #[arg(long, value_name = "t=w,...")]
    lambdas: Option<String>,
    /// Batch norm while fine-tuning: frozen (running statistics fixed, the default) or train (batch
    /// statistics, running statistics updated, as the reference does).
    #[arg(long, value_parser = super::args::choice::<NormMode>(), default_value = "frozen")]
    finetune_norm: NormMode,
    /// Train and score every selected task by matching the input model's outputs (knowledge
    /// distillation), even where --data has labels. Tasks the data has no labels for (a folder of
    /// images, arrays or texts; an imported output of no named kind) are distilled anyway.
    #[arg(long)]
    distill: bool,
    /// Split for the before/after evaluation.
    #[arg(long, value_parser = super::args::choice::<Split>(), default_value = "test")]
    eval_split: Split,
    /// Store pruned weights as a bitmask plus their non-zero values.
    #[arg(long)]
    packed: bool,
    /// Storage dtype of the output (default: the input's).
    #[arg(long, value_parser = DType::parse)]
    dtype: Option<DType>,
    /// Where scoring and fine-tuning run: cpu, cuda, or auto (cuda when present).
    #[arg(long, value_parser = super::args::choice::<DeviceChoice>(), default_value = "cpu")]
    device: DeviceChoice,
    /// Output model (default: <input stem>.<tasks>.pruned.safetensors beside the input).
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Replace existing output files.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let job = PruneJob {
        model: a.model.model.clone(),
        load: a.norm.apply(a.model.load_options()?)?,
        tasks: parse_task_list(&a.tasks),
        request: PruneRequest {
            criterion: a.criterion,
            granularity: a.granularity,
            sparsity: a.budget.sparsity,
            target_macs: a.budget.target_macs,
            target_params: a.budget.target_params,
            min_channels: a.budget.min_channels,
            round_to: a.budget.round_to,
            max_layer_ratio: a.budget.max_layer_ratio,
            min_heads: a.budget.min_heads,
            seq_len: a.budget.seq_len,
            packed: a.packed,
        },
        data: a.data.settings(),
        options: PruneOptions {
            fusion: a.fusion,
            min_votes: a.min_votes,
            exact_fold: a.budget.fold == Fold::Exact,
            calib_batches: a.calib_batches,
            strategy: a.scoring,
            precision: a.precision,
            eval_split: a.eval_split,
            distill: a.distill,
        },
        finetune: a.finetune.schedule(a.weight_decay, a.finetune_norm == NormMode::Frozen),
        lambdas: a.lambdas.clone(),
        dtype: a.dtype,
        device: a.device,
        out: a.out.clone(),
        force: a.force,
        bench: a.bench,
        onnx: a.onnx,
        int8: a.int8.options(),
        command: super::command_line(),
    };
    let done = with_phase_bars(|progress| run_job(&job, &mut |w| eprintln!("cut: warning: {w}"), progress));
    let done = done?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&done.report)?);
    } else {
        print!("{}", summary(&done.report));
        println!(
            "  report {} and {}",
            done.report_json.display(),
            done.report_md.display()
        );
        for onnx in done.onnx.iter().chain(&done.int8) {
            println!("  onnx {}", onnx.display());
        }
    }
    Ok(())
}
