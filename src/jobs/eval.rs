//! `cut eval` as one call: [`EvalJob`] in, an [`EvalReport`] out.

use crate::checkpoint::{Checkpoint, LoadOptions};
use crate::data::example::{Samples, Subset};
use crate::data::Split;
use crate::device::DeviceChoice;
use crate::eval::{evaluate, read_baseline, ConstantPredictor, EvalReport};
use crate::metrics::delta_m;
use anyhow::Result;
use std::path::PathBuf;

/// Everything `cut eval` was asked.
#[derive(Clone, Debug)]
pub struct EvalJob {
    pub model: PathBuf,
    pub load: LoadOptions,
    /// The dataset (required except by prune) and its batching.
    pub data: crate::data::DataSettings,
    pub split: Split,
    /// The tasks to score (all when `None`).
    pub tasks: Option<Vec<String>>,
    /// Only the first N samples of the split.
    pub limit: Option<usize>,
    pub device: DeviceChoice,
    /// An earlier `cut eval` or `cut prune` report to compute delta_m against.
    pub baseline: Option<PathBuf>,
    /// Score the best constant predictor fitted on the train split instead of the model.
    pub constant: bool,
    /// A model (the original, before pruning) whose outputs the model's are compared with.
    pub reference: Option<PathBuf>,
    /// Run the model in ONNX Runtime (CPU) instead of `cut`'s interpreter: an .onnx file as it
    /// is, any other model as its ONNX export.
    pub onnx_runtime: bool,
    /// With `onnx_runtime`, a model that is not an .onnx file runs as its int8 export, calibrated
    /// on the data's training split.
    pub int8: Option<crate::onnx::quantize::Int8Options>,
}

/// The first `limit` samples of `items` (all when `None`).
fn limited(items: Samples, limit: Option<usize>) -> Result<Samples> {
    let Some(n) = limit else { return Ok(items) };
    if n == 0 {
        crate::usage_bail!("--limit must be positive");
    }
    let n = n.min(items.count());
    Ok(std::sync::Arc::new(Subset {
        source: items,
        indices: (0..n).collect(),
    }))
}

/// Flags that exclude each other, refused before anything is read.
fn check_flags(job: &EvalJob) -> Result<()> {
    if job.onnx_runtime && (job.constant || job.reference.is_some()) {
        crate::usage_bail!("--runtime onnxruntime runs the model alone (not with --constant or --reference)");
    }
    if job.constant && job.reference.is_some() {
        crate::usage_bail!("--reference compares two models' outputs; the constant predictor has none");
    }
    if job.int8.is_some() && !job.onnx_runtime {
        crate::usage_bail!("--int8 evaluates the int8 export in ONNX Runtime: add --runtime onnxruntime");
    }
    Ok(())
}

/// Scores the model (or the constant predictor) on the split. `warn` gets each warning as soon
/// as it is known; `progress(done, total)` counts the samples evaluated.
pub fn run(job: &EvalJob, warn: &mut dyn FnMut(&str), progress: &mut dyn FnMut(usize, usize)) -> Result<EvalReport> {
    let started = std::time::Instant::now();
    check_flags(job)?;
    let ckpt = Checkpoint::open_with(&job.model, &job.load)?;
    let loaded = ckpt.model(&job.load)?;
    for w in &loaded.warnings {
        warn(w);
    }
    let model = loaded.model;
    let tasks = match &job.tasks {
        Some(t) => model.select_tasks(t)?,
        None => model.tasks.clone(),
    };
    let data = job.data.require(&model, "to evaluate", warn)?;
    let items = limited(data.split(job.split, job.data.val_fraction)?, job.limit)?;
    let device = crate::device::resolve(job.device)?;
    let total = items.count();
    if !data.labelled() && job.reference.is_none() {
        crate::usage_bail!(
            "{} has no labels: give --reference ORIGINAL to measure how closely the model follows it",
            data.root.display()
        );
    }
    let (metrics, images, fidelity) = if job.onnx_runtime {
        let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
        let bytes = onnx_bytes(job, &ckpt, &model.keep_tasks(&names), &data)?;
        let (metrics, images) = in_onnx_runtime(&bytes, job, &model.graph, items, &tasks, &mut |done| {
            progress(done, total)
        })?;
        (metrics, images, None)
    } else if job.constant {
        let predictor = ConstantPredictor::fit(data.split(Split::Train, job.data.val_fraction)?, &tasks)?;
        let (metrics, images) = predictor.evaluate(items, &tasks)?;
        (metrics, images, None)
    } else {
        let params = ckpt.load_params(&model, device)?;
        match &job.reference {
            Some(path) => {
                let compared = against_reference(path, job, (&model, &params), items, &tasks, device)?;
                (compared.metrics, compared.images, Some(compared.fidelity))
            }
            None => {
                let (metrics, images) = evaluate(&model, &params, items, &tasks, job.data.batch, device, |done| {
                    progress(done, total)
                })?;
                (metrics, images, None)
            }
        }
    };
    for t in &metrics {
        for w in &t.warnings {
            warn(&format!("task '{}': {w}", t.task));
        }
    }
    let delta = match &job.baseline {
        Some(path) => Some(delta_m(&metrics, &read_baseline(path)?)?),
        None => None,
    };
    Ok(EvalReport {
        model: if job.constant {
            format!("constant predictor for {}", job.model.display())
        } else {
            job.model.display().to_string()
        },
        data: data.root.display().to_string(),
        split: job.split.as_str().into(),
        images,
        device: crate::device::describe(device),
        seconds: started.elapsed().as_secs_f64(),
        miou_convention: crate::eval::convention(),
        tasks: metrics,
        baseline: job.baseline.as_ref().map(|p| p.display().to_string()),
        delta_m: delta,
        reference: job.reference.as_ref().map(|p| p.display().to_string()),
        fidelity,
    })
}

/// What ONNX Runtime runs: an .onnx file as it is, another model's ONNX export (f32, or int8
/// with `job.int8`).
fn onnx_bytes(
    job: &EvalJob,
    ckpt: &Checkpoint,
    model: &crate::graph::Model,
    data: &crate::data::Dataset,
) -> Result<Vec<u8>> {
    let is_onnx = job.model.extension().and_then(|e| e.to_str()) == Some("onnx");
    if is_onnx {
        if job.int8.is_some() {
            crate::usage_bail!(
                "--int8 quantizes a model's export; {} is an ONNX file already",
                job.model.display()
            );
        }
        return std::fs::read(&job.model).map_err(|e| anyhow::anyhow!("{}: cannot read ({e})", job.model.display()));
    }
    let params = ckpt.load_params(model, tch::Device::Cpu)?;
    let export = crate::onnx::ExportOptions::default();
    Ok(match &job.int8 {
        Some(opts) => super::int8::int8_files(model, &params, &export, data, &job.data, opts)?.int8,
        None => super::int8::f32_onnx(model, &params, &export)?,
    })
}

/// `bytes` run in ONNX Runtime on `items` (its inputs named as `graph`'s).
fn in_onnx_runtime(
    bytes: &[u8],
    job: &EvalJob,
    graph: &crate::graph::Graph,
    items: Samples,
    tasks: &[crate::graph::TaskSpec],
    progress: &mut dyn FnMut(usize),
) -> Result<(Vec<crate::metrics::TaskMetrics>, usize)> {
    let mut ort = crate::onnx::runtime::OrtModel::from_bytes(bytes, 0, &job.model.display().to_string())?;
    let mut run = |b: &crate::data::loader::Batch| ort.run(&b.graph_inputs(graph)?);
    crate::eval::evaluate_run(&mut run, items, tasks, job.data.batch, tch::Device::Cpu, progress)
}

/// The model scored beside the reference model (`--reference`), which must have every task
/// scored, with the same output shapes.
fn against_reference(
    path: &std::path::Path,
    job: &EvalJob,
    model: (&crate::graph::Model, &crate::graph::interpreter::Params),
    items: Samples,
    tasks: &[crate::graph::TaskSpec],
    device: tch::Device,
) -> Result<crate::eval::Compared> {
    let reference_ckpt = Checkpoint::open_with(path, &job.load)?;
    let reference = reference_ckpt.model(&job.load)?.model;
    let names: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
    reference
        .select_tasks(&names)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let reference = reference.keep_tasks(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let reference_params = reference_ckpt.load_params(&reference, device)?;
    crate::eval::evaluate_against(
        model,
        (&reference, &reference_params),
        items,
        tasks,
        job.data.batch,
        device,
    )
}
