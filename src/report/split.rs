//! The `cut split` report: per cut and compression, what the device runs and sends, the latency at
//! each bandwidth, every selected task's change, the baselines, the Pareto front.

use crate::metrics::TaskMetrics;
use serde::Serialize;

/// One task's first metric against the unsplit model.
#[derive(Clone, Debug, Serialize)]
pub struct TaskChange {
    pub task: String,
    pub metric: String,
    pub value: f64,
    pub reference: f64,
    /// Positive is better: 100 x the difference for a [0, 1] score, the relative change in percent
    /// for an error.
    pub points: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The node the device part ends with (before compression).
    pub cut: String,
    pub tensor: String,
    pub shape: Vec<usize>,
    pub compression: String,
    pub pool: usize,
    pub wire: String,
    /// Multiply-accumulates of the device part per inference (text: at the first probe's length).
    pub device_macs: u64,
    pub device_params: u64,
    /// The device checkpoint's size in the input's dtype.
    pub device_file_bytes: u64,
    /// Payload bytes per probe (see [`Baselines::probes`]), measured from the serialised tensor.
    pub bytes_sent: Vec<usize>,
    /// Median batch-1 latency per probe on this machine, and the spread of the runs (interquartile
    /// range). The whole model, the device part and the cloud part are timed interleaved in one
    /// loop, so the three compare on the same machine state.
    pub device_ms: Vec<f64>,
    pub device_spread_ms: Vec<f64>,
    /// The cloud part's, divided by the cloud speed-up (its spread too).
    pub cloud_ms: Vec<f64>,
    pub cloud_spread_ms: Vec<f64>,
    /// The whole model (selected heads) in the same loop.
    pub whole_ms: Vec<f64>,
    pub whole_spread_ms: Vec<f64>,
    pub before: Vec<TaskChange>,
    pub after: Vec<TaskChange>,
    /// Every metric of every selected task on the test split, before and after fine-tuning.
    pub metrics_before: Vec<TaskMetrics>,
    pub metrics_after: Vec<TaskMetrics>,
    pub finetune_best_step: Option<usize>,
    pub finetune_s: f64,
    /// Total latency (first probe) at each bandwidth: device + upload + round trip + cloud.
    pub total_ms: Vec<f64>,
    /// On the Pareto front over bytes, latency (middle bandwidth) and the worst task's points.
    pub pareto: bool,
    /// Where the split is faster than cloud-only (first probe): "below 3.1 Mbit/s", ...
    pub beats_cloud_only_below_mbit: Vec<String>,
}

impl Row {
    /// The worst task's points after fine-tuning.
    pub fn worst(&self) -> f64 {
        self.after.iter().map(|c| c.points).fold(f64::INFINITY, f64::min)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Baselines {
    /// What each payload and latency column was measured on ("per image", "mean length (27
    /// tokens)", ...).
    pub probes: Vec<String>,
    /// The whole model (selected heads) on this machine: the median over the rows' loops, and
    /// the median spread.
    pub device_only_ms: Vec<f64>,
    pub device_only_spread_ms: Vec<f64>,
    pub cloud_only_bytes: Vec<usize>,
    pub cloud_only_what: String,
    /// The whole model in the cloud: this machine's time over the cloud speed-up.
    pub cloud_only_ms: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SplitReport {
    pub model: String,
    pub model_sha256: String,
    pub tasks: Vec<String>,
    /// The unsplit model on the test split.
    pub reference: Vec<TaskMetrics>,
    pub bandwidths_mbit: Vec<f64>,
    pub rtt_ms: f64,
    pub cloud_speedup: f64,
    /// The fine-tuning schedule of every compressed split, flattened.
    #[serde(flatten)]
    pub finetune: crate::train::Schedule,
    pub finetune_device: bool,
    pub max_drop: f64,
    pub latency_machine: String,
    pub baselines: Baselines,
    pub rows: Vec<Row>,
    /// Cuts and compressions that could not apply (a map that does not divide), with why.
    pub skipped: Vec<String>,
    /// The row written as the two checkpoints.
    pub chosen: usize,
    pub device_out: String,
    pub cloud_out: String,
    pub command: String,
}

/// Milliseconds to send `bytes` at `mbit` Mbit/s.
fn upload_ms(bytes: usize, mbit: f64) -> f64 {
    bytes as f64 * 8.0 / (mbit * 1e6) * 1e3
}

impl SplitReport {
    pub fn cloud_only_total(&self, mbit: f64) -> f64 {
        upload_ms(self.baselines.cloud_only_bytes[0], mbit) + self.rtt_ms + self.baselines.cloud_only_ms[0]
    }
    fn middle(&self) -> usize {
        self.bandwidths_mbit.len() / 2
    }
}

/// Where a split sending `sent` bytes, with `extra_ms` more compute than cloud-only, is faster
/// than cloud-only sending `raw` bytes. A compute difference no larger than `noise_ms` (the
/// timings' spread) is said to be within noise instead of turned into a bandwidth.
pub fn break_even(sent: usize, raw: usize, extra_ms: f64, noise_ms: f64) -> String {
    let saved_bits = (raw as f64 - sent as f64) * 8.0;
    if extra_ms.abs() <= noise_ms {
        let bytes = if saved_bits > 0.0 { "fewer" } else { "as many or more" };
        return format!("within noise (sends {bytes} bytes; compute {extra_ms:+.1} ms, spread {noise_ms:.1} ms)");
    }
    let extra_s = extra_ms / 1e3;
    if saved_bits > 0.0 {
        if extra_s <= 0.0 {
            "at every bandwidth".into()
        } else {
            format!("below {:.2} Mbit/s", saved_bits / extra_s / 1e6)
        }
    } else if extra_s < 0.0 && saved_bits < 0.0 {
        format!("above {:.2} Mbit/s", saved_bits / extra_s / 1e6)
    } else {
        "never".into()
    }
}

/// Fills totals, break-even points and the Pareto front, and picks the row to write: the fewest
/// bytes among splits with every task within `max_drop` points that send less than cloud-only;
/// else the fewest bytes within `max_drop`; else the most accurate.
pub fn mark_front(r: &mut SplitReport) {
    let bandwidths = r.bandwidths_mbit.clone();
    let raw = r.baselines.cloud_only_bytes[0];
    let speedup = r.cloud_speedup;
    for row in &mut r.rows {
        row.total_ms = bandwidths
            .iter()
            .map(|&b| row.device_ms[0] + upload_ms(row.bytes_sent[0], b) + r.rtt_ms + row.cloud_ms[0])
            .collect();
        // Against the whole model timed in the same loop; the spreads add as independent noise.
        let noise = (row.device_spread_ms[0].powi(2)
            + row.cloud_spread_ms[0].powi(2)
            + (row.whole_spread_ms[0] / speedup).powi(2))
        .sqrt();
        row.beats_cloud_only_below_mbit = vec![break_even(
            row.bytes_sent[0],
            raw,
            row.device_ms[0] + row.cloud_ms[0] - row.whole_ms[0] / speedup,
            noise,
        )];
    }
    let mid = r.middle();
    let key = |row: &Row| (row.bytes_sent[0] as f64, row.total_ms[mid], row.worst());
    let keys: Vec<(f64, f64, f64)> = r.rows.iter().map(key).collect();
    for (i, row) in r.rows.iter_mut().enumerate() {
        let (b, l, a) = keys[i];
        row.pareto = !keys
            .iter()
            .enumerate()
            .any(|(j, &(b2, l2, a2))| j != i && b2 <= b && l2 <= l && a2 >= a && (b2 < b || l2 < l || a2 > a));
    }
    let within: Vec<usize> = (0..r.rows.len())
        .filter(|&i| r.rows[i].worst() >= -r.max_drop)
        .collect();
    let fewest = |idx: &[usize]| {
        idx.iter()
            .copied()
            .min_by(|&a, &b| keys[a].0.total_cmp(&keys[b].0).then(keys[a].1.total_cmp(&keys[b].1)))
    };
    let smaller: Vec<usize> = within
        .iter()
        .copied()
        .filter(|&i| r.rows[i].bytes_sent[0] < raw)
        .collect();
    r.chosen = fewest(&smaller)
        .or_else(|| fewest(&within))
        .or_else(|| (0..r.rows.len()).max_by(|&a, &b| keys[a].2.total_cmp(&keys[b].2)))
        .unwrap_or(0);
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{v:.1} ms")
    }
}

fn bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.2} MB", n as f64 / (1 << 20) as f64)
    } else if n >= 1024 {
        format!("{:.1} kB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn changes(c: &[TaskChange]) -> String {
    c.iter()
        .map(|t| format!("{} {:+.2}", t.task, t.points))
        .collect::<Vec<_>>()
        .join(", ")
}

fn per_probe(v: &[usize]) -> String {
    v.iter().map(|&b| bytes(b)).collect::<Vec<_>>().join(" / ")
}

fn per_probe_ms(v: &[f64]) -> String {
    v.iter().map(|&m| ms(m)).collect::<Vec<_>>().join(" / ")
}

/// Medians with ± half their spread, per probe.
fn with_spread(v: &[f64], s: &[f64]) -> String {
    v.iter()
        .zip(s)
        .map(|(&m, &s)| format!("{} ±{}", ms(m), ms(s / 2.0)))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The device-only and cloud-only rows of the table.
fn baseline_rows(r: &SplitReport) -> String {
    let mut md = String::new();
    md.push_str(&format!(
        "| device only | - | - | - | 0 B | {} | - | {} | - | - | - | |\n",
        with_spread(&r.baselines.device_only_ms, &r.baselines.device_only_spread_ms),
        r.bandwidths_mbit
            .iter()
            .map(|_| ms(r.baselines.device_only_ms[0]))
            .collect::<Vec<_>>()
            .join(" | ")
    ));
    md.push_str(&format!(
        "| cloud only | - | 0 | 0 | {} | - | {} | {} | - | - | - | |\n",
        per_probe(&r.baselines.cloud_only_bytes),
        per_probe_ms(&r.baselines.cloud_only_ms),
        r.bandwidths_mbit
            .iter()
            .map(|&b| ms(r.cloud_only_total(b)))
            .collect::<Vec<_>>()
            .join(" | ")
    ));
    md
}

/// One split's row of the table.
fn row_line(row: &Row, written: bool) -> String {
    format!(
        "| `{}`{} | {} | {:.2} M | {:.1} k | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        row.cut,
        if written { " (written)" } else { "" },
        row.compression,
        row.device_macs as f64 / 1e6,
        row.device_params as f64 / 1e3,
        per_probe(&row.bytes_sent),
        with_spread(&row.device_ms, &row.device_spread_ms),
        with_spread(&row.cloud_ms, &row.cloud_spread_ms),
        row.total_ms.iter().map(|&t| ms(t)).collect::<Vec<_>>().join(" | "),
        changes(&row.before),
        if row.finetune_best_step.is_some() {
            changes(&row.after)
        } else {
            "(not fine-tuned)".into()
        },
        row.beats_cloud_only_below_mbit.join(", "),
        if row.pareto { "yes" } else { "" }
    )
}

/// The report as Markdown (also the command's summary).
pub fn markdown(r: &SplitReport) -> String {
    let mut md = String::new();
    let chosen = &r.rows[r.chosen];
    md.push_str(&format!(
        "# Device-cloud split of {}\n\nTasks: {}. Written: {} and {} (cut after `{}`, {}).\n\n",
        r.model,
        r.tasks.join(", "),
        r.device_out,
        r.cloud_out,
        chosen.cut,
        chosen.compression
    ));
    md.push_str(&format!(
        "Payloads per inference at batch 1, {} ({}). Latency: medians on {} (cloud part divided by {}; ± half the interquartile range; the whole model and each split's two parts timed interleaved), round trip {} ms. Task change in points against the unsplit model (first metric; positive is better), before and after {} fine-tuning steps of the cloud part{}.\n\n",
        r.baselines.probes.join(" / "),
        r.baselines.cloud_only_what,
        r.latency_machine,
        r.cloud_speedup,
        r.rtt_ms,
        r.finetune.steps,
        if r.finetune_device { " and the device part" } else { "" }
    ));
    let bw_cols: Vec<String> = r
        .bandwidths_mbit
        .iter()
        .map(|b| format!("total @ {b} Mbit/s"))
        .collect();
    md.push_str(&format!(
        "| cut | compression | device MACs | device params | bytes sent | device | cloud | {} | tasks before FT | tasks after FT | beats cloud-only | front |\n",
        bw_cols.join(" | ")
    ));
    md.push_str(&format!("|{}\n", " --- |".repeat(11 + bw_cols.len())));
    md.push_str(&baseline_rows(r));
    for (i, row) in r.rows.iter().enumerate() {
        md.push_str(&row_line(row, i == r.chosen));
    }
    let mid = r.bandwidths_mbit.len() / 2;
    md.push_str(&format!(
        "\nThe front: not beaten on bytes, total latency at {} Mbit/s and the worst task's points all at once. Written: the fewest bytes among splits within {} points on every task that send less than cloud-only (else the fewest bytes within {} points, else the most accurate).\n",
        r.bandwidths_mbit[mid], r.max_drop, r.max_drop
    ));
    if !r.skipped.is_empty() {
        md.push_str("\nSkipped:\n");
        for s in &r.skipped {
            md.push_str(&format!("- {s}\n"));
        }
    }
    md.push_str("\nHow the split works and what it measures: docs/split.md (a reconstruction of Device Tuning's token pooling; the paper gives no operator or figures).\n");
    md
}

#[cfg(test)]
mod tests {
    use super::break_even;

    #[test]
    fn break_even_by_hand_and_within_noise() {
        // 1000 bytes saved (8000 bits) for 2 ms more compute: even at 4 Mbit/s.
        assert_eq!(break_even(500, 1500, 2.0, 0.5), "below 4.00 Mbit/s");
        assert_eq!(break_even(500, 1500, -1.0, 0.5), "at every bandwidth");
        assert_eq!(break_even(1500, 500, 2.0, 0.5), "never");
        // 8000 bits more for 2 ms less: faster above 4 Mbit/s.
        assert_eq!(break_even(1500, 500, -2.0, 0.5), "above 4.00 Mbit/s");
        // A compute difference inside the spread is no bandwidth at all: said as noise.
        assert_eq!(
            break_even(500, 1500, 0.3, 0.5),
            "within noise (sends fewer bytes; compute +0.3 ms, spread 0.5 ms)"
        );
        assert_eq!(
            break_even(1500, 500, -0.4, 0.5),
            "within noise (sends as many or more bytes; compute -0.4 ms, spread 0.5 ms)"
        );
    }
}
