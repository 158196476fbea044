//! The int8 part of a prune report: the int8 ONNX file beside the f32 one, both run in ONNX
//! Runtime on the evaluation split.

use crate::metrics::TaskMetrics;
use crate::onnx::quantize::Int8Summary;
use crate::tasks::Metric;
use serde::{Deserialize, Serialize};

/// Scores in [0, 1] may move this much in int8 and errors this share of their f32 value, and the
/// row still reads "within" (the bands docs/int8.md states).
pub const SCORE_BAND: f64 = 0.01;
pub const ERROR_BAND: f64 = 0.02;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Int8Report {
    pub file: String,
    pub bytes: u64,
    /// The f32 ONNX file it was made from (all weights in f32).
    pub f32_bytes: u64,
    pub quantization: Int8Summary,
    pub split: String,
    pub images: usize,
    /// ONNX Runtime on the f32 file.
    pub f32: Vec<TaskMetrics>,
    /// ONNX Runtime on the int8 file.
    pub int8: Vec<TaskMetrics>,
    /// How closely the int8 file's outputs follow the f32 file's.
    pub fidelity: Vec<TaskMetrics>,
    /// Per metric: f32, int8 and whether the change is within the band.
    pub rows: Vec<Int8Row>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Int8Row {
    pub task: String,
    pub metric: String,
    pub f32: Option<f64>,
    pub int8: Option<f64>,
    /// Within `SCORE_BAND` (metrics where higher is better, scores in [0, 1]) or `ERROR_BAND`
    /// of the f32 value (errors).
    pub within: Option<bool>,
}

/// Metrics given in percent (depth's delta thresholds, normals' within-angle shares): one point
/// there is 1, not 0.01.
fn in_percent(metric: &str) -> bool {
    metric.starts_with("delta_") || metric.starts_with("within_")
}

/// The rows of two metric lists of the same tasks.
pub fn rows(f32: &[TaskMetrics], int8: &[TaskMetrics]) -> Vec<Int8Row> {
    let mut rows = Vec::new();
    for (a, b) in f32.iter().zip(int8) {
        for (m, n) in a.metrics.iter().zip(&b.metrics) {
            let within = match (m.value, n.value) {
                (Some(x), Some(y)) if m.higher_is_better => {
                    let band = if in_percent(&m.name) {
                        100.0 * SCORE_BAND
                    } else {
                        SCORE_BAND
                    };
                    Some((x - y).abs() <= band + 1e-12)
                }
                (Some(x), Some(y)) => Some((y - x).abs() <= ERROR_BAND * x.abs() + 1e-12),
                _ => None,
            };
            rows.push(Int8Row {
                task: a.task.clone(),
                metric: m.name.clone(),
                f32: m.value,
                int8: n.value,
                within,
            });
        }
    }
    rows
}

/// The report's markdown section.
pub fn section(r: &Int8Report) -> String {
    let mut md = format!(
        "\n## int8 ({})\n\n`{}`: {:.1} MB, {:.0}% of the f32 ONNX file ({:.1} MB). {} inputs calibrated the activations ({}); weights {}; activations {}. Kept in f32: {}.\n\nBoth files in ONNX Runtime on the {} split ({} inputs):\n\n| task | metric | f32 | int8 | within band |\n| --- | --- | ---: | ---: | --- |\n",
        r.quantization.int8_nodes.iter().map(|(op, n)| format!("{n} {op}")).collect::<Vec<_>>().join(", "),
        r.file,
        r.bytes as f64 / 1e6,
        100.0 * r.bytes as f64 / r.f32_bytes.max(1) as f64,
        r.f32_bytes as f64 / 1e6,
        r.quantization.calibration_inputs,
        r.quantization.calibration,
        r.quantization.weights,
        r.quantization.activations,
        if r.quantization.float_weight_nodes.is_empty() {
            "no weight layer".to_string()
        } else {
            format!("{} weight layers ({})", r.quantization.float_weight_nodes.len(), r.quantization.keep_float.join(", "))
        },
        r.split,
        r.images,
    );
    for row in &r.rows {
        let within = row.within.map_or("-", |w| if w { "yes" } else { "no" });
        md.push_str(&format!(
            "| {} | {} | {} | {} | {within} |\n",
            row.task,
            row.metric,
            Metric::show(row.f32),
            Metric::show(row.int8)
        ));
    }
    md.push_str(&format!(
        "\nFidelity of int8 to f32: {}.\n",
        super::table::fidelity_phrase(&r.fidelity)
    ));
    md
}
