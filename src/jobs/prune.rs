//! `cut prune` as one call: [`PruneJob`] in, [`PruneDone`] out.

use crate::bench::{compare, speedup, BenchConfig, BenchInput, Candidate};
use crate::checkpoint::metadata::Provenance;
use crate::checkpoint::{sha256_file, writer, Checkpoint, DType, LoadOptions};
use crate::choice::Choice;
use crate::data::Dataset;
use crate::data::Split;
use crate::device::DeviceChoice;
use crate::fsio::{check_output, sibling, Outputs};
use crate::graph::{Model, Params};
use crate::prune::channel_select::Budget;
use crate::prune::policy::{PruneRequest, Resolved};
use crate::prune::score::{Criterion, Strategy};
use crate::prune::{prune, CheckedConfig, Granularity, PruneConfig, PruneOptions, PruneOutcome};
use crate::report::prune::{build, markdown, Latency, PruneReport, Settings};
use crate::train::{task_lambdas, Schedule, TrainConfig};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Everything `cut prune` was asked.
#[derive(Clone, Debug)]
pub struct PruneJob {
    pub model: PathBuf,
    pub load: LoadOptions,
    /// The tasks to keep, as the user named them.
    pub tasks: Vec<String>,
    /// The options whose defaults depend on each other (and on whether `data` is given).
    pub request: PruneRequest,
    /// The dataset (required except by prune) and its batching.
    pub data: crate::data::DataSettings,
    /// Scoring, fusion, the channel fold and the evaluation split.
    pub options: PruneOptions,
    /// Fine-tuning after pruning (no steps without data).
    pub finetune: Schedule,
    /// "seg=1,depth=3": loss weights over the defaults by kind.
    pub lambdas: Option<String>,
    /// Storage of the output; the input's (its floating-point tensors') when `None`.
    pub dtype: Option<DType>,
    pub device: DeviceChoice,
    /// The output model; default `<input stem>.<tasks>.pruned.safetensors` beside the input.
    pub out: Option<PathBuf>,
    pub force: bool,
    /// Time the input and output at batch 1 and add the figures to the report.
    pub bench: bool,
    /// Also write the output as ONNX beside it (`<out stem>.onnx`).
    pub onnx: bool,
    /// Also write it as int8 ONNX (`<out stem>.int8.onnx`), calibrated on the data, and measure
    /// both ONNX files in ONNX Runtime.
    pub int8: Option<crate::onnx::quantize::Int8Options>,
    /// The command line, for the provenance record.
    pub command: String,
}

/// What a finished prune wrote.
pub struct PruneDone {
    pub report: PruneReport,
    pub out: PathBuf,
    pub report_json: PathBuf,
    pub report_md: PathBuf,
    /// The ONNX file, with `--onnx`.
    pub onnx: Option<PathBuf>,
    /// The int8 ONNX file, with `--int8`.
    pub int8: Option<PathBuf>,
}

/// How far a long phase ("score", "fine-tune") is.
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// The default output beside the input, named after what was asked so that runs with other
/// settings do not collide: `<input stem>.<tasks joined by +>.<granularity><budget>` then
/// `.packed` and the dtype when given, e.g. `demo.seg+depth.weight90.safetensors`,
/// `demo.seg+depth.channel50.safetensors`, `demo.seg.channel-98Mmacs.packed.f16.safetensors`.
pub fn default_output(
    input: &Path,
    tasks: &[String],
    request: &PruneRequest,
    resolved: &Resolved,
    dtype: Option<DType>,
) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    let granularity = match request.granularity {
        Granularity::Weight => "weight",
        Granularity::Channel => "channel",
    };
    let budget = match (request.target_macs, request.target_params) {
        (Some(m), _) => format!("-{}macs", compact_count(m)),
        (None, Some(p)) => format!("-{}params", compact_count(p)),
        (None, None) => format!("{}", (resolved.sparsity.get() * 100.0).round() as u64),
    };
    let mut name = format!("{stem}.{}.{granularity}{budget}", tasks.join("+"));
    if request.packed {
        name.push_str(".packed");
    }
    if let Some(d) = dtype {
        name.push_str(&format!(".{}", d.safetensors_name().to_lowercase()));
    }
    input.with_file_name(format!("{name}.safetensors"))
}

/// 98000000 -> "98M", 2500000000 -> "2.5G", for file names.
fn compact_count(n: u64) -> String {
    let (value, unit) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(scale, _)| n as f64 >= *scale)
        .map_or((n as f64, ""), |(scale, unit)| (n as f64 / scale, unit));
    let digits = format!("{value:.2}");
    format!("{}{unit}", digits.trim_end_matches('0').trim_end_matches('.'))
}

/// The files a prune writes: the model, its two reports, and with --onnx the ONNX file.
struct PrunePaths {
    out: PathBuf,
    report_json: PathBuf,
    report_md: PathBuf,
    onnx: Option<PathBuf>,
    int8: Option<PathBuf>,
}

/// The outputs' paths (the default named after the request), each checked before any work.
fn output_paths(job: &PruneJob, names: &[String], resolved: &Resolved) -> Result<PrunePaths> {
    let out = job
        .out
        .clone()
        .unwrap_or_else(|| default_output(&job.model, names, &job.request, resolved, job.dtype));
    let paths = PrunePaths {
        report_json: sibling(&out, ".report.json"),
        report_md: sibling(&out, ".report.md"),
        onnx: job.onnx.then(|| sibling(&out, ".onnx")),
        int8: job.int8.as_ref().map(|_| sibling(&out, ".int8.onnx")),
        out,
    };
    for p in [&paths.out, &paths.report_json, &paths.report_md]
        .into_iter()
        .chain(paths.onnx.as_ref())
        .chain(paths.int8.as_ref())
    {
        check_output(p, &[&job.model], job.force)?;
    }
    Ok(paths)
}

/// The prune's configuration from the job and its resolved request, checked once.
fn prune_config(job: &PruneJob, resolved: &Resolved, device: tch::Device, dtype: DType) -> Result<CheckedConfig> {
    let has_data = job.data.folder.is_some();
    let finetune = TrainConfig {
        // Fine-tuning needs data: none without it.
        schedule: Schedule {
            steps: if has_data { job.finetune.steps } else { 0 },
            ..job.finetune.clone()
        },
        batch: job.data.batch,
        lambdas: Default::default(),
        device,
        only: None,
        inference_mode: false,
    };
    PruneConfig {
        request: job.request.clone(),
        resolved: resolved.clone(),
        options: job.options.clone(),
        calib_batches: job.options.calib_batches.unwrap_or(crate::prune::DEFAULT_CALIB_BATCHES),
        tolerance: 0.005,
        val_fraction: job.data.val_fraction,
        finetune,
        output_kind: dtype.kind(),
    }
    .check(has_data)
}

/// The dataset, when --data is given, in the form the model reads; the calibration batches
/// capped at one pass over its train split (silently for the default, with a word for a count
/// the user gave).
fn open_data(
    job: &PruneJob,
    full: &Model,
    cfg: &mut CheckedConfig,
    warn: &mut dyn FnMut(&str),
) -> Result<Option<Dataset>> {
    let Some(data) = job.data.open(full, warn)? else {
        if job.int8.is_some() {
            crate::usage_bail!(
                "--int8 needs --data: inputs to calibrate the activations' ranges on (labels are not needed)"
            );
        }
        return Ok(None);
    };
    let train = data.split(Split::Train, job.data.val_fraction)?.count();
    if let Some(w) = cfg
        .cap_calibration(train)
        .filter(|_| job.options.calib_batches.is_some())
    {
        warn(&w);
    }
    Ok(Some(data))
}

/// The share the budget asked to remove, for the report: the sparsity, or a MAC budget as a share
/// of the model's MACs (NaN for a parameter budget, which has no such share).
fn budget_target(outcome: &PruneOutcome, sparsity: f64) -> f64 {
    match outcome.channels().map(|c| (c.budget, c.before)) {
        Some((Budget::Macs(m), before)) => 1.0 - m as f64 / before.macs.max(1) as f64,
        Some((Budget::Params(_), _)) => f64::NAN,
        _ => sparsity,
    }
}

/// With --bench: batch-1 latencies of the input (all heads, selected heads) and the output.
fn bench_latency(
    job: &PruneJob,
    full: &Model,
    params: &Params,
    names: &[String],
    outcome: &PruneOutcome,
    device: tch::Device,
) -> Result<Option<Latency>> {
    if !job.bench {
        return Ok(None);
    }
    let pruned_params = outcome
        .params
        .iter()
        .map(|(k, v)| (k.clone(), v.to_device(device)))
        .collect();
    compare_latency(full, params, names, &outcome.model, &pruned_params, device).map(Some)
}

/// The model, both reports and the ONNX file, renamed into place together.
fn write_outputs(
    job: &PruneJob,
    paths: &PrunePaths,
    model_bytes: &[u8],
    report: &PruneReport,
    outcome: &PruneOutcome,
    dtype: DType,
    int8: Option<&[u8]>,
) -> Result<()> {
    let mut outputs = Outputs::new(job.force);
    if let (Some(path), Some(bytes)) = (&paths.int8, int8) {
        outputs.stage(path, bytes)?;
    }
    outputs.stage(&paths.out, model_bytes)?;
    outputs.stage(&paths.report_json, serde_json::to_string_pretty(report)?.as_bytes())?;
    outputs.stage(&paths.report_md, markdown(report).as_bytes())?;
    if let Some(path) = &paths.onnx {
        let opts = crate::onnx::ExportOptions {
            half: dtype == DType::F16,
            ..Default::default()
        };
        crate::onnx::stage(
            &outcome.model,
            &outcome.params,
            &opts,
            path,
            &[&job.model],
            job.force,
            &mut outputs,
        )?;
    }
    outputs.commit()
}

/// Runs the prune. `warn` gets each warning as soon as it is known (before the long work);
/// `progress(phase, done, total)` reports the long phases. Nothing is written unless every
/// output is complete: the model and both reports are renamed into place together at the end.
pub fn run(job: &PruneJob, warn: &mut dyn FnMut(&str), progress: Progress) -> Result<PruneDone> {
    let ckpt = Checkpoint::open_with(&job.model, &job.load)?;
    let loaded = ckpt.model(&job.load)?;
    for w in &loaded.warnings {
        warn(w);
    }
    let dtype = job.dtype.unwrap_or_else(|| ckpt.float_dtype());
    let full = loaded.model;
    let selected = full.select_tasks(&job.tasks)?;
    let resolved = job.request.resolve(job.data.folder.is_some())?;
    let names: Vec<String> = selected.iter().map(|t| t.name.clone()).collect();
    let paths = output_paths(job, &names, &resolved)?;
    let device = crate::device::resolve(job.device)?;
    let mut cfg = prune_config(job, &resolved, device, dtype)?;
    for w in &resolved.warnings {
        warn(w);
    }
    let data = open_data(job, &full, &mut cfg, warn)?;
    // Which tasks learn from the model itself, known once the data is open.
    let selected = match &data {
        Some(d) => crate::tasks::distill::mark(&selected, job.options.distill, d.labelled()),
        None => selected,
    };
    let lambdas = task_lambdas(&selected, job.lambdas.as_deref())?;
    cfg.set_lambdas(lambdas.clone());
    let t = std::time::Instant::now();
    let params = ckpt.load_params(&full, device)?;
    let input_sha = sha256_file(&ckpt.path)?;
    let load_s = t.elapsed().as_secs_f64();

    let mut outcome = prune(&full, &params, &selected, data.as_ref(), &cfg, |phase, done, total| {
        progress(phase, done, total)
    })?;
    outcome.timings.load_s = load_s;
    warn_about_labels(&outcome, warn);
    let bytes = writer::model_bytes(
        &outcome.model,
        &outcome.params,
        dtype,
        job.request.packed,
        Some(&Provenance::new(job.command.clone(), Some(input_sha.clone()))),
    )?;
    let mut settings = settings(job, &full, &names, &cfg, lambdas, device, dtype)?;
    settings.distilled = selected.iter().filter(|t| t.distill).map(|t| t.name.clone()).collect();
    let tolerance = (job.request.granularity != Granularity::Channel).then_some(cfg.tolerance);
    let mut report = build(
        &ckpt,
        input_sha,
        &full,
        &outcome,
        settings,
        tolerance.unwrap_or(0.0),
        budget_target(&outcome, resolved.sparsity.get()),
        &paths.out,
        bytes.len() as u64,
        job.command.clone(),
    )?;
    report.latency = bench_latency(job, &full, &params, &names, &outcome, device)?;
    let cx = Int8Cx {
        full: &full,
        params: &params,
        selected: &selected,
        device,
        cfg: &cfg,
    };
    let int8 = int8_outputs(job, &paths, data.as_ref(), &outcome, &cx)?.map(|(files, int8_report)| {
        report.int8 = Some(int8_report);
        files.int8
    });
    write_outputs(job, &paths, &bytes, &report, &outcome, dtype, int8.as_deref())?;
    Ok(PruneDone {
        report,
        out: paths.out,
        report_json: paths.report_json,
        report_md: paths.report_md,
        onnx: paths.onnx,
        int8: paths.int8,
    })
}

/// The labels' warnings, once (they are the same before and after).
fn warn_about_labels(outcome: &PruneOutcome, warn: &mut dyn FnMut(&str)) {
    for t in outcome.accuracy.iter().flat_map(|acc| &acc.before) {
        for w in &t.warnings {
            warn(&format!("task '{}': {w}", t.task));
        }
    }
}

/// What the int8 step reads of the run.
struct Int8Cx<'a> {
    full: &'a Model,
    params: &'a Params,
    selected: &'a [crate::graph::TaskSpec],
    device: tch::Device,
    cfg: &'a CheckedConfig,
}

/// The int8 file of the output and its report: calibrated on the training split, both ONNX files
/// run in ONNX Runtime on the evaluation split (distilled tasks against the input model's outputs).
/// With --int8 (and the data it needs), else nothing.
fn int8_outputs(
    job: &PruneJob,
    paths: &PrunePaths,
    data: Option<&Dataset>,
    outcome: &PruneOutcome,
    cx: &Int8Cx,
) -> Result<Option<(super::int8::Int8Files, crate::report::int8::Int8Report)>> {
    let (Some(opts), Some(path), Some(data)) = (&job.int8, &paths.int8, data) else {
        return Ok(None);
    };
    let export = crate::onnx::ExportOptions::default();
    let files = super::int8::int8_files(&outcome.model, &outcome.params, &export, data, &job.data, opts)?;
    let names: Vec<&str> = cx.selected.iter().map(|t| t.name.as_str()).collect();
    let teacher = cx.full.keep_tasks(&names);
    let taught = crate::data::teacher::for_tasks(data, &teacher, cx.params, cx.selected, cx.device);
    let split = job.options.eval_split;
    let items = taught.split(split, cx.cfg.val_fraction)?;
    let tasks = crate::tasks::distill::measured(cx.selected, data.labelled());
    let report = super::int8::report(
        &files,
        path,
        &outcome.model.graph,
        (items, split.as_str()),
        &tasks,
        job.data.batch,
    )?;
    Ok(Some((files, report)))
}

/// The report's record of the settings the run used.
fn settings(
    job: &PruneJob,
    full: &Model,
    names: &[String],
    cfg: &PruneConfig,
    lambdas: std::collections::BTreeMap<String, f64>,
    device: tch::Device,
    dtype: DType,
) -> Result<Settings> {
    let criterion = cfg.resolved.criterion;
    let dropped: Vec<String> = full
        .task_names()
        .into_iter()
        .filter(|t| !names.iter().any(|n| n == t))
        .map(String::from)
        .collect();
    Ok(Settings {
        input_tasks: full.task_names().into_iter().map(String::from).collect(),
        tasks: names.to_vec(),
        dropped_tasks: dropped,
        criterion: criterion.name().into(),
        granularity: cfg.request.granularity.name().into(),
        fusion: cfg.options.fusion.name().into(),
        votes_needed: cfg.options.fusion.needed_votes(names.len(), cfg.options.min_votes)?,
        calib_batches: if criterion.needs_data() { cfg.calib_batches } else { 0 },
        batch: job.data.batch,
        scoring: match cfg.options.strategy {
            _ if criterion == Criterion::Taylor => {
                "one forward per batch, one backward per selected task to the producers' outputs, inference mode, f32"
                    .into()
            }
            Strategy::Shared => format!(
                "one forward per batch, one backward per selected task, inference mode, {}",
                cfg.options.precision.name()
            ),
            Strategy::PerTask => format!(
                "one forward and backward per task per batch, inference mode, {}",
                cfg.options.precision.name()
            ),
        },
        finetune: cfg.finetune.schedule.clone(),
        lambdas,
        val_fraction: job.data.val_fraction,
        eval_split: job.options.eval_split.as_str().into(),
        dtype: dtype.to_string(),
        layout: if job.request.packed {
            "packed".into()
        } else {
            "dense".into()
        },
        device: crate::device::describe(device),
        distilled: Vec::new(),
    })
}

/// Batch-1 latency of the input (all heads, selected heads) and of the output, on `device`.
fn compare_latency(
    full: &Model,
    params: &Params,
    selected: &[String],
    pruned: &Model,
    pruned_params: &Params,
    device: tch::Device,
) -> Result<Latency> {
    let cfg = BenchConfig {
        device,
        batch: 1,
        input: BenchInput::of_graph(&full.graph)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(granularity: Granularity) -> PruneRequest {
        crate::prune::policy::request_for_tests(granularity)
    }

    /// The default output names say granularity and budget, so the README's weight, channel and
    /// packed runs do not collide (the old `<tasks>.pruned` name did).
    #[test]
    fn default_outputs_name_the_settings() {
        let input = Path::new("dir/demo.safetensors");
        let tasks = ["seg".to_string(), "depth".to_string()];
        let name = |r: &PruneRequest, dtype: Option<DType>| {
            let resolved = r.resolve(true).unwrap();
            default_output(input, &tasks, r, &resolved, dtype).display().to_string()
        };
        let weight = request(Granularity::Weight);
        assert_eq!(name(&weight, None), "dir/demo.seg+depth.weight90.safetensors");
        let packed = PruneRequest {
            packed: true,
            sparsity: Some(0.75),
            ..weight.clone()
        };
        assert_eq!(
            name(&packed, Some(DType::F16)),
            "dir/demo.seg+depth.weight75.packed.f16.safetensors"
        );
        let channel = request(Granularity::Channel);
        assert_eq!(name(&channel, None), "dir/demo.seg+depth.channel50.safetensors");
        let macs = PruneRequest {
            target_macs: Some(2_500_000_000),
            ..channel.clone()
        };
        assert_eq!(name(&macs, None), "dir/demo.seg+depth.channel-2.5Gmacs.safetensors");
        let params = PruneRequest {
            target_params: Some(98_000_000),
            ..channel
        };
        assert_eq!(name(&params, None), "dir/demo.seg+depth.channel-98Mparams.safetensors");
    }
}
