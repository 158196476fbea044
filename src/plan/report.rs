//! A whole plan as data (for `--json`), its table and its Markdown report.

use super::blocks::{blocks, Block, BlockSize};
use super::devices::Device;
use super::solve::{self, Assignment, Check};
use super::{block_costs, BlockCost, Instance};
use crate::graph::Model;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

/// What `cut plan` was asked.
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

/// What `--measure` found on this machine.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    /// Seconds per sample of one fine-tuning step, per block (medians).
    pub seconds_per_sample: Vec<f64>,
    /// The model's FLOPs over the measured time, median over the blocks: this machine's speed.
    pub machine_flops: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sweep {
    Bandwidth,
    Memory,
}

crate::choices!(Sweep { Bandwidth => "bandwidth", Memory => "memory" });

/// The factors a sweep scales the uplink or the memory by.
pub const SWEEP_SCALES: [f64; 7] = [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0];

/// One point of a sweep: the plan's round time and the baselines' (None where no plan fits).
#[derive(Clone, Debug, Serialize)]
pub struct SweepPoint {
    pub scale: f64,
    pub latency_s: Option<f64>,
    pub equal_bandwidth_s: Option<f64>,
    pub random_s: Option<f64>,
    pub greedy_s: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeviceRow {
    pub device: String,
    pub block: Option<String>,
    pub compute_s: f64,
    pub upload_s: f64,
    pub bandwidth_hz: f64,
    pub memory_needed: u64,
    pub memory: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Baseline {
    pub name: String,
    pub latency_s: f64,
    /// How much shorter the plan's round is, as a share of the baseline's.
    pub reduction: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PlanReport {
    pub blocks: Vec<Block>,
    pub costs: Vec<BlockCost>,
    pub devices: Vec<Device>,
    pub bandwidth_hz: f64,
    /// The inputs the algorithms saw: seconds of compute per device and block, memory fit.
    pub instance: Instance,
    pub plan: Assignment,
    /// Joint allocation: the optimum lies in (lower_bound_s, plan.latency] (0 with several blocks
    /// per device, where the plan is a heuristic).
    pub lower_bound_s: f64,
    /// Matching steps the joint allocation took (0 with several blocks per device).
    pub iterations: usize,
    pub rows: Vec<DeviceRow>,
    pub straggler: String,
    /// Algorithm 1 at equal bandwidth, and how its feasibility was checked.
    pub fixed_bandwidth: Assignment,
    /// How (1) checked feasibility; none with several blocks per device.
    pub fixed_bandwidth_check: Option<Check>,
    pub baselines: Vec<Baseline>,
    /// The exhaustive optimum, at most 8 devices.
    pub exhaustive_s: Option<f64>,
    pub sweep: Option<(Sweep, Vec<SweepPoint>)>,
    pub measured: Option<Measured>,
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
        let fixed = super::several::greedy_sets(inst);
        let equal = fixed.as_ref().map(|a| a.latency).map_err(|e| anyhow::anyhow!("{e}"));
        let named = vec![
            ("greedy placement and local search, equal bandwidth", equal),
            (
                "random placement, equal bandwidth",
                super::several::random_sets(inst, seed).map(|a| a.latency),
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

/// Plans fine-tuning `model` on `devices`.
pub fn plan(
    model: &Model,
    params: Option<&crate::graph::Params>,
    devices: &[Device],
    req: &PlanRequest,
) -> Result<PlanReport> {
    if req.batch == 0 {
        crate::usage_bail!("--batch 0: a fine-tuning batch holds at least 1 sample");
    }
    if req.measure == Some(0) {
        crate::usage_bail!("--measure 0: time at least 1 step per block");
    }
    let blocks = blocks(model, &model.graph.sizes, req.blocks)?;
    let mut costs = block_costs(&blocks, req.batch);
    let mut devices = devices.to_vec();
    let measured = match (req.measure, params) {
        (Some(reps), Some(params)) => {
            let seconds = super::measure::measure(model, params, &blocks, req.batch, reps)?;
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
            for d in &mut devices {
                if let Some(k) = d.speed {
                    d.flops = k * machine_flops;
                }
            }
            Some(Measured {
                seconds_per_sample: seconds,
                machine_flops,
            })
        }
        (Some(_), None) => anyhow::bail!("--measure needs the model's weights"),
        (None, _) => {
            if let Some(d) = devices.iter().find(|d| d.speed.is_some()) {
                crate::usage_bail!(
                    "device '{}' gives a speed relative to this machine: add --measure",
                    d.name
                );
            }
            None
        }
    };
    let devices = &devices[..];
    for (b, c) in costs.iter().enumerate() {
        if devices.iter().all(|d| d.memory < c.memory_bytes) {
            crate::usage_bail!(
                "block '{}' needs {} bytes to fine-tune at batch {}; no device has that much memory (largest: {})",
                blocks[b].name,
                c.memory_bytes,
                req.batch,
                devices.iter().map(|d| d.memory).max().unwrap_or(0)
            );
        }
    }
    let inst = Instance::new(&costs, devices, req.bandwidth)?;
    // More blocks than devices: several blocks per device (a heuristic, see `several.rs`).
    let several = inst.blocks() > inst.devices();
    let solve_plan = |i: &Instance| -> Result<(Assignment, f64, usize)> {
        if i.blocks() > i.devices() {
            Ok((super::several::several(i, req.seed)?, 0.0, 0))
        } else {
            let j = solve::joint(i, 1e-6)?;
            Ok((j.assignment, j.lower_bound, j.iterations))
        }
    };
    let (plan, lower_bound_s, iterations) = solve_plan(&inst)?;
    let sweep = req.sweep.map(|kind| {
        let points = SWEEP_SCALES
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
                let inst = Instance::new(&costs, &scaled, hz).ok();
                let (_, named) = match &inst {
                    Some(i) => equal_bandwidth_plans(i, req.seed),
                    None => (Err(anyhow::anyhow!("no instance")), Vec::new()),
                };
                let baseline = |k: usize| named.get(k).and_then(|(_, r)| r.as_ref().ok().copied());
                SweepPoint {
                    scale,
                    latency_s: inst.as_ref().and_then(|i| solve_plan(i).ok()).map(|p| p.0.latency),
                    equal_bandwidth_s: baseline(0),
                    random_s: baseline(1),
                    greedy_s: baseline(2),
                }
            })
            .collect();
        (kind, points)
    });
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
    let exhaustive_s = if several {
        super::several::exhaustive_sets(&inst).ok().map(|a| a.latency)
    } else {
        (inst.devices() <= 8)
            .then(|| solve::exhaustive(&inst).map(|(_, j)| j.latency))
            .transpose()?
    };
    let rows: Vec<DeviceRow> = devices
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
                memory_needed: inst
                    .sets
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
                    .unwrap_or(0),
                memory: d.memory,
            }
        })
        .collect();
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

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// The plan as a table (the command's summary) or Markdown.
pub fn markdown(r: &PlanReport) -> String {
    let mut md = String::new();
    let how = if r.fixed_bandwidth_check.is_some() {
        format!(
            "the optimum lies above {} (gap {:.1e}), {} matching steps",
            secs(r.lower_bound_s),
            (r.plan.latency - r.lower_bound_s) / r.plan.latency,
            r.iterations
        )
    } else {
        "several blocks per device: a heuristic plan".to_string()
    };
    md.push_str(&format!(
        "# Fine-tuning plan\n\nRound time **{}** (straggler {}; {how}); uplink {:.2} MHz.\n\n",
        secs(r.plan.latency),
        r.straggler,
        r.bandwidth_hz / 1e6
    ));
    md.push_str("| device | block | compute | upload | bandwidth | memory needed / has |\n| --- | --- | ---: | ---: | ---: | ---: |\n");
    for row in &r.rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.3} MHz | {:.2} / {:.2} GB |\n",
            row.device,
            row.block.as_deref().unwrap_or("-"),
            secs(row.compute_s),
            secs(row.upload_s),
            row.bandwidth_hz / 1e6,
            row.memory_needed as f64 / 1e9,
            row.memory as f64 / 1e9
        ));
    }
    md.push_str("\n| baseline | round time | plan's reduction |\n| --- | ---: | ---: |\n");
    for b in &r.baselines {
        md.push_str(&format!(
            "| {} | {} | {:.1}% |\n",
            b.name,
            secs(b.latency_s),
            100.0 * b.reduction
        ));
    }
    if let Some(e) = r.exhaustive_s {
        md.push_str(&format!("| exhaustive optimum | {} | |\n", secs(e)));
    }
    md.push_str("\n| block | parameters | GFLOPs per sample | memory at the batch |\n| --- | ---: | ---: | ---: |\n");
    let by_name: BTreeMap<&str, &BlockCost> = r.costs.iter().map(|c| (c.block.as_str(), c)).collect();
    for b in &r.blocks {
        let c = by_name[b.name.as_str()];
        md.push_str(&format!(
            "| {} | {} | {:.3} | {:.2} GB |\n",
            b.name,
            b.params,
            c.flops_per_sample / 1e9,
            c.memory_bytes as f64 / 1e9
        ));
    }
    if let Some((kind, points)) = &r.sweep {
        let show = |x: Option<f64>| x.map(secs).unwrap_or_else(|| "no fit".into());
        md.push_str(&format!(
            "\n| {} x | plan | equal bandwidth | random | greedy |\n| ---: | ---: | ---: | ---: | ---: |\n",
            if *kind == Sweep::Bandwidth { "uplink" } else { "memory" }
        ));
        for p in points {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                p.scale,
                show(p.latency_s),
                show(p.equal_bandwidth_s),
                show(p.random_s),
                show(p.greedy_s)
            ));
        }
    }
    if let Some(m) = &r.measured {
        md.push_str(&format!(
            "\nMeasured on this machine (one fine-tuning step per block): {:.1} GFLOP/s overall; per block {} ms per sample.\n",
            m.machine_flops / 1e9,
            m.seconds_per_sample.iter().map(|s| format!("{:.2}", s * 1e3)).collect::<Vec<_>>().join(", ")
        ));
    }
    md.push_str("\nCost model and algorithms: docs/plan.md (a reconstruction of LoLa-DEFT from its abstract).\n");
    md
}
