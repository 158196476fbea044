//! Forward-pass latency of a model: median and spread over timed runs after a warm-up.

use crate::graph::inference::fold_batch_norms;
use crate::graph::interpreter::{forward, forward_observed, Mode, Params};
use crate::graph::{Graph, Model};
use anyhow::Result;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub tasks: Vec<String>,
    pub device: String,
    pub threads: i32,
    pub batch: usize,
    pub input: [usize; 3],
    pub warmup: usize,
    pub runs: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub p90_ms: f64,
    pub max_ms: f64,
    pub images_per_s: f64,
    /// Peak resident memory of the process so far (CPU), or the peak bytes CUDA allocated.
    pub peak_memory_bytes: Option<u64>,
    /// Batch norms folded into convolutions before timing (see [`BenchConfig::fold_batch_norm`]).
    pub batch_norms_folded: usize,
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What to time.
#[derive(Clone, Copy, Debug)]
pub struct BenchConfig {
    pub device: Device,
    pub batch: usize,
    pub input: [usize; 3],
    pub warmup: usize,
    pub runs: usize,
    /// Fold each batch norm into the convolution before it, as a deployment would, before timing.
    pub fold_batch_norm: bool,
}

/// A model to time: its graph, weights (on the benchmark device) and the tasks to run.
pub struct Candidate<'a> {
    pub model: &'a Model,
    pub params: &'a Params,
    pub tasks: Vec<&'a str>,
}

/// Times `runs` inference forwards of the given tasks on a random batch (after `warmup` untimed ones).
pub fn bench(model: &Model, params: &Params, tasks: &[&str], cfg: BenchConfig) -> Result<BenchReport> {
    let one = Candidate {
        model,
        params,
        tasks: tasks.to_vec(),
    };
    Ok(compare(&[one], cfg)?.remove(0))
}

/// The seeded random batch (pixel values of image scale) every benchmark runs on.
fn random_batch(cfg: &BenchConfig) -> Tensor {
    tch::manual_seed(0);
    let [c, h, w] = cfg.input.map(|d| d as i64);
    Tensor::randn([cfg.batch as i64, c, h, w], (Kind::Float, cfg.device)) * 50.0
}

/// Waits for queued GPU work, so that a clock read after it has seen the work done.
fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The graph and weights to time: the candidate's, with batch norms folded when asked.
fn prepare(c: &Candidate, cfg: &BenchConfig) -> Result<(Graph, Params, usize)> {
    if cfg.fold_batch_norm {
        fold_batch_norms(&c.model.graph, c.params)
    } else {
        let params = c.params.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
        Ok((c.model.graph.clone(), params, 0))
    }
}

/// Times several models on the same random batch, interleaved run by run (A, B, C, A, B, C, ...),
/// so that a noisy machine slows them alike and their ratio stays meaningful.
pub fn compare(candidates: &[Candidate], cfg: BenchConfig) -> Result<Vec<BenchReport>> {
    let BenchConfig {
        device,
        batch,
        input,
        warmup,
        runs,
        ..
    } = cfg;
    let _guard = tch::no_grad_guard();
    let prepared = candidates
        .iter()
        .map(|c| prepare(c, &cfg))
        .collect::<Result<Vec<_>>>()?;
    let x = random_batch(&cfg);
    let sync = || synchronize(device);
    for _ in 0..warmup {
        for (c, (graph, params, _)) in candidates.iter().zip(&prepared) {
            forward(graph, params, &x, &c.tasks, Mode::Eval)?;
        }
    }
    sync();
    let mut times = vec![Vec::with_capacity(runs); candidates.len()];
    for _ in 0..runs.max(1) {
        for ((c, (graph, params, _)), t_c) in candidates.iter().zip(&prepared).zip(times.iter_mut()) {
            let t = Instant::now();
            let out = forward(graph, params, &x, &c.tasks, Mode::Eval)?;
            sync();
            t_c.push(t.elapsed().as_secs_f64() * 1e3);
            drop(out);
        }
    }
    Ok(candidates
        .iter()
        .zip(times)
        .zip(&prepared)
        .map(|((c, mut times), (_, _, folded))| {
            times.sort_by(|a, b| a.total_cmp(b));
            let n = times.len();
            let median = median_of_sorted(&times);
            BenchReport {
                tasks: c.tasks.iter().map(|t| t.to_string()).collect(),
                device: crate::device::describe(device),
                threads: tch::get_num_threads(),
                batch,
                input,
                warmup,
                runs: n,
                median_ms: median,
                min_ms: times[0],
                p90_ms: times[((n as f64 * 0.9).ceil() as usize).clamp(1, n) - 1],
                max_ms: times[n - 1],
                images_per_s: batch as f64 / (median / 1e3),
                peak_memory_bytes: if device == Device::Cpu { peak_rss_bytes() } else { None },
                batch_norms_folded: *folded,
            }
        })
        .collect())
}

fn median_of_sorted(times: &[f64]) -> f64 {
    let n = times.len();
    if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2.0
    }
}

/// Where one forward's time goes: one node's median time over the profiled runs.
#[derive(Clone, Debug, Serialize)]
pub struct NodeTime {
    pub node: String,
    pub op: &'static str,
    /// Output shape for one sample.
    pub shape: Vec<usize>,
    /// Multiply-accumulates for the whole batch (conv and linear nodes).
    pub macs: Option<u64>,
    pub median_ms: f64,
}

/// Times every node of the given tasks' forward separately (each node is synchronised on GPUs, so
/// the sum exceeds an unprofiled forward by the launch overlap it prevents). Nodes in graph order.
pub fn profile(model: &Model, params: &Params, tasks: &[&str], cfg: BenchConfig) -> Result<Vec<NodeTime>> {
    let warmup = cfg.warmup;
    let _guard = tch::no_grad_guard();
    let candidate = Candidate {
        model,
        params,
        tasks: tasks.to_vec(),
    };
    let (graph, params, _) = prepare(&candidate, &cfg)?;
    let x = random_batch(&cfg);
    let shapes = crate::graph::shapes::infer(&graph, cfg.input)?;
    let macs = crate::graph::shapes::macs(&graph, &shapes);
    let sync = || synchronize(cfg.device);
    let mut times: HashMap<String, Vec<f64>> = HashMap::new();
    for run in 0..warmup + cfg.runs.max(1) {
        sync();
        let mut last = Instant::now();
        forward_observed(&graph, &params, &x, tasks, Mode::Eval, &mut |node, _| {
            sync();
            let now = Instant::now();
            if run >= warmup {
                let ms = (now - last).as_secs_f64() * 1e3;
                times.entry(node.name.clone()).or_default().push(ms);
            }
            last = now;
        })?;
    }
    Ok(graph
        .nodes
        .iter()
        .filter_map(|node| {
            let mut t = times.remove(&node.name)?;
            t.sort_by(|a, b| a.total_cmp(b));
            Some(NodeTime {
                node: node.name.clone(),
                op: node.op.name(),
                shape: shapes[&node.name].clone(),
                macs: macs.get(&node.name).map(|m| m * cfg.batch as u64),
                median_ms: median_of_sorted(&t),
            })
        })
        .collect())
}
