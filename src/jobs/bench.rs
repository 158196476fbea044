//! `cut bench` as one call: open the model (and a baseline), check the options, time.

use crate::bench::{compare, profile, speedup, BenchConfig, BenchInput, BenchReport, Candidate, NodeTime, Speedup};
use crate::checkpoint::{Checkpoint, LoadOptions};
use crate::device::DeviceChoice;
use anyhow::Result;
use std::path::PathBuf;

/// Everything `cut bench` was asked.
#[derive(Clone, Debug)]
pub struct BenchJob {
    pub model: PathBuf,
    pub load: LoadOptions,
    /// The tasks whose heads run (all when `None`).
    pub tasks: Option<Vec<String>>,
    pub device: DeviceChoice,
    pub batch: usize,
    /// [C, H, W]; the graph's default when `None`, the graph's channels when C is 0.
    pub input: Option<[usize; 3]>,
    /// A text model's sequence length; the graph's default when `None`.
    pub seq_len: Option<usize>,
    pub warmup: usize,
    pub runs: usize,
    pub threads: Option<usize>,
    /// Another checkpoint (all its heads) timed in the same runs, interleaved.
    pub baseline: Option<PathBuf>,
    pub fold_batch_norm: bool,
    pub cuda_graph: bool,
    /// Time every node on its own as well.
    pub profile: bool,
}

/// What a benchmark measured.
pub struct BenchDone {
    pub model: BenchReport,
    /// The baseline's figures and the speed-up against it.
    pub baseline: Option<(BenchReport, Speedup)>,
    /// Per-node times, with `profile`.
    pub nodes: Option<Vec<NodeTime>>,
}

pub fn run(job: &BenchJob) -> Result<BenchDone> {
    if job.batch == 0 || job.runs == 0 {
        crate::usage_bail!("--batch and --runs must be positive");
    }
    if let Some(t) = job.threads {
        if t == 0 {
            crate::usage_bail!("--threads must be positive");
        }
        tch::set_num_threads(t as i32);
    }
    let device = crate::device::resolve(job.device)?;
    let ckpt = Checkpoint::open_with(&job.model, &job.load)?;
    // --task-kinds applies to whichever of the model and the baseline has no cut graph (a
    // Hugging Face folder); the model reads it when both have one, and refuses it there.
    let baseline_needs_them = job
        .baseline
        .as_ref()
        .map(|p| open_baseline(p, job).map(|c| !has_graph(&c)))
        .transpose()?
        .unwrap_or(false);
    let model_opts = if has_graph(&ckpt) && baseline_needs_them {
        LoadOptions::default()
    } else {
        job.load.clone()
    };
    let model = ckpt.model(&model_opts)?.model;
    let tasks = match &job.tasks {
        Some(t) => model.select_tasks(t)?,
        None => model.tasks.clone(),
    };
    let input = bench_input(job, &model)?;
    let params = ckpt.load_params(&model, device)?;
    let baseline = load_baseline(job, &input, device)?;
    let cfg = BenchConfig {
        device,
        batch: job.batch,
        input,
        warmup: job.warmup,
        runs: job.runs,
        fold_batch_norm: job.fold_batch_norm,
        cuda_graph: job.cuda_graph,
    };
    let mut candidates = vec![Candidate {
        model: &model,
        params: &params,
        tasks: tasks.iter().map(|t| t.name.as_str()).collect(),
    }];
    if let Some((m, p)) = &baseline {
        candidates.push(Candidate {
            model: m,
            params: p,
            tasks: m.task_names(),
        });
    }
    let mut reports = compare(&candidates, cfg)?;
    let nodes = if job.profile {
        Some(profile(&model, &params, &candidates[0].tasks, cfg)?)
    } else {
        None
    };
    let base = (reports.len() == 2).then(|| reports.remove(1));
    let r = reports.remove(0);
    let baseline = base.map(|b| {
        let ratio = speedup(&r, &b);
        (b, ratio)
    });
    Ok(BenchDone {
        model: r,
        baseline,
        nodes,
    })
}

/// The input the model is timed at: --input (C 0 taking the graph's channels) or --seq-len over
/// the graph's defaults, each refused for the other kind of model.
fn bench_input(job: &BenchJob, model: &crate::graph::Model) -> Result<BenchInput> {
    let input = match (BenchInput::of_graph(&model.graph)?, job.input, job.seq_len) {
        (BenchInput::Image(default), image, None) => BenchInput::Image(match image {
            Some([0, h, w]) => [default[0], h, w],
            Some(i) => i,
            None => default,
        }),
        (BenchInput::Text { seq }, None, given) => BenchInput::Text {
            seq: given.unwrap_or(seq),
        },
        (BenchInput::Image(_), _, Some(_)) => crate::usage_bail!("--seq-len applies to text models; give --input HxW"),
        (BenchInput::Text { .. }, Some(_), _) => {
            crate::usage_bail!("--input applies to image models; give --seq-len N")
        }
    };
    if input == (BenchInput::Text { seq: 0 }) {
        crate::usage_bail!("--seq-len must be at least 1");
    }
    input.check(&model.graph)?;
    Ok(input)
}

/// The baseline model and its parameters, checked to take the same input.
/// The baseline, an ONNX one imported at the model's `--input` sizes.
fn open_baseline(path: &std::path::Path, job: &BenchJob) -> Result<Checkpoint> {
    if crate::checkpoint::is_onnx(path) {
        Checkpoint::open_with(path, &job.load)
    } else {
        Checkpoint::open(path)
    }
}

fn load_baseline(
    job: &BenchJob,
    input: &BenchInput,
    device: tch::Device,
) -> Result<Option<(crate::graph::Model, crate::graph::Params)>> {
    let Some(path) = &job.baseline else { return Ok(None) };
    let ckpt = open_baseline(path, job)?;
    let opts = if has_graph(&ckpt) {
        LoadOptions::default()
    } else {
        job.load.clone()
    };
    let m = ckpt.model(&opts)?.model;
    input
        .check(&m.graph)
        .map_err(|e| anyhow::anyhow!("{}: input {} does not fit: {e}", path.display(), input.shown()))?;
    let p = ckpt.load_params(&m, device)?;
    Ok(Some((m, p)))
}

fn has_graph(ckpt: &Checkpoint) -> bool {
    ckpt.metadata.contains_key(crate::checkpoint::metadata::GRAPH_KEY)
}
