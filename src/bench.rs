//! Forward-pass latency of a model: median and spread over timed runs after a warm-up.

use crate::graph::interpreter::{forward, Mode, Params};
use crate::graph::Model;
use anyhow::Result;
use serde::Serialize;
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

/// Times several models on the same random batch, interleaved run by run (A, B, C, A, B, C, ...),
/// so that a noisy machine slows them alike and their ratio stays meaningful.
pub fn compare(candidates: &[Candidate], cfg: BenchConfig) -> Result<Vec<BenchReport>> {
    let BenchConfig {
        device,
        batch,
        input,
        warmup,
        runs,
    } = cfg;
    let _guard = tch::no_grad_guard();
    tch::manual_seed(0);
    let x = Tensor::randn(
        [batch as i64, input[0] as i64, input[1] as i64, input[2] as i64],
        (Kind::Float, device),
    ) * 50.0;
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    for _ in 0..warmup {
        for c in candidates {
            forward(&c.model.graph, c.params, &x, &c.tasks, Mode::Eval)?;
        }
    }
    sync();
    let mut times = vec![Vec::with_capacity(runs); candidates.len()];
    for _ in 0..runs.max(1) {
        for (c, t_c) in candidates.iter().zip(times.iter_mut()) {
            let t = Instant::now();
            let out = forward(&c.model.graph, c.params, &x, &c.tasks, Mode::Eval)?;
            sync();
            t_c.push(t.elapsed().as_secs_f64() * 1e3);
            drop(out);
        }
    }
    Ok(candidates
        .iter()
        .zip(times)
        .map(|(c, mut times)| {
            times.sort_by(|a, b| a.total_cmp(b));
            let n = times.len();
            let median = if n % 2 == 1 {
                times[n / 2]
            } else {
                (times[n / 2 - 1] + times[n / 2]) / 2.0
            };
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
            }
        })
        .collect())
}
