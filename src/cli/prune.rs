use super::args::{progress, DataArgs, ModelArgs};
use anyhow::Result;
use cut::bench::{compare, speedup, BenchConfig, Candidate};
use cut::checkpoint::metadata::Provenance;
use cut::checkpoint::{sha256_file, writer, Checkpoint, DType};
use cut::data::Split;
use cut::device::{resolve, DeviceChoice};
use cut::fsio;
use cut::graph::parse_task_list;
use cut::prune::channel_select::Budget;
use cut::prune::mask::Fusion;
use cut::prune::policy::PruneRequest;
use cut::prune::score::{Criterion, Precision, Strategy};
use cut::prune::{prune, Granularity, PruneConfig};
use cut::report::prune::{build, markdown, summary, Latency, Settings};
use cut::train::{task_lambdas, TrainConfig};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Tasks the pruned model must keep, e.g. seg,depth. Other heads are removed from the file.
    #[arg(long, value_name = "a,b")]
    tasks: String,
    #[command(flatten)]
    data: DataArgs,
    /// Importance score: snip and taylor (channel granularity only) need --data; magnitude and random do not.
    /// Default: snip with --data, magnitude without.
    #[arg(long, value_enum)]
    criterion: Option<Criterion>,
    /// How the selected tasks' keep decisions combine on the shared backbone.
    #[arg(long, value_enum, default_value = "vote")]
    fusion: Fusion,
    /// With --fusion vote: selected tasks that must keep a backbone weight (default min(2, tasks)).
    #[arg(long)]
    min_votes: Option<usize>,
    /// weight: zero individual conv and linear weights (tensors keep their shapes); channel: remove
    /// whole channels (smaller tensors, a faster model).
    #[arg(long, value_enum, default_value = "weight")]
    granularity: Granularity,
    /// In (0, 1). With --granularity weight: the share of the output model's conv and linear
    /// weights that are zero (default 0.9). With --granularity channel: the share of the
    /// selected-task model's multiply-accumulates removed (default 0.5).
    #[arg(long)]
    sparsity: Option<f64>,
    /// Channel pruning: at most this many multiply-accumulates per image (e.g. 2.5G, 800M), instead
    /// of --sparsity.
    #[arg(long, value_name = "N", value_parser = parse_count, conflicts_with_all = ["sparsity", "target_params"])]
    target_macs: Option<u64>,
    /// Channel pruning: at most this many parameters (e.g. 5M), instead of --sparsity.
    #[arg(long, value_name = "N", value_parser = parse_count, conflicts_with = "sparsity")]
    target_params: Option<u64>,
    /// Channel pruning: kept channel counts are multiples of this (1 turns rounding off).
    #[arg(long, default_value_t = 8)]
    round_to: usize,
    /// Channel pruning: every layer keeps at least this many channels (or all, if it has fewer).
    #[arg(long, default_value_t = 8)]
    min_channels: usize,
    /// Channel pruning: at most this share of one layer's channels is removed. Default: 0.5, raised
    /// to 0.75, 0.9 or 1 only when the budget needs it.
    #[arg(long)]
    max_layer_ratio: Option<f64>,
    /// Channel pruning. exact: keep every channel whose removal the bias fold cannot reproduce
    /// exactly (a non-zero constant read by a padded convolution), so the pruned model equals the
    /// zeroed one before fine-tuning. approximate: remove such channels too; the fold is then exact
    /// only away from those convolutions' borders.
    #[arg(long, value_enum, default_value = "exact")]
    fold: Fold,
    /// Time a forward pass (batch 1, the graph's input size) of the input model with all heads, of
    /// the input with the selected heads, and of the output, and add the figures to the report.
    #[arg(long)]
    bench: bool,
    /// Calibration batches (of --batch images from the train split) for snip.
    #[arg(long, default_value_t = 20)]
    calib_batches: usize,
    /// shared: one forward per batch, one backward per task; per-task: the reference's loop.
    #[arg(long, value_enum, default_value = "shared")]
    scoring: Strategy,
    /// Arithmetic for snip scoring: f32, or bf16 convolutions (faster on GPUs with bf16 units).
    #[arg(long, value_enum, default_value = "f32")]
    precision: Precision,
    /// Fine-tuning steps with the masks fixed (0 skips fine-tuning).
    #[arg(long, default_value_t = 300)]
    finetune_steps: usize,
    /// Fine-tuning learning rate (the reference's 1e-5).
    #[arg(long, default_value_t = 1e-5)]
    lr: f64,
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    #[arg(long, default_value_t = 1000)]
    step_size: usize,
    #[arg(long, default_value_t = 0.7)]
    gamma: f64,
    /// Loss weight per task; default by kind: segmentation 1, normal 20, depth 3 (the reference's).
    #[arg(long, value_name = "t=w,...")]
    lambdas: Option<String>,
    /// Batch norm while fine-tuning: frozen (running statistics fixed, the default) or train (batch
    /// statistics, running statistics updated, as the reference does).
    #[arg(long, value_enum, default_value = "frozen")]
    finetune_norm: NormMode,
    /// Validate every N fine-tuning steps.
    #[arg(long, default_value_t = 50)]
    val_every: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Split for the before/after evaluation.
    #[arg(long, value_enum, default_value = "test")]
    eval_split: Split,
    /// Store pruned weights as a bitmask plus their non-zero values.
    #[arg(long)]
    packed: bool,
    /// Storage dtype of the output.
    #[arg(long, default_value = "f32", value_parser = DType::parse)]
    dtype: DType,
    #[arg(long, value_enum, default_value = "cpu")]
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fold {
    Exact,
    Approximate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NormMode {
    Frozen,
    Train,
}

fn default_output(input: &Path, tasks: &[String]) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    input.with_file_name(format!("{stem}.{}.pruned.safetensors", tasks.join("+")))
}

fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = name.strip_suffix(".safetensors").unwrap_or(&name);
    out.with_file_name(format!("{stem}{suffix}"))
}

pub fn run(a: Args) -> Result<()> {
    let ckpt = Checkpoint::open(&a.model.model)?;
    let loaded = ckpt.model(&a.model.load_options()?)?;
    for w in &loaded.warnings {
        eprintln!("cut: warning: {w}");
    }
    let full = loaded.model;
    let selected = full.select_tasks(&parse_task_list(&a.tasks))?;
    let request = PruneRequest {
        criterion: a.criterion,
        granularity: a.granularity,
        sparsity: a.sparsity,
        target_macs: a.target_macs,
        target_params: a.target_params,
        min_channels: a.min_channels,
        round_to: a.round_to,
        max_layer_ratio: a.max_layer_ratio,
        packed: a.packed,
        finetune_steps: a.finetune_steps,
        has_data: a.data.data.is_some(),
    };
    let resolved = request.resolve()?;
    let channel = a.granularity == Granularity::Channel;
    let criterion = resolved.criterion;
    let names: Vec<String> = selected.iter().map(|t| t.name.clone()).collect();
    let out = a.out.clone().unwrap_or_else(|| default_output(&a.model.model, &names));
    let (report_json, report_md) = (sibling(&out, ".report.json"), sibling(&out, ".report.md"));
    for p in [&out, &report_json, &report_md] {
        fsio::check_output(p, &[&a.model.model], a.force)?;
    }
    let lambdas = task_lambdas(&selected, a.lambdas.as_deref())?;
    let finetune_steps = resolved.finetune_steps;
    let device = resolve(a.device)?;
    let finetune = TrainConfig {
        steps: finetune_steps,
        batch: a.data.batch,
        lr: a.lr,
        weight_decay: a.weight_decay,
        step_size: a.step_size,
        gamma: a.gamma,
        lambdas: lambdas.clone(),
        seed: a.seed,
        val_every: a.val_every,
        device,
        freeze_norm: a.finetune_norm == NormMode::Frozen,
    };
    finetune.validate()?;
    for w in &resolved.warnings {
        eprintln!("cut: warning: {w}");
    }
    let data = a.data.open()?;
    let sparsity = resolved.sparsity;
    let cfg = PruneConfig {
        criterion,
        granularity: a.granularity,
        channel_rules: resolved.channel_rules,
        widen_layer_ratio: resolved.widen_layer_ratio,
        channel_budget: resolved.channel_budget,
        exact_fold: a.fold == Fold::Exact,
        fusion: a.fusion,
        min_votes: a.min_votes,
        sparsity,
        tolerance: 0.005,
        calib_batches: a.calib_batches,
        strategy: a.scoring,
        precision: a.precision,
        seed: a.seed,
        val_fraction: a.data.val_fraction,
        eval_split: a.eval_split,
        finetune,
        output_kind: a.dtype.kind(),
    };
    let t = std::time::Instant::now();
    let params = ckpt.load_params(&full, device)?;
    let input_sha = sha256_file(&a.model.model)?;
    let load_s = t.elapsed().as_secs_f64();

    let score_bar = progress(a.calib_batches as u64, "score");
    let tune_bar = progress(finetune_steps as u64, "fine-tune");
    let mut outcome = prune(
        &full,
        &params,
        &selected,
        data.as_ref(),
        &cfg,
        |phase, done, _| match phase {
            "score" => score_bar.set_position(done as u64),
            _ => tune_bar.set_position(done as u64),
        },
    )?;
    score_bar.finish_and_clear();
    tune_bar.finish_and_clear();
    outcome.timings.load_s = load_s;

    let command = super::command_line();
    let bytes = writer::model_bytes(
        &outcome.model,
        &outcome.params,
        a.dtype,
        a.packed,
        Some(&Provenance::new(command.clone(), Some(input_sha.clone()))),
    )?;
    fsio::write_atomic(&out, &bytes)?;

    let dropped: Vec<String> = full
        .task_names()
        .into_iter()
        .filter(|t| !names.iter().any(|n| n == t))
        .map(String::from)
        .collect();
    let settings = Settings {
        input_tasks: full.task_names().into_iter().map(String::from).collect(),
        tasks: names.clone(),
        dropped_tasks: dropped,
        criterion: format!("{criterion:?}").to_lowercase(),
        granularity: format!("{:?}", a.granularity).to_lowercase(),
        fusion: format!("{:?}", a.fusion).to_lowercase(),
        votes_needed: a.fusion.needed_votes(selected.len(), a.min_votes)?,
        calib_batches: if criterion.needs_data() { a.calib_batches } else { 0 },
        batch: a.data.batch,
        scoring: match a.scoring {
            _ if criterion == Criterion::Taylor => {
                "one forward per batch, one backward per selected task to the producers' outputs, inference mode, f32"
                    .into()
            }
            Strategy::Shared => format!(
                "one forward per batch, one backward per selected task, inference mode, {:?}",
                a.precision
            )
            .to_lowercase(),
            Strategy::PerTask => format!(
                "one forward and backward per task per batch, inference mode, {:?}",
                a.precision
            )
            .to_lowercase(),
        },
        seed: a.seed,
        finetune_steps,
        lr: a.lr,
        weight_decay: a.weight_decay,
        step_size: a.step_size,
        gamma: a.gamma,
        lambdas,
        val_fraction: a.data.val_fraction,
        eval_split: a.eval_split.as_str().into(),
        dtype: a.dtype.to_string(),
        layout: if a.packed { "packed".into() } else { "dense".into() },
        device: cut::device::describe(device),
    };
    let latency = if a.bench {
        let pruned_params = outcome
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.to_device(device)))
            .collect();
        Some(compare_latency(
            &full,
            &params,
            &names,
            &outcome.model,
            &pruned_params,
            device,
        )?)
    } else {
        None
    };
    let mut report = build(
        &ckpt,
        input_sha,
        &full,
        &outcome,
        settings,
        if channel { 0.0 } else { cfg.tolerance },
        match outcome.channels.as_ref().map(|c| (c.budget, c.before)) {
            Some((Budget::Macs(m), before)) => 1.0 - m as f64 / before.macs.max(1) as f64,
            Some((Budget::Params(_), _)) => f64::NAN,
            _ => sparsity,
        },
        &out,
        bytes.len() as u64,
        command,
    )?;
    report.latency = latency;
    fsio::write_atomic(&report_json, serde_json::to_string_pretty(&report)?.as_bytes())?;
    fsio::write_atomic(&report_md, markdown(&report).as_bytes())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", summary(&report));
        println!("  report {} and {}", report_json.display(), report_md.display());
    }
    Ok(())
}

/// "2.5G", "800M", "12k" or a plain integer.
fn parse_count(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let (number, scale) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        Some('g' | 'G') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    match number.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok((v * scale).round() as u64),
        _ => Err(format!("'{text}' is not a positive count such as 800M or 2.5G")),
    }
}

/// Batch-1 latency of the input (all heads, selected heads) and of the output, on `device`.
fn compare_latency(
    full: &cut::graph::Model,
    params: &cut::graph::interpreter::Params,
    selected: &[String],
    pruned: &cut::graph::Model,
    pruned_params: &cut::graph::interpreter::Params,
    device: tch::Device,
) -> Result<Latency> {
    let g = &full.graph.input;
    let cfg = BenchConfig {
        device,
        batch: 1,
        input: [g.channels, g.height, g.width],
        warmup: 10,
        runs: 50,
        fold_batch_norm: true,
        cuda_graph: false,
    };
    let sel: Vec<&str> = selected.iter().map(String::as_str).collect();
    let r = compare(
        &[
            Candidate {
                model: full,
                params,
                tasks: full.task_names(),
            },
            Candidate {
                model: full,
                params,
                tasks: sel.clone(),
            },
            Candidate {
                model: pruned,
                params: pruned_params,
                tasks: sel,
            },
        ],
        cfg,
    )?;
    let (dense_all, dense_selected, out) = (&r[0], &r[1], &r[2]);
    Ok(Latency {
        device: out.device.clone(),
        threads: out.threads,
        batch: 1,
        input: cfg.input,
        runs: cfg.runs,
        dense_all_heads_ms: dense_all.median_ms,
        dense_selected_ms: dense_selected.median_ms,
        pruned_ms: out.median_ms,
        speedup_vs_all_heads: speedup(out, dense_all).median_over_median,
        speedup_vs_selected: speedup(out, dense_selected).median_over_median,
        batch_norms_folded: cfg.fold_batch_norm,
    })
}
