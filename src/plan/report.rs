//! A whole plan as data (for `--json`), its table and its Markdown report.

use super::blocks::Block;
use super::devices::Device;
use super::solve::{Assignment, Check};
use super::{BlockCost, Instance};
use serde::Serialize;
use std::collections::BTreeMap;

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
