//! `cut split` as one call: [`SplitJob`] in, [`SplitDone`] out.

use crate::bench::Timing;
use crate::checkpoint::metadata::Provenance;
use crate::checkpoint::{sha256_file, writer, Checkpoint, DType, LoadOptions};
use crate::data::example::{Samples, Subset};
use crate::data::loader::Loader;
use crate::data::{Dataset, Split};
use crate::eval::evaluate;
use crate::fsio::sibling;
use crate::fsio::{check_output, Outputs};
use crate::graph::interpreter::forward_inputs;
use crate::graph::ops::{Mode, ScaleGranularity, WireFormat};
use crate::graph::passes::fuse_conv_relu;
use crate::graph::{shapes, Model, Params, TaskSpec};
use crate::metrics::TaskMetrics;
use crate::report::split::{mark_front, markdown, Baselines, Row, SplitReport, TaskChange};
use crate::split::{cut_after, cuts, joined, payload, separate, wire_of, Compression, Cut, Parts};
use crate::train::{task_lambdas, train, Schedule, TrainConfig};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The uplink profiles of the split-computing literature (BottleNet): 3G, 4G, Wi-Fi, Mbit/s.
pub const BANDWIDTH_PRESETS: [f64; 3] = [1.1, 5.85, 18.88];

/// Everything `cut split` was asked.
#[derive(Clone, Debug)]
pub struct SplitJob {
    pub model: PathBuf,
    pub load: LoadOptions,
    pub tasks: Vec<String>,
    /// The node to cut after; `None` sweeps every valid cut.
    pub at: Option<String>,
    /// Pooling factors to try (1: none).
    pub pools: Vec<usize>,
    pub wires: Vec<WireFormat>,
    pub scale: ScaleGranularity,
    /// The dataset (required) and its batching.
    pub data: crate::data::DataSettings,
    /// Fine-tuning of each compressed split (the cloud part, and with `finetune_device` the
    /// device part too).
    pub finetune: Schedule,
    /// Fine-tune the device part too (gradients pass straight through the wire's rounding).
    pub finetune_device: bool,
    /// Recover every task by distillation from the unsplit model, labels or not (tasks the data
    /// has no labels for are distilled anyway).
    pub distill: bool,
    /// Uplink bandwidths in Mbit/s.
    pub bandwidths: Vec<f64>,
    pub rtt_ms: f64,
    /// How much faster the cloud runs its part than this machine (its latency is divided by it).
    pub cloud_speedup: f64,
    /// Timed runs per latency (after 3 warm-up runs).
    pub runs: usize,
    /// A task may lose at most this many points for a split to be chosen for writing.
    pub max_drop: f64,
    /// Output prefix: writes `<out>.device.safetensors`, `<out>.cloud.safetensors`, and the reports.
    pub out: PathBuf,
    pub force: bool,
    pub command: String,
}

/// What a finished split wrote.
pub struct SplitDone {
    pub report: SplitReport,
    pub device: PathBuf,
    pub cloud: PathBuf,
    pub report_json: PathBuf,
    pub report_md: PathBuf,
}

impl SplitJob {
    pub fn validate(&self) -> Result<()> {
        if let Some(b) = self.bandwidths.iter().find(|b| !(b.is_finite() && **b > 0.0)) {
            crate::usage_bail!("--rate {b}: a data rate must be above 0 Mbit/s");
        }
        if self.bandwidths.is_empty() {
            crate::usage_bail!("--rate: give at least one data rate");
        }
        if let Some(p) = self.pools.iter().find(|p| !matches!(p, 1 | 2 | 4)) {
            crate::usage_bail!("--pool {p}: expected 1 (none), 2 or 4");
        }
        if !(self.rtt_ms.is_finite() && self.rtt_ms >= 0.0) {
            crate::usage_bail!("--rtt {}: a round-trip time is 0 ms or more", self.rtt_ms);
        }
        if !(self.cloud_speedup.is_finite() && self.cloud_speedup > 0.0) {
            crate::usage_bail!("--cloud-speedup {}: must be above 0", self.cloud_speedup);
        }
        if self.runs == 0 {
            crate::usage_bail!("--runs must be at least 1");
        }
        if self.data.batch == 0 {
            crate::usage_bail!("--batch must be at least 1");
        }
        if self.data.folder.is_none() {
            crate::usage_bail!("--data DIR is required to split (test metrics, fine-tuning, payload probes)");
        }
        if !(self.max_drop.is_finite() && self.max_drop >= 0.0) {
            crate::usage_bail!(
                "--max-drop {}: the points a task may lose must be a finite number >= 0",
                self.max_drop
            );
        }
        Ok(())
    }
}

/// The prefix the outputs are named from: `-o DIR/` (or an existing folder) means inside it, named
/// after the model (`DIR/demo.device.safetensors`, also for `demo.onnx`); anything else is the
/// prefix itself.
pub fn output_prefix(out: &Path, model: &Path) -> PathBuf {
    if !(out.as_os_str().to_string_lossy().ends_with('/') || out.is_dir()) {
        return out.to_path_buf();
    }
    let name = model
        .file_name()
        .map_or("split".to_string(), |n| n.to_string_lossy().to_string());
    let stem = [".safetensors", ".onnx"].iter().find_map(|e| name.strip_suffix(e));
    out.join(stem.unwrap_or(&name))
}

/// One model's inference forward on fixed inputs, for [`crate::bench::interleaved`].
fn forward_of<'a>(
    model: &'a Model,
    params: &'a Params,
    inputs: &'a BTreeMap<String, Tensor>,
) -> impl FnMut() -> Result<()> + 'a {
    let names = model.task_names();
    let (graph, _) = fuse_conv_relu(&model.graph, &names);
    move || {
        let _guard = tch::no_grad_guard();
        forward_inputs(&graph, params, inputs, &names, Mode::Eval).map(drop)
    }
}

/// The whole model, the device part and the cloud part timed interleaved in one loop (3 warm-up
/// rounds, then `runs`), so that all three see the same machine.
fn time_parts(
    whole: (&Model, &Params, &BTreeMap<String, Tensor>),
    device: (&Model, &Params, &BTreeMap<String, Tensor>),
    cloud: (&Model, &Params, &BTreeMap<String, Tensor>),
    runs: usize,
) -> Result<[Timing; 3]> {
    let mut w = forward_of(whole.0, whole.1, whole.2);
    let mut d = forward_of(device.0, device.1, device.2);
    let mut c = forward_of(cloud.0, cloud.1, cloud.2);
    let t = crate::bench::interleaved(&mut [&mut w, &mut d, &mut c], 3, runs)?;
    Ok([t[0], t[1], t[2]])
}

/// Per probe, the median over rows of one latency column.
fn median_per_probe(rows: &[Row], column: impl Fn(&Row) -> &Vec<f64>) -> Vec<f64> {
    let probes = rows.first().map_or(0, |r| column(r).len());
    (0..probes)
        .map(|p| {
            let mut v: Vec<f64> = rows.iter().map(|r| column(r)[p]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect()
}

/// Example `i` alone as a batch of 1 with the inputs `model` reads; a text cut to its `tokens`
/// real tokens (what a device sends at batch 1).
fn single(items: &Samples, i: usize, model: &Model, tokens: Option<usize>) -> Result<BTreeMap<String, Tensor>> {
    let one: Samples = std::sync::Arc::new(Subset {
        source: items.clone(),
        indices: vec![i],
    });
    let Some(batch) = Loader::sequential(one, 1, Device::Cpu).next() else {
        bail!("{}: cannot load", items.describe(i));
    };
    let inputs = batch?.graph_inputs(&model.graph)?;
    Ok(match tokens {
        Some(n) => inputs.into_iter().map(|(k, t)| (k, t.narrow(1, 0, n as i64))).collect(),
        None => inputs,
    })
}

/// The samples whose payloads the report measures: images, one (every image has the same size);
/// text, the one nearest the mean token count and the longest, with their counts.
struct Probes {
    /// (label, example index, token count).
    samples: Vec<(String, usize, Option<usize>)>,
    /// Cloud-only bytes per probe.
    raw_bytes: Vec<usize>,
    raw_what: String,
}

fn probes(model: &Model, test: &Samples) -> Result<Probes> {
    use crate::graph::InputRole;
    if model.graph.input_named_by(InputRole::TokenIds).is_none() {
        // Image: PNG size of every test image, mean and largest.
        let mut sizes = Vec::new();
        let norm = crate::data::image_normalisation(&model.graph);
        for batch in Loader::sequential(test.clone(), 1, Device::Cpu) {
            let inputs = batch?.graph_inputs(&model.graph)?;
            let image = inputs
                .values()
                .find(|t| t.dim() == 4)
                .ok_or_else(|| anyhow::anyhow!("{}: no image input", test.describe(sizes.len())))?;
            sizes.push(payload::image_png(image, &norm)?.len());
        }
        let mean = sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64;
        return Ok(Probes {
            samples: vec![("per image".into(), 0, None)],
            raw_bytes: vec![mean.round() as usize],
            raw_what: format!(
                "the input image as an 8-bit RGB PNG (mean of {} test images; largest {} bytes)",
                sizes.len(),
                sizes.iter().max().copied().unwrap_or(0)
            ),
        });
    }
    let mask = model
        .graph
        .input_named_by(InputRole::AttentionMask)
        .ok_or_else(|| anyhow::anyhow!("the model reads token ids but no attention mask to count tokens in"))?;
    let counts = crate::data::token_counts(test, mask)?;
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    let nearest = (0..counts.len())
        .min_by(|&a, &b| ((counts[a] as f64 - mean).abs()).total_cmp(&(counts[b] as f64 - mean).abs()))
        .unwrap_or(0);
    let longest = (0..counts.len())
        .max_by_key(|&i| (counts[i], usize::MAX - i))
        .unwrap_or(0);
    let vocab = model
        .graph
        .param_specs()
        .iter()
        .find(|s| s.role == crate::graph::ParamRole::Embedding)
        .map(|s| s.shape[0])
        .unwrap_or(usize::MAX);
    Ok(Probes {
        samples: vec![
            (
                format!("mean length ({} tokens)", counts[nearest]),
                nearest,
                Some(counts[nearest]),
            ),
            (
                format!("longest ({} tokens)", counts[longest]),
                longest,
                Some(counts[longest]),
            ),
        ],
        raw_bytes: vec![
            payload::token_id_bytes(counts[nearest], vocab),
            payload::token_id_bytes(counts[longest], vocab),
        ],
        raw_what: format!(
            "the token ids ({} bytes each; the data's mean is {mean:.1} tokens)",
            payload::token_id_bytes(1, vocab)
        ),
    })
}

/// Points a task gains (positive) or loses, on its first metric that compares: 100 x the
/// difference for a score in [0, 1] where higher is better; the relative change in percent for an
/// error (which does not compare against an error of 0, such as a fidelity's at its reference).
pub fn points(after: &TaskMetrics, before: &TaskMetrics) -> Option<(String, f64)> {
    after.metrics.iter().find_map(|m| {
        let (a, b) = (m.value?, before.get(&m.name)?);
        let p = if m.higher_is_better {
            100.0 * (a - b)
        } else if b != 0.0 {
            100.0 * (b - a) / b.abs()
        } else {
            return None;
        };
        Some((m.name.clone(), p))
    })
}

fn changes(after: &[TaskMetrics], reference: &[TaskMetrics]) -> Vec<TaskChange> {
    after
        .iter()
        .filter_map(|t| {
            let r = reference.iter().find(|r| r.task == t.task)?;
            let (metric, p) = points(t, r)?;
            Some(TaskChange {
                task: t.task.clone(),
                metric: metric.clone(),
                value: t.get(&metric)?,
                reference: r.get(&metric)?,
                points: p,
            })
        })
        .collect()
}

/// The four files a split writes.
struct OutputPaths {
    device: PathBuf,
    cloud: PathBuf,
    report_json: PathBuf,
    report_md: PathBuf,
}

/// The outputs' paths from `-o`, each checked before any work.
fn output_paths(job: &SplitJob) -> Result<OutputPaths> {
    let prefix = output_prefix(&job.out, &job.model);
    let paths = OutputPaths {
        device: sibling(&prefix, ".device.safetensors"),
        cloud: sibling(&prefix, ".cloud.safetensors"),
        report_json: sibling(&prefix, ".report.json"),
        report_md: sibling(&prefix, ".report.md"),
    };
    for p in [&paths.device, &paths.cloud, &paths.report_json, &paths.report_md] {
        check_output(p, &[&job.model], job.force)?;
    }
    Ok(paths)
}

/// Every pooling with every wire format asked for (scales exist for int8 only).
fn compressions(job: &SplitJob) -> Vec<Compression> {
    let mut out = Vec::new();
    for &pool in &job.pools {
        for &wire in &job.wires {
            let scale = if wire == WireFormat::Int8 {
                job.scale
            } else {
                ScaleGranularity::Tensor
            };
            out.push(Compression { pool, wire, scale });
        }
    }
    out
}

/// The cut asked for, or every cut. With --at, a compression that cannot apply there (pooling a
/// flat tensor, a map that does not divide) is an error before any long work; sweeping, it is
/// skipped and reported later.
fn candidates(job: &SplitJob, model: &Model, compressions: &[Compression]) -> Result<Vec<Cut>> {
    let candidates: Vec<Cut> = match &job.at {
        Some(node) => vec![cut_after(model, node)?],
        None => cuts(model)?,
    };
    if candidates.is_empty() {
        bail!(
            "{}: no node boundary where a single tensor crosses",
            job.model.display()
        );
    }
    if job.at.is_some() {
        for cut in &candidates {
            for c in compressions {
                joined(model, cut, c)?;
            }
        }
    }
    Ok(candidates)
}

/// What every row is measured against, loaded once: the unsplit model with the selected heads,
/// its data, its test metrics and the probes payloads and latencies are measured on.
struct Bench<'a> {
    job: &'a SplitJob,
    model: &'a Model,
    params: &'a Params,
    /// The selected tasks as fine-tuning trains them and as the rows measure them (a distilled
    /// task by its labels where the data has them).
    selected: &'a [TaskSpec],
    measured: &'a [TaskSpec],
    data: &'a Dataset,
    test: Samples,
    probes: Probes,
    probe_inputs: Vec<BTreeMap<String, Tensor>>,
    finetune: TrainConfig,
    /// The unsplit model's test metrics, the rows' reference.
    reference: Vec<TaskMetrics>,
    /// The input's storage dtype, which the device part's file size is counted in.
    dtype: DType,
}

impl Bench<'_> {
    fn eval(&self, m: &Model, p: &Params) -> Result<Vec<TaskMetrics>> {
        Ok(evaluate(
            m,
            p,
            self.test.clone(),
            self.measured,
            self.job.data.batch,
            Device::Cpu,
            |_| {},
        )?
        .0)
    }

    /// Fine-tunes the joined graph's cloud part (and device part with --finetune-device) with the
    /// compression in place: the tuned parameters, the best step and the seconds it took.
    fn finetune(
        &self,
        split: &Model,
        phase: &str,
        progress: &mut dyn FnMut(&str, usize, usize),
    ) -> Result<(Params, usize, f64)> {
        let t = Instant::now();
        let parts = separate(split, self.params)?;
        let mut only: Vec<String> = parts.cloud_params.keys().cloned().collect();
        if self.job.finetune_device {
            only.extend(parts.device_params.keys().cloned());
        }
        let cfg = TrainConfig {
            only: Some(only),
            ..self.finetune.clone()
        };
        let steps = self.job.finetune.steps;
        let outcome = train(
            split,
            self.params,
            self.selected,
            self.data.split(Split::Train, self.job.data.val_fraction)?,
            self.data.split(Split::Val, self.job.data.val_fraction)?,
            None,
            &cfg,
            |s, _| progress(phase, s, steps),
        )?;
        Ok((outcome.params, outcome.best_step, t.elapsed().as_secs_f64()))
    }

    /// Per probe: the serialised payload's bytes, and the whole model, the device part and the
    /// cloud part (on what it receives) timed interleaved.
    fn probe(&self, split: &Model, parts: &Parts) -> Result<(Vec<usize>, Vec<[Timing; 3]>)> {
        let wire = wire_of(split).expect("joined graphs have a wire");
        let mut bytes = Vec::new();
        let mut timings = Vec::new();
        for ((_, _, tokens), inputs) in self.probes.samples.iter().zip(&self.probe_inputs) {
            let features = {
                let _guard = tch::no_grad_guard();
                let out = forward_inputs(
                    &parts.device.graph,
                    &parts.device_params,
                    inputs,
                    &[crate::split::FEATURES],
                    Mode::Eval,
                )?;
                out[crate::split::FEATURES].to_kind(Kind::Float)
            };
            let sent = payload::encode(&features, wire.format, wire.scale, *tokens)?;
            let (received, _) = payload::decode(&sent, &features.size(), wire.format, wire.scale, tokens.is_some())?;
            bytes.push(sent.len());
            let mut cloud_inputs = BTreeMap::from([(crate::split::FEATURES.to_string(), received)]);
            for d in parts.cloud.graph.inputs.iter().skip(1) {
                // The mask the cloud rebuilds from the token count: all ones at batch 1.
                cloud_inputs.insert(
                    d.name.clone(),
                    Tensor::ones([1, tokens.unwrap_or(0) as i64], (Kind::Int64, Device::Cpu)),
                );
            }
            timings.push(time_parts(
                (self.model, self.params, inputs),
                (&parts.device, &parts.device_params, &parts.device_inputs(inputs)?),
                (&parts.cloud, &parts.cloud_params, &cloud_inputs),
                self.job.runs,
            )?);
        }
        Ok((bytes, timings))
    }

    /// The device part's MACs (at the first probe: a text's length, an image's size), parameters
    /// and file bytes in `dtype`.
    fn device_costs(&self, parts: &Parts, dtype: DType) -> Result<(u64, u64, u64)> {
        let mut sizes = parts.device.graph.sizes.clone();
        if let Some(n) = self.probes.samples[0].2 {
            sizes.insert("seq".into(), n);
        }
        let shapes = shapes::infer_sizes(&parts.device.graph, &sizes)?;
        let macs: u64 = shapes::macs(&parts.device.graph, &shapes).values().sum();
        let params: u64 = parts.device_params.values().map(|t| t.numel() as u64).sum();
        let bytes = writer::model_bytes(&parts.device, &parts.device_params, dtype, false, None)?.len() as u64;
        Ok((macs, params, bytes))
    }

    /// One row: the split at `cut` with compression `c`, evaluated before and after fine-tuning
    /// (the uncompressed split only when asked for by name), with its payloads and latencies.
    fn row(
        &self,
        cut: &Cut,
        split: &Model,
        c: &Compression,
        tune: bool,
        progress: &mut dyn FnMut(&str, usize, usize),
    ) -> Result<(Row, Params)> {
        let before = self.eval(split, self.params)?;
        let (tuned, best_step, finetune_s) = if self.job.finetune.steps > 0 && tune {
            let (p, best, secs) =
                self.finetune(split, &format!("fine-tune {} ({})", cut.after, c.label()), progress)?;
            (p, Some(best), secs)
        } else {
            let same = self
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.shallow_clone()))
                .collect();
            (same, None, 0.0)
        };
        let after = if best_step.is_some() {
            self.eval(split, &tuned)?
        } else {
            before.clone()
        };
        let parts = separate(split, &tuned)?;
        let (bytes_sent, timings) = self.probe(split, &parts)?;
        let column = |k: usize, scale: f64| -> (Vec<f64>, Vec<f64>) {
            timings
                .iter()
                .map(|t| (t[k].median_ms / scale, t[k].spread_ms / scale))
                .unzip()
        };
        let (whole_ms, whole_spread_ms) = column(0, 1.0);
        let (device_ms, device_spread_ms) = column(1, 1.0);
        let (cloud_ms, cloud_spread_ms) = column(2, self.job.cloud_speedup);
        let (device_macs, device_params, device_file_bytes) = self.device_costs(&parts, self.dtype)?;
        let row = Row {
            cut: cut.after.clone(),
            tensor: cut.tensor.clone(),
            shape: cut.shape.clone(),
            compression: c.label(),
            pool: c.pool,
            wire: c.wire.as_str().into(),
            device_macs,
            device_params,
            device_file_bytes,
            bytes_sent,
            device_ms,
            device_spread_ms,
            cloud_ms,
            cloud_spread_ms,
            whole_ms,
            whole_spread_ms,
            before: changes(&before, &self.reference),
            after: changes(&after, &self.reference),
            metrics_before: before,
            metrics_after: after,
            finetune_best_step: best_step,
            finetune_s,
            pareto: false,
            beats_cloud_only_below_mbit: Vec::new(),
            total_ms: Vec::new(),
        };
        Ok((row, tuned))
    }
}

/// The fine-tuning every compressed split gets (the cloud part's parameters are chosen per row).
fn finetune_config(job: &SplitJob, selected: &[TaskSpec]) -> Result<TrainConfig> {
    Ok(TrainConfig {
        schedule: job.finetune.clone(),
        batch: job.data.batch,
        lambdas: task_lambdas(selected, None)?,
        device: Device::Cpu,
        only: None,
        // Distillation's targets come from inference mode (see `TrainConfig::inference_mode`).
        inference_mode: selected.iter().all(|t| t.distill),
    })
}

/// Runs the split. `progress(phase, done, total)` reports the long phases; nothing is written
/// unless every output is complete.
pub fn run(
    job: &SplitJob,
    warn: &mut dyn FnMut(&str),
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<SplitDone> {
    job.validate()?;
    let ckpt = Checkpoint::open_with(&job.model, &job.load)?;
    let loaded = ckpt.model(&job.load)?;
    for w in &loaded.warnings {
        warn(w);
    }
    let full = loaded.model;
    let selected = full.select_tasks(&job.tasks)?;
    let names: Vec<&str> = selected.iter().map(|t| t.name.as_str()).collect();
    let model = full.keep_tasks(&names);
    let paths = output_paths(job)?;
    let compressions = compressions(job);
    let candidates = candidates(job, &model, &compressions)?;
    let data = job
        .data
        .require(&full, "to split (test metrics, fine-tuning, payload probes)", warn)?;
    let params = ckpt.load_params(&model, Device::Cpu)?;
    let selected = crate::tasks::distill::mark(&selected, job.distill, data.labelled());
    let data = crate::data::teacher::for_tasks(&data, &model, &params, &selected, Device::Cpu);
    let input_sha = sha256_file(&ckpt.path)?;
    let test = data.split(Split::Test, job.data.val_fraction)?;
    let probes = probes(&model, &test)?;
    let probe_inputs = probes
        .samples
        .iter()
        .map(|(_, i, tokens)| single(&test, *i, &model, *tokens))
        .collect::<Result<_>>()?;
    let mut bench = Bench {
        job,
        model: &model,
        params: &params,
        selected: &selected,
        measured: &crate::tasks::distill::measured(&selected, data.labelled()),
        data: &data,
        test,
        probes,
        probe_inputs,
        finetune: finetune_config(job, &selected)?,
        reference: Vec::new(),
        dtype: ckpt.float_dtype(),
    };
    bench.reference = bench.eval(&model, &params)?;
    let (rows, kept, skipped) = sweep(&bench, &candidates, &compressions, progress)?;
    let mut report = split_report(job, &bench, rows, skipped, input_sha.clone(), &paths, &names);
    if report.rows.is_empty() {
        bail!("no cut could take the compression asked: {}", report.skipped.join("; "));
    }
    mark_front(&mut report);
    if job.at.is_some() && compressions.len() == 1 {
        // One cut and one compression asked: that is what gets written.
        report.chosen = report.rows.len() - 1;
    }
    let (split, tuned) = &kept[report.chosen];
    write_outputs(job, &report, &separate(split, tuned)?, bench.dtype, input_sha, &paths)?;
    Ok(SplitDone {
        report,
        device: paths.device,
        cloud: paths.cloud,
        report_json: paths.report_json,
        report_md: paths.report_md,
    })
}

/// Every cut with the uncompressed split first (the unsplit model: a baseline row, fine-tuned only
/// when asked for by name, --pool 1 --wire f32) and each compression asked: the rows, the joined
/// graphs with their tuned parameters, and what could not apply.
#[allow(clippy::type_complexity)]
fn sweep(
    bench: &Bench,
    candidates: &[Cut],
    compressions: &[Compression],
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<(Vec<Row>, Vec<(Model, Params)>, Vec<String>)> {
    let (mut rows, mut kept, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    let total = candidates.len() * (compressions.len() + 1);
    let tune_uncompressed = compressions.contains(&Compression::NONE);
    let mut variants = vec![Compression::NONE];
    variants.extend(compressions.iter().copied().filter(|c| *c != Compression::NONE));
    for cut in candidates {
        for c in &variants {
            let split = match joined(bench.model, cut, c) {
                Ok(s) => s,
                Err(e) => {
                    skipped.push(format!("{}: {e:#}", c.label()));
                    continue;
                }
            };
            let tune = *c != Compression::NONE || tune_uncompressed;
            let (row, tuned) = bench.row(cut, &split, c, tune, progress)?;
            rows.push(row);
            kept.push((split, tuned));
            progress("splits", rows.len(), total);
        }
    }
    Ok((rows, kept, skipped))
}

/// The report before the front is marked: baselines from the rows' interleaved loops.
fn split_report(
    job: &SplitJob,
    bench: &Bench,
    rows: Vec<Row>,
    skipped: Vec<String>,
    model_sha256: String,
    paths: &OutputPaths,
    names: &[&str],
) -> SplitReport {
    // The whole model was timed beside every split's parts: its median over those loops.
    let whole_ms = median_per_probe(&rows, |r| &r.whole_ms);
    let baselines = Baselines {
        device_only_ms: whole_ms.clone(),
        device_only_spread_ms: median_per_probe(&rows, |r| &r.whole_spread_ms),
        cloud_only_bytes: bench.probes.raw_bytes.clone(),
        cloud_only_what: bench.probes.raw_what.clone(),
        cloud_only_ms: whole_ms.iter().map(|m| m / job.cloud_speedup).collect(),
        probes: bench.probes.samples.iter().map(|(l, _, _)| l.clone()).collect(),
    };
    SplitReport {
        model: job.model.display().to_string(),
        model_sha256,
        tasks: names.iter().map(|s| s.to_string()).collect(),
        reference: bench.reference.clone(),
        bandwidths_mbit: job.bandwidths.clone(),
        rtt_ms: job.rtt_ms,
        cloud_speedup: job.cloud_speedup,
        finetune: job.finetune.clone(),
        finetune_device: job.finetune_device,
        max_drop: job.max_drop,
        latency_machine: crate::device::describe(Device::Cpu),
        baselines,
        rows,
        skipped,
        chosen: 0,
        command: job.command.clone(),
        device_out: paths.device.display().to_string(),
        cloud_out: paths.cloud.display().to_string(),
    }
}

/// The chosen row's two checkpoints and both reports, renamed into place together.
fn write_outputs(
    job: &SplitJob,
    report: &SplitReport,
    parts: &Parts,
    dtype: DType,
    input_sha: String,
    paths: &OutputPaths,
) -> Result<()> {
    let provenance = Provenance::new(job.command.clone(), Some(input_sha));
    let mut outputs = Outputs::new(job.force);
    outputs.stage(
        &paths.device,
        &writer::model_bytes(&parts.device, &parts.device_params, dtype, false, Some(&provenance))?,
    )?;
    outputs.stage(
        &paths.cloud,
        &writer::model_bytes(&parts.cloud, &parts.cloud_params, dtype, false, Some(&provenance))?,
    )?;
    outputs.stage(&paths.report_json, serde_json::to_string_pretty(report)?.as_bytes())?;
    outputs.stage(&paths.report_md, markdown(report).as_bytes())?;
    outputs.commit()
}
