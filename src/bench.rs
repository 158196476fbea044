//! Forward-pass latency of a model: median and spread over timed runs after a warm-up.

use crate::device::cuda::CapturedForward;
use crate::graph::image_sizes;
use crate::graph::inference::InferenceMode;
use crate::graph::interpreter::{channels_last, forward, forward_inputs, forward_observed, Inputs, Mode, Params};
use crate::graph::memory::{self, ForwardMemory};
use crate::graph::passes::{fold_batch_norms, fuse_conv_relu, slice_dead_taps};
use crate::graph::{Graph, Model};
use anyhow::{bail, Result};
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
    pub input: BenchInput,
    pub warmup: usize,
    pub runs: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub p90_ms: f64,
    pub max_ms: f64,
    pub images_per_s: f64,
    /// On a CPU, the process's peak resident memory so far; on a GPU, the most bytes libtorch's
    /// allocator had allocated on the device at once during this benchmark (of all the models it
    /// timed). None where it cannot be read.
    pub peak_memory_bytes: Option<u64>,
    /// Weights and activations the timed graph needs, planned from it (f32; no workspaces).
    pub planned_memory: ForwardMemory,
    /// Batch norms folded into convolutions before timing (see [`BenchConfig::fold_batch_norm`]).
    pub batch_norms_folded: usize,
    /// Each timed forward was a replay of a CUDA graph (see [`BenchConfig::cuda_graph`]).
    pub cuda_graph: bool,
    /// Every timed run, in run order (for ratios of runs timed in the same round; see [`speedup`]).
    #[serde(skip)]
    pub run_times_ms: Vec<f64>,
}

/// How much faster `model` ran than `baseline`, timed interleaved by [`compare`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Speedup {
    /// The baseline's median time over the model's.
    pub median_over_median: f64,
    /// The median over rounds of the ratio of the two runs timed in the same round, and its 10th and
    /// 90th percentiles: how far the machine's noise moves the ratio.
    pub per_round_median: f64,
    pub per_round_p10: f64,
    pub per_round_p90: f64,
}

/// The speed-up of `model` over `baseline`; both must come from the same [`compare`] call.
pub fn speedup(model: &BenchReport, baseline: &BenchReport) -> Speedup {
    let mut ratios: Vec<f64> = baseline
        .run_times_ms
        .iter()
        .zip(&model.run_times_ms)
        .map(|(b, m)| b / m)
        .collect();
    ratios.sort_by(|a, b| a.total_cmp(b));
    Speedup {
        median_over_median: baseline.median_ms / model.median_ms,
        per_round_median: median_of_sorted(&ratios),
        per_round_p10: percentile_of_sorted(&ratios, 0.1),
        per_round_p90: percentile_of_sorted(&ratios, 0.9),
    }
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The size of the batch to time: an image model's [C, H, W] (in JSON `[C, H, W]`), or a text
/// model's sequence length (`{"seq": N}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum BenchInput {
    Image([usize; 3]),
    Text { seq: usize },
}

impl BenchInput {
    /// The graph's default input: its image size, or its default sequence length.
    pub fn of_graph(graph: &Graph) -> Result<BenchInput> {
        if let Ok(image) = graph.image_input() {
            return Ok(BenchInput::Image(image));
        }
        match graph.sizes.get("seq") {
            // A text encoder, or a split's cloud part reading its features and mask.
            Some(&seq) => Ok(BenchInput::Text { seq }),
            _ => bail!("cut times image models and text encoders; this graph reads neither"),
        }
    }

    /// Whether `graph` runs at this input (an image's channels included).
    pub fn check(&self, graph: &Graph) -> Result<()> {
        match *self {
            BenchInput::Image(i) => crate::graph::shapes::infer(graph, i).map(|_| ()),
            BenchInput::Text { .. } => crate::graph::shapes::infer_sizes(graph, &self.sizes_for(graph)).map(|_| ()),
        }
    }

    /// [`Self::sizes`] plus the graph's other named sizes, scaled with the sequence (a pooled
    /// sequence of a split's cloud part stays ceil(seq / k)).
    pub fn sizes_for(&self, graph: &Graph) -> std::collections::BTreeMap<String, usize> {
        let mut sizes = self.sizes();
        if let (BenchInput::Text { seq }, Some(&default)) = (*self, graph.sizes.get("seq")) {
            for (name, &value) in &graph.sizes {
                sizes
                    .entry(name.clone())
                    .or_insert_with(|| (value * seq).div_ceil(default.max(1)));
            }
        }
        sizes
    }

    /// For a line of text: "3x480x640" or "128 tokens".
    pub fn shown(&self) -> String {
        match self {
            BenchInput::Image([c, h, w]) => format!("{c}x{h}x{w}"),
            BenchInput::Text { seq } => format!("{seq} tokens"),
        }
    }

    /// The graph's named sizes at this input.
    pub fn sizes(&self) -> std::collections::BTreeMap<String, usize> {
        match *self {
            BenchInput::Image([_, h, w]) => image_sizes(h, w),
            BenchInput::Text { seq } => std::collections::BTreeMap::from([("seq".to_string(), seq)]),
        }
    }
    fn image(&self) -> Result<[usize; 3]> {
        match *self {
            BenchInput::Image(i) => Ok(i),
            BenchInput::Text { .. } => bail!("per-node profiles and CUDA graphs time image models only"),
        }
    }
}

/// What to time.
#[derive(Clone, Copy, Debug)]
pub struct BenchConfig {
    pub device: Device,
    pub batch: usize,
    pub input: BenchInput,
    pub warmup: usize,
    pub runs: usize,
    /// Fold each batch norm into the convolution before it, as a deployment would, before timing.
    pub fold_batch_norm: bool,
    /// On a GPU, record each model's forward once as a CUDA graph and time replays of it, as a
    /// latency-bound deployment would: one launch per forward instead of one per kernel.
    pub cuda_graph: bool,
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

/// A text model's seeded random batch (see [`Graph::random_inputs`]).
fn random_tokens(cfg: &BenchConfig, graph: &Graph, seq: usize) -> Result<Inputs> {
    tch::manual_seed(0);
    graph.random_inputs(cfg.batch, &BenchInput::Text { seq }.sizes_for(graph), cfg.device)
}

/// The seeded random image batch (pixel values of image scale).
fn random_batch(cfg: &BenchConfig) -> Result<Tensor> {
    tch::manual_seed(0);
    let [c, h, w] = cfg.input.image()?.map(|d| d as i64);
    let x = Tensor::randn([cfg.batch as i64, c, h, w], (Kind::Float, cfg.device)) * 50.0;
    if gpu_layout(cfg.device) {
        Ok(channels_last(&x))
    } else {
        Ok(x)
    }
}

/// Waits for queued GPU work, so that a clock read after it has seen the work done.
fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The graph and weights to time: the candidate's, with batch norms folded when asked, and each
/// convolution that only a ReLU reads fused with it when `fuse` (a per-node profile runs them
/// apart). On a GPU the weights go channels-last (NHWC), the layout cuDNN's tensor-core kernels want.
fn prepare(c: &Candidate, cfg: &BenchConfig, fuse: bool) -> Result<(Graph, Params, usize)> {
    let (graph, params, folded) = if cfg.fold_batch_norm {
        fold_batch_norms(&c.model.graph, c.params)?
    } else {
        let params = c.params.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
        (c.model.graph.clone(), params, 0)
    };
    let graph = if fuse {
        fuse_conv_relu(&graph, &c.tasks).0
    } else {
        graph
    };
    let graph = slice_dead_taps(&graph, &cfg.input.sizes_for(&c.model.graph))?.0;
    let params = if gpu_layout(cfg.device) {
        params.into_iter().map(|(k, t)| (k, channels_last(&t))).collect()
    } else {
        params
    };
    Ok((graph, params, folded))
}

fn gpu_layout(device: Device) -> bool {
    device.is_cuda()
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
    let _guard = InferenceMode::enter();
    let prepared = candidates
        .iter()
        .map(|c| prepare(c, &cfg, true))
        .collect::<Result<Vec<_>>>()?;
    if let Device::Cuda(i) = device {
        // Best effort: without the CUDA shim the report has no GPU peak.
        let _ = crate::device::cuda::reset_peak_memory(i);
    }
    // An image batch (which a CUDA graph copies in), or a text batch by input name.
    let (x, tokens) = match input {
        BenchInput::Image(_) => (random_batch(&cfg)?, None),
        BenchInput::Text { seq } => (
            Tensor::new(),
            Some(random_tokens(&cfg, &candidates[0].model.graph, seq)?),
        ),
    };
    let sync = || synchronize(device);
    let eager = |c: &Candidate, (graph, params, _): &(Graph, Params, usize), x: &Tensor| -> Result<Vec<Tensor>> {
        let outputs = match &tokens {
            Some(inputs) => forward_inputs(graph, params, inputs, &c.tasks, Mode::Eval)?,
            None => forward(graph, params, x, &c.tasks, Mode::Eval)?,
        };
        Ok(outputs.into_values().collect())
    };
    let mut captured = Vec::new();
    if cfg.cuda_graph {
        if !device.is_cuda() {
            bail!(
                "CUDA graphs need a CUDA device; this benchmark runs on {}",
                crate::device::describe(device)
            );
        }
        input.image()?;
        for (c, p) in candidates.iter().zip(&prepared) {
            captured.push(CapturedForward::capture(&x, warmup, &mut |x| eager(c, p, x))?);
        }
    }
    // One timed (or warm-up) forward of candidate `i`: a replay when captured (whose outputs the
    // graph keeps). The caller drops the outputs after reading the clock.
    let mut run = |i: usize| -> Result<Vec<Tensor>> {
        match captured.get_mut(i) {
            Some(graph) => graph.run(&x).map(|_| Vec::new()),
            None => eager(&candidates[i], &prepared[i], &x),
        }
    };
    for _ in 0..warmup {
        for i in 0..candidates.len() {
            run(i)?;
        }
    }
    sync();
    let mut times = vec![Vec::with_capacity(runs); candidates.len()];
    for _ in 0..runs.max(1) {
        for (i, t_c) in times.iter_mut().enumerate() {
            let t = Instant::now();
            let out = run(i)?;
            sync();
            t_c.push(t.elapsed().as_secs_f64() * 1e3);
            drop(out);
        }
    }
    candidates
        .iter()
        .zip(times)
        .zip(&prepared)
        .map(|((c, run_times_ms), (graph, _, folded))| {
            let planned_memory = memory::plan(graph, &input.sizes(), batch, &c.tasks, 4)?;
            let mut times = run_times_ms.clone();
            times.sort_by(|a, b| a.total_cmp(b));
            let n = times.len();
            let median = median_of_sorted(&times);
            Ok(BenchReport {
                tasks: c.tasks.iter().map(|t| t.to_string()).collect(),
                device: crate::device::describe(device),
                threads: tch::get_num_threads(),
                batch,
                input,
                warmup,
                runs: n,
                median_ms: median,
                min_ms: times[0],
                p90_ms: percentile_of_sorted(&times, 0.9),
                max_ms: times[n - 1],
                images_per_s: batch as f64 / (median / 1e3),
                peak_memory_bytes: match device {
                    Device::Cpu => peak_rss_bytes(),
                    Device::Cuda(i) => crate::device::cuda::peak_allocated_bytes(i).ok(),
                    _ => None,
                },
                planned_memory,
                batch_norms_folded: *folded,
                cuda_graph: cfg.cuda_graph,
                run_times_ms,
            })
        })
        .collect()
}

/// A latency timed interleaved with others: the median of its runs and their spread.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Timing {
    pub median_ms: f64,
    /// The interquartile range of the runs (75th minus 25th percentile): how far the machine's
    /// noise moves one run.
    pub spread_ms: f64,
}

/// Times several forwards interleaved, as [`compare`] does: each round runs every one once, in
/// turn, so a busy spell of the machine slows them alike. `warmup` rounds first, then `runs`.
pub fn interleaved(forwards: &mut [&mut dyn FnMut() -> Result<()>], warmup: usize, runs: usize) -> Result<Vec<Timing>> {
    for _ in 0..warmup {
        for f in forwards.iter_mut() {
            f()?;
        }
    }
    let mut times = vec![Vec::with_capacity(runs); forwards.len()];
    for _ in 0..runs.max(1) {
        for (f, t_f) in forwards.iter_mut().zip(&mut times) {
            let t = Instant::now();
            f()?;
            t_f.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            Timing {
                median_ms: median_of_sorted(&t),
                spread_ms: percentile_of_sorted(&t, 0.75) - percentile_of_sorted(&t, 0.25),
            }
        })
        .collect())
}

/// The smallest value with at least `q` of the values at or below it (nearest rank).
fn percentile_of_sorted(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    sorted[((n as f64 * q).ceil() as usize).clamp(1, n) - 1]
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
    let _guard = InferenceMode::enter();
    let candidate = Candidate {
        model,
        params,
        tasks: tasks.to_vec(),
    };
    let (graph, params, _) = prepare(&candidate, &cfg, false)?;
    let x = random_batch(&cfg)?;
    let shapes = crate::graph::shapes::infer(&graph, cfg.input.image()?)?;
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

#[cfg(test)]
mod tests {
    /// Forwards run in turn, round after round (warm-up rounds too), and each gets its own
    /// median and spread.
    #[test]
    fn interleaved_runs_every_forward_in_turn() {
        let order = std::cell::RefCell::new(Vec::new());
        let mut a = || -> Result<()> {
            order.borrow_mut().push('a');
            Ok(())
        };
        let mut b = || -> Result<()> {
            order.borrow_mut().push('b');
            std::thread::sleep(std::time::Duration::from_millis(2));
            Ok(())
        };
        let t = super::interleaved(&mut [&mut a, &mut b], 1, 4).unwrap();
        assert_eq!(order.borrow().iter().collect::<String>(), "ababababab");
        assert_eq!(t.len(), 2);
        assert!(t[1].median_ms >= 2.0 && t[0].median_ms < t[1].median_ms, "{t:?}");
        assert!(t.iter().all(|x| x.spread_ms >= 0.0));
    }

    use super::*;

    fn report(run_times_ms: Vec<f64>) -> BenchReport {
        let mut sorted = run_times_ms.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        BenchReport {
            tasks: vec![],
            device: "cpu".into(),
            threads: 1,
            batch: 1,
            input: BenchInput::Image([3, 8, 8]),
            warmup: 0,
            runs: run_times_ms.len(),
            median_ms: median_of_sorted(&sorted),
            min_ms: sorted[0],
            p90_ms: percentile_of_sorted(&sorted, 0.9),
            max_ms: sorted[sorted.len() - 1],
            images_per_s: 0.0,
            peak_memory_bytes: None,
            planned_memory: ForwardMemory {
                weight_bytes: 0,
                activation_peak_bytes: 0,
                activation_peak_node: String::new(),
            },
            batch_norms_folded: 0,
            cuda_graph: false,
            run_times_ms,
        }
    }

    #[test]
    fn speedup_pairs_runs_of_the_same_round() {
        // Rounds: baseline 2, 6, 3, 8 ms; model 1, 3, 3, 2 ms -> ratios 2, 2, 1, 4.
        let model = report(vec![1.0, 3.0, 3.0, 2.0]);
        let baseline = report(vec![2.0, 6.0, 3.0, 8.0]);
        let s = speedup(&model, &baseline);
        // Medians 4.5 / 2.5; per-round ratios sorted 1, 2, 2, 4: median 2, nearest-rank p10 1, p90 4.
        assert_eq!(s.median_over_median, 4.5 / 2.5);
        assert_eq!((s.per_round_median, s.per_round_p10, s.per_round_p90), (2.0, 1.0, 4.0));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile_of_sorted(&v, 0.9), 9.0);
        assert_eq!(percentile_of_sorted(&v, 0.1), 1.0);
        assert_eq!(percentile_of_sorted(&v, 0.95), 10.0);
        assert_eq!(percentile_of_sorted(&[7.0], 0.1), 7.0);
    }
}
