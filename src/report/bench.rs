//! `cut bench` as text: a line per timed model, and the tables of a per-node profile.

use super::table::{bytes, count, percent, render};
use crate::bench::{BenchReport, NodeTime};
use std::collections::BTreeMap;

/// One line per timed model.
pub fn line(name: &str, r: &BenchReport) -> String {
    format!(
        "{name} ({}) on {} ({} threads), batch {} of {}: median {:.2} ms (min {:.2}, p90 {:.2}, max {:.2}; {} runs after {} warm-up), {:.1} {}/s{}, planned weights {} and activations {} at peak{}{}",
        r.tasks.join(", "),
        r.device,
        r.threads,
        r.batch,
        r.input.shown(),
        r.median_ms,
        r.min_ms,
        r.p90_ms,
        r.max_ms,
        r.runs,
        r.warmup,
        r.images_per_s,
        match r.input {
            crate::bench::BenchInput::Image(_) => "images",
            crate::bench::BenchInput::Text { .. } => "texts",
        },
        r.peak_memory_bytes
            .map(|b| format!(", peak memory {}", bytes(b as f64)))
            .unwrap_or_default(),
        bytes(r.planned_memory.weight_bytes as f64),
        bytes(r.planned_memory.activation_peak_bytes as f64),
        match r.batch_norms_folded {
            0 => String::new(),
            n => format!(" ({n} batch norms folded into convolutions)"),
        },
        if r.cuda_graph { " (CUDA graph replays)" } else { "" }
    )
}

/// Time per op kind, then the slowest nodes, with their multiply-accumulate rates.
/// Time per op kind and the slowest nodes, from a per-node profile.
pub fn profile_tables(nodes: &[NodeTime], forward_ms: f64) -> String {
    let total: f64 = nodes.iter().map(|n| n.median_ms).sum();
    let rate = |macs: Option<u64>, ms: f64| match macs {
        Some(m) if ms > 0.0 => format!("{:.1}", m as f64 / ms / 1e6),
        _ => "-".into(),
    };
    let mut by_op: BTreeMap<&str, (usize, f64, Option<u64>)> = BTreeMap::new();
    for n in nodes {
        let e = by_op.entry(n.op).or_insert((0, 0.0, None));
        e.0 += 1;
        e.1 += n.median_ms;
        if let Some(m) = n.macs {
            e.2 = Some(e.2.unwrap_or(0) + m);
        }
    }
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
    let rows: Vec<Vec<String>> = ops
        .iter()
        .map(|(op, (k, ms, macs))| {
            vec![
                op.to_string(),
                k.to_string(),
                format!("{ms:.3}"),
                percent(ms / total),
                macs.map(|m| count(m as f64)).unwrap_or_else(|| "-".into()),
                rate(*macs, *ms),
            ]
        })
        .collect();
    let mut out =
        format!("\nper node, synchronised: {total:.2} ms in all (the unprofiled forward: {forward_ms:.2} ms)\n");
    out += &render(&["op", "nodes", "ms", "share", "MACs", "GMAC/s"], &rows);
    let mut slow: Vec<&NodeTime> = nodes.iter().collect();
    slow.sort_by(|a, b| b.median_ms.total_cmp(&a.median_ms));
    let rows: Vec<Vec<String>> = slow
        .iter()
        .take(15)
        .map(|n| {
            vec![
                n.node.clone(),
                n.op.to_string(),
                n.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x"),
                format!("{:.3}", n.median_ms),
                percent(n.median_ms / total),
                n.macs.map(|m| count(m as f64)).unwrap_or_else(|| "-".into()),
                rate(n.macs, n.median_ms),
            ]
        })
        .collect();
    out += "\nslowest nodes\n";
    out += &render(&["node", "op", "output", "ms", "share", "MACs", "GMAC/s"], &rows);
    out
}
