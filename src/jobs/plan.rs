//! `cut plan`: which device fine-tunes which block, and at what share of the uplink (LoLa-DEFT).
//! [`PlanJob`] in, a [`PlanReport`] out; [`plan`] is the same on a model already loaded.

use crate::checkpoint::{Checkpoint, LoadOptions};
use crate::graph::{Model, Params};
use crate::plan::blocks::{blocks, Block, BlockSize};
use crate::plan::devices::Device;
use crate::plan::report::{markdown, Baseline, DeviceRow, Measured, PlanReport, Sweep, SweepPoint, SWEEP_SCALES};
use crate::plan::solve::{self, Assignment, Check};
use crate::plan::{block_costs, several, BlockCost, Instance};
use anyhow::Result;
use std::path::PathBuf;

/// What `cut plan` was asked, about the plan itself.
#[derive(Clone, Debug)]
pub struct PlanRequest {
    pub blocks: BlockSize,
    pub batch: usize,
    /// Total uplink, Hz.
    pub bandwidth: f64,
    /// The edge server's FLOP/s, for the offloading baseline (none without it).
    pub server_flops: Option<f64>,
    pub seed: u64,
    /// Also plan with the uplink (or every device's memory) scaled by each of [`SWEEP_SCALES`].
    pub sweep: Option<Sweep>,
    /// Time this many fine-tuning steps per block on this machine and calibrate the cost model.
    pub measure: Option<usize>,
}

/// Everything `cut plan` was asked.
#[derive(Clone, Debug)]
pub struct PlanJob {
    pub model: PathBuf,
    pub load: LoadOptions,
    /// The devices file (JSON) and the samples each device holds when the file does not say.
    pub devices: PathBuf,
    pub samples: usize,
    pub request: PlanRequest,
    /// The Markdown report, when asked.
    pub out: Option<PathBuf>,
    pub force: bool,
}

/// Reads the model and the devices, plans, and writes the Markdown report with `out`.
pub fn run(job: &PlanJob) -> Result<PlanReport> {
    if let Some(out) = &job.out {
        crate::fsio::check_output(out, &[&job.model, &job.devices], job.force)?;
    }
    let ckpt = Checkpoint::open_with(&job.model, &job.load)?;
    let model = ckpt.model(&job.load)?.model;
    let devices = crate::plan::devices::read(&job.devices, job.samples)?;
    let params = match job.request.measure {
        Some(_) => Some(ckpt.load_params(&model, tch::Device::Cpu)?),
        None => None,
    };
    let report = plan(&model, params.as_ref(), &devices, &job.request)?;
    if let Some(out) = &job.out {
        crate::fsio::write_atomic(out, markdown(&report).as_bytes())?;
    }
    Ok(report)
}

/// Plans fine-tuning `model` on `devices` (`params` only for `--measure`).
pub fn plan(model: &Model, params: Option<&Params>, devices: &[Device], req: &PlanRequest) -> Result<PlanReport> {
    if req.batch == 0 {
        crate::usage_bail!("--batch 0: a fine-tuning batch holds at least 1 sample");
    }
    if req.measure == Some(0) {
        crate::usage_bail!("--measure 0: time at least 1 step per block");
    }
    let blocks = blocks(model, &model.graph.sizes, req.blocks)?;
    let mut costs = block_costs(&blocks, req.batch);
    let mut devices = devices.to_vec();
    let measured = calibrate(model, params, &blocks, req, &mut costs, &mut devices)?;
    let devices = &devices[..];
    check_memory(&blocks, &costs, devices, req.batch)?;
    let inst = Instance::new(&costs, devices, req.bandwidth)?;
    let (plan, lower_bound_s, iterations) = solve_plan(&inst, req.seed)?;
    let sweep = req.sweep.map(|kind| (kind, sweep(kind, &costs, devices, req)));
    let (fixed, named) = equal_bandwidth_plans(&inst, req.seed);
    let (fixed, check) = fixed?;
    let mut baselines = named
        .into_iter()
        .map(|(name, r)| Ok((name.to_string(), r?)))
        .collect::<Result<Vec<(String, f64)>>>()?;
    if let Some(server) = req.server_flops {
        baselines.push((
            "offloading to the edge server".to_string(),
            offload(model, devices, &costs, &inst, server),
        ));
    }
    let exhaustive_s = exhaustive(&inst)?;
    let rows = device_rows(&blocks, devices, &inst, &plan);
    let straggler = rows
        .iter()
        .filter(|r| r.block.is_some())
        .max_by(|a, b| (a.compute_s + a.upload_s).total_cmp(&(b.compute_s + b.upload_s)))
        .map(|r| r.device.clone())
        .unwrap_or_default();
    let baselines = baselines
        .into_iter()
        .map(|(name, latency_s)| Baseline {
            reduction: 1.0 - plan.latency / latency_s,
            name,
            latency_s,
        })
        .collect();
    Ok(PlanReport {
        blocks,
        costs,
        devices: devices.to_vec(),
        bandwidth_hz: req.bandwidth,
        lower_bound_s,
        iterations,
        instance: inst,
        plan,
        rows,
        straggler,
        fixed_bandwidth: fixed,
        fixed_bandwidth_check: check,
        baselines,
        exhaustive_s,
        sweep,
        measured,
    })
}

/// With `--measure`: times each block's fine-tuning step here and rescales the block costs (and
/// the speeds of devices given relative to this machine) to the measured ones. Without it, no
/// device may give a relative speed.
fn calibrate(
    model: &Model,
    params: Option<&Params>,
    blocks: &[Block],
    req: &PlanRequest,
    costs: &mut [BlockCost],
    devices: &mut [Device],
) -> Result<Option<Measured>> {
    let (reps, params) = match (req.measure, params) {
        (Some(reps), Some(params)) => (reps, params),
        (Some(_), None) => anyhow::bail!("--measure needs the model's weights"),
        (None, _) => {
            if let Some(d) = devices.iter().find(|d| d.speed.is_some()) {
                crate::usage_bail!(
                    "device '{}' gives a speed relative to this machine: add --measure",
                    d.name
                );
            }
            return Ok(None);
        }
    };
    let seconds = crate::plan::measure::measure(model, params, blocks, req.batch, reps)?;
    let mut rates: Vec<f64> = costs
        .iter()
        .zip(&seconds)
        .map(|(c, s)| c.flops_per_sample / s)
        .collect();
    rates.sort_by(f64::total_cmp);
    let machine_flops = rates[rates.len() / 2];
    // Measured relative costs at the machine's overall speed.
    for (c, s) in costs.iter_mut().zip(&seconds) {
        c.flops_per_sample = s * machine_flops;
    }
    for d in devices.iter_mut() {
        if let Some(k) = d.speed {
            d.flops = k * machine_flops;
        }
    }
    Ok(Some(Measured {
        seconds_per_sample: seconds,
        machine_flops,
    }))
}

/// Refuses a block that no device has the memory to fine-tune.
fn check_memory(blocks: &[Block], costs: &[BlockCost], devices: &[Device], batch: usize) -> Result<()> {
    for (b, c) in costs.iter().enumerate() {
        if devices.iter().all(|d| d.memory < c.memory_bytes) {
            crate::usage_bail!(
                "block '{}' needs {} bytes to fine-tune at batch {}; no device has that much memory (largest: {})",
                blocks[b].name,
                c.memory_bytes,
                batch,
                devices.iter().map(|d| d.memory).max().unwrap_or(0)
            );
        }
    }
    Ok(())
}

/// The plan, the joint allocation's lower bound and its iterations: with more blocks than
/// devices, several blocks per device (a heuristic, see `several.rs`; no bound).
fn solve_plan(inst: &Instance, seed: u64) -> Result<(Assignment, f64, usize)> {
    if inst.blocks() > inst.devices() {
        Ok((several::several(inst, seed)?, 0.0, 0))
    } else {
        let j = solve::joint(inst, 1e-6)?;
        Ok((j.assignment, j.lower_bound, j.iterations))
    }
}

/// The plan and the baselines with the uplink (or every device's memory) scaled by each of
/// [`SWEEP_SCALES`]; a point where nothing fits has no figures.
fn sweep(kind: Sweep, costs: &[BlockCost], devices: &[Device], req: &PlanRequest) -> Vec<SweepPoint> {
    SWEEP_SCALES
        .iter()
        .map(|&scale| {
            let (scaled, hz): (Vec<Device>, f64) = match kind {
                Sweep::Bandwidth => (devices.to_vec(), req.bandwidth * scale),
                Sweep::Memory => (
                    devices
                        .iter()
                        .map(|d| Device {
                            memory: (d.memory as f64 * scale) as u64,
                            ..d.clone()
                        })
                        .collect(),
                    req.bandwidth,
                ),
            };
            let inst = Instance::new(costs, &scaled, hz).ok();
            let (_, named) = match &inst {
                Some(i) => equal_bandwidth_plans(i, req.seed),
                None => (Err(anyhow::anyhow!("no instance")), Vec::new()),
            };
            let baseline = |k: usize| named.get(k).and_then(|(_, r)| r.as_ref().ok().copied());
            SweepPoint {
                scale,
                latency_s: inst
                    .as_ref()
                    .and_then(|i| solve_plan(i, req.seed).ok())
                    .map(|p| p.0.latency),
                equal_bandwidth_s: baseline(0),
                random_s: baseline(1),
                greedy_s: baseline(2),
            }
        })
        .collect()
}

/// The exhaustive optimum's round time, where it is affordable (at most 8 devices with one
/// block each).
fn exhaustive(inst: &Instance) -> Result<Option<f64>> {
    if inst.blocks() > inst.devices() {
        return Ok(several::exhaustive_sets(inst).ok().map(|a| a.latency));
    }
    (inst.devices() <= 8)
        .then(|| solve::exhaustive(inst).map(|(_, j)| j.latency))
        .transpose()
}

/// One row per device: its blocks, compute and upload time, bandwidth and memory.
fn device_rows(blocks: &[Block], devices: &[Device], inst: &Instance, plan: &Assignment) -> Vec<DeviceRow> {
    devices
        .iter()
        .enumerate()
        .map(|(n, d)| {
            let set = solve::blocks_of(&plan.device_of, n);
            let (compute_s, bits) = inst.set_cost(n, &set).unwrap_or((f64::INFINITY, 0.0));
            let names: Vec<&str> = set.iter().map(|&b| blocks[b].name.as_str()).collect();
            DeviceRow {
                device: d.name.clone(),
                block: (!set.is_empty()).then(|| names.join(", ")),
                compute_s,
                upload_s: if bits > 0.0 {
                    bits / (plan.bandwidth[n] * inst.efficiency[n])
                } else {
                    0.0
                },
                bandwidth_hz: plan.bandwidth[n],
                memory_needed: memory_needed(inst, n, &set),
                memory: d.memory,
            }
        })
        .collect()
}

/// Memory device `n` needs for its blocks: the deepest one's whole need plus the others'
/// optimiser state (0 where the instance has no set costs).
fn memory_needed(inst: &Instance, n: usize, set: &[usize]) -> u64 {
    inst.sets
        .as_ref()
        .and_then(|sc| {
            let deepest = set
                .iter()
                .copied()
                .max_by(|&a, &b| inst.compute[n][a].total_cmp(&inst.compute[n][b]))?;
            Some(
                sc.memory_alone[deepest]
                    + set
                        .iter()
                        .filter(|&&b| b != deepest)
                        .map(|&b| sc.optimiser_bytes[b])
                        .sum::<u64>(),
            )
        })
        .unwrap_or(0)
}

/// The equal-bandwidth plan (and how (1) checked it; none with several blocks per device), and the
/// baselines in report order, each on its own (a sweep point may lack one): with one block per
/// device the optimal matching, a random and a greedy one; with several, the greedy placement and a
/// random one.
#[allow(clippy::type_complexity)]
fn equal_bandwidth_plans(
    inst: &Instance,
    seed: u64,
) -> (Result<(Assignment, Option<Check>)>, Vec<(&'static str, Result<f64>)>) {
    if inst.blocks() > inst.devices() {
        let fixed = several::greedy_sets(inst);
        let equal = fixed.as_ref().map(|a| a.latency).map_err(|e| anyhow::anyhow!("{e}"));
        let named = vec![
            ("greedy placement and local search, equal bandwidth", equal),
            (
                "random placement, equal bandwidth",
                several::random_sets(inst, seed).map(|a| a.latency),
            ),
        ];
        (fixed.map(|a| (a, None)), named)
    } else {
        let fixed = solve::bottleneck(inst, &solve::equal_bandwidth(inst), false);
        let equal = fixed
            .as_ref()
            .map(|(a, _)| a.latency)
            .map_err(|e| anyhow::anyhow!("{e}"));
        let named = vec![
            ("equal bandwidth, optimal matching", equal),
            (
                "random matching, equal bandwidth",
                solve::random(inst, seed).map(|a| a.latency),
            ),
            (
                "greedy by device speed, equal bandwidth",
                solve::greedy_by_speed(inst).map(|a| a.latency),
            ),
        ];
        (fixed.map(|(a, c)| (a, Some(c))), named)
    }
}

/// Offloading: every device uploads its samples (the raw input: 8 bits per image value, 32 per
/// token id) sharing the uplink so that all finish together, then the server fine-tunes every
/// block (backward to the first block) on all of them.
fn offload(model: &Model, devices: &[Device], costs: &[BlockCost], inst: &Instance, server_flops: f64) -> f64 {
    let per_sample_bits: f64 = model
        .graph
        .inputs
        .iter()
        .map(|i| {
            let values = i
                .shape(&model.graph.sizes)
                .map(|s| s.iter().product::<usize>())
                .unwrap_or(0) as f64;
            let bits = if matches!(i.dtype, crate::graph::inputs::InputDType::F32) {
                8.0
            } else {
                32.0
            };
            values * bits
        })
        .sum();
    // Equal finish: sum over devices of bits / (e T) = bandwidth.
    let upload: f64 = devices
        .iter()
        .zip(&inst.efficiency)
        .map(|(d, e)| d.samples as f64 * per_sample_bits / e)
        .sum::<f64>()
        / inst.bandwidth;
    let full = costs.iter().map(|c| c.flops_per_sample).fold(0.0, f64::max);
    let samples: usize = devices.iter().map(|d| d.samples).sum();
    upload + samples as f64 * full / server_flops
}
