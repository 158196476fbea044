//! The `cut prune` report: settings, sizes and compute per group, sparsity per layer, accuracy
//! before and after, as JSON (data) and Markdown (for a person).

use super::footprint;
use super::table::{bytes, count, percent, render};
use crate::checkpoint::{Checkpoint, DType};
use crate::graph::interpreter::Params;
use crate::graph::{Group, Model};
use crate::prune::{Accuracy, PruneOutcome, Timings};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// The input model's tasks, in its order.
    pub input_tasks: Vec<String>,
    pub tasks: Vec<String>,
    pub dropped_tasks: Vec<String>,
    pub criterion: String,
    /// "weight" or "channel".
    pub granularity: String,
    pub fusion: String,
    /// Votes a backbone weight needs out of the selected tasks.
    pub votes_needed: usize,
    pub calib_batches: usize,
    pub batch: usize,
    pub scoring: String,
    /// The fine-tuning schedule as the run used it (no steps without data), flattened.
    #[serde(flatten)]
    pub finetune: crate::train::Schedule,
    pub lambdas: BTreeMap<String, f64>,
    pub val_fraction: f64,
    pub eval_split: String,
    pub dtype: String,
    pub layout: String,
    pub device: String,
    /// Tasks scored and fine-tuned by distillation from the input model (see `tasks::distill`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub distilled: Vec<String>,
}

/// Median batch-1 forward latency, from `cut prune --bench`.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub device: String,
    pub threads: i32,
    pub batch: usize,
    pub input: crate::bench::BenchInput,
    pub runs: usize,
    pub dense_all_heads_ms: f64,
    pub dense_selected_ms: f64,
    pub pruned_ms: f64,
    pub speedup_vs_all_heads: f64,
    pub speedup_vs_selected: f64,
    /// Batch norms were folded into convolutions in memory before timing, as a deployment would.
    pub batch_norms_folded: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct SparsityReport {
    /// What `target` and `reached` measure: "zero conv/linear weights" or "multiply-accumulates removed".
    pub measure: String,
    pub target: f64,
    pub reached: f64,
    pub tolerance: f64,
    pub keep_ratio_per_task: f64,
    pub search_iterations: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct GroupReport {
    pub group: String,
    /// "kept" or "dropped".
    pub status: String,
    pub params: u64,
    /// Conv and linear weights.
    pub weights: u64,
    pub nonzero_weights: u64,
    pub bytes_dense: u64,
    pub bytes_packed: u64,
    pub macs_dense: u64,
    /// Multiply-accumulates with non-zero weights only.
    pub macs_effective: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    pub name: String,
    pub group: String,
    pub shape: Vec<usize>,
    pub weights: u64,
    pub nonzeros: u64,
    pub sparsity: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SizeReport {
    pub input_bytes: u64,
    /// The input file's bytes less the dropped heads' tensors.
    pub after_dropping_heads_bytes: u64,
    pub output_bytes: u64,
    pub saved_by_dropping_heads: u64,
    /// After dropping heads, what masking plus the layout and dtype saved (zero or negative for a
    /// dense file of the same dtype: zeros still take space there).
    pub saved_by_pruning: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PruneReport {
    pub tool: String,
    pub version: String,
    pub command: String,
    pub input: String,
    pub input_sha256: String,
    pub output: String,
    pub settings: Settings,
    pub sparsity: SparsityReport,
    /// The output model's groups, then the dropped heads as they were in the input.
    pub groups: Vec<GroupReport>,
    /// Every group of the input model as stored, marked "kept" or "dropped".
    pub input_groups: Vec<GroupReport>,
    pub size: SizeReport,
    pub accuracy: Option<Accuracy>,
    pub finetune_best_step: Option<usize>,
    /// Training and validation losses during fine-tuning.
    pub finetune_log: Vec<crate::train::LogEntry>,
    pub timings: Timings,
    /// With --granularity channel: budget, costs and widths before and after.
    pub channels: Option<crate::prune::ChannelOutcome>,
    /// With --bench.
    pub latency: Option<Latency>,
    /// With --int8: the int8 ONNX file and its figures in ONNX Runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8: Option<super::int8::Int8Report>,
    pub layers: Vec<LayerReport>,
    pub notes: Vec<String>,
}

fn group_name(g: &Group) -> String {
    match g {
        Group::Backbone => "backbone".into(),
        Group::Head(t) => format!("head {t}"),
    }
}

/// The group reports of a footprint; `status` marks each group kept or dropped.
fn group_reports(
    model: &Model,
    tensors: &[footprint::TensorFootprint],
    status: impl Fn(&Group) -> &'static str,
) -> Result<Vec<GroupReport>> {
    Ok(footprint::by_group(model, tensors, &BTreeMap::new())?
        .into_iter()
        .map(|(group, t)| GroupReport {
            group: group_name(&group),
            status: status(&group).into(),
            params: t.params,
            weights: t.weights,
            nonzero_weights: t.weights - t.zeros,
            bytes_dense: t.bytes,
            bytes_packed: t.bytes_packed,
            macs_dense: t.macs_dense,
            macs_effective: t.macs_effective,
        })
        .collect())
}

/// Per-group figures of a model and its (masked) parameters, stored in `dtype`.
pub fn group_figures(model: &Model, params: &Params, dtype: DType) -> Result<(Vec<GroupReport>, Vec<LayerReport>)> {
    let tensors = footprint::of_params(model, params, dtype);
    let layers = tensors
        .iter()
        .filter(|t| t.role.is_prunable_weight())
        .map(|t| LayerReport {
            name: t.name.clone(),
            group: group_name(&t.group),
            shape: t.shape.clone(),
            weights: t.elements,
            nonzeros: t.elements - t.zeros,
            sparsity: 1.0 - (t.elements - t.zeros) as f64 / t.elements.max(1) as f64,
        })
        .collect();
    Ok((group_reports(model, &tensors, |_| "kept")?, layers))
}

/// Per-group figures of the input model (every head), read from the input checkpoint as stored;
/// the heads of `dropped` tasks are marked "dropped", the rest "kept".
pub fn input_figures(input: &Checkpoint, full: &Model, dropped: &[String]) -> Result<Vec<GroupReport>> {
    let tensors = footprint::of_checkpoint(input, full)?;
    group_reports(full, &tensors, |g| match g {
        Group::Head(t) if dropped.contains(t) => "dropped",
        _ => "kept",
    })
}

/// What the report's reader needs to know to read its figures, by how the model was pruned.
fn notes(outcome: &PruneOutcome) -> Vec<String> {
    let mut notes = vec![
        "Scores are computed in inference mode (batch-norm running statistics, dropout off), so they do not depend on batch composition or random draws.".to_string(),
    ];
    match outcome.channels() {
        None => notes.push("Sparsity is the share of zero conv and linear weights in the output model (backbone and kept heads); biases and batch norm are not pruned.".into()),
        Some(c) => {
            let per = match c.seq_len {
                Some(seq) => format!("one sequence of {seq} tokens"),
                None => "one image at the graph's input size".into(),
            };
            notes.push(format!("Sparsity is the share of the selected-task model's multiply-accumulates ({per}) that removing channels, neurons and attention heads took away."));
            notes.push("A channel's score for a task sums the scores of its producers' output rows (an attention head's rows of the query, key and value projections) and its consumers' input columns; a head scores its channels' sum; units are ranked by score per multiply-accumulate.".into());
            notes.push("What a removed unit still outputs (a channel's bias through batch norm and activations, a head's value bias) is folded into the consumers' biases, so the pruned model computes what the model with those units' input weights zeroed computes.".into());
            if !c.inexact_fold.is_empty() {
                notes.push(format!(
                    "{} padded convolution(s) received a non-zero folded constant ({}); there the fold is exact away from the image borders only, which fine-tuning absorbs.",
                    c.inexact_fold.len(),
                    c.inexact_fold.join(", ")
                ));
            }
        }
    }
    notes.push(format!("mIoU: {}.", crate::metrics::MIOU_CONVENTION));
    if outcome.accuracy.is_none() {
        notes.push("Accuracy was not measured: no --data was given.".into());
    }
    notes
}

/// Assembles the report once the output file exists.
#[allow(clippy::too_many_arguments)]
pub fn build(
    input: &Checkpoint,
    input_sha256: String,
    full: &Model,
    outcome: &PruneOutcome,
    settings: Settings,
    tolerance: f64,
    target: f64,
    output: &std::path::Path,
    output_bytes: u64,
    command: String,
) -> Result<PruneReport> {
    let dtype = DType::parse(&settings.dtype)?;
    let (mut groups, layers) = group_figures(&outcome.model, &outcome.params, dtype)?;
    let input_groups = input_figures(input, full, &settings.dropped_tasks)?;
    groups.extend(input_groups.iter().filter(|g| g.status == "dropped").cloned());
    let dropped_bytes: u64 = groups
        .iter()
        .filter(|g| g.status == "dropped")
        .map(|g| g.bytes_dense)
        .sum();
    // File bytes throughout, headers included, so the three figures add up.
    let after_drop = (input.file_len() as u64).saturating_sub(dropped_bytes);
    let notes = notes(outcome);
    let (reached, keep_ratio_per_task, search_iterations) = outcome.search_figures();
    Ok(PruneReport {
        tool: "cut".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        command,
        input: input.path.display().to_string(),
        input_sha256,
        output: output.display().to_string(),
        settings,
        sparsity: SparsityReport {
            measure: if outcome.channels().is_some() {
                "multiply-accumulates removed".into()
            } else {
                "zero conv/linear weights".into()
            },
            target,
            reached,
            tolerance,
            keep_ratio_per_task,
            search_iterations,
        },
        groups,
        input_groups,
        size: SizeReport {
            input_bytes: input.file_len() as u64,
            after_dropping_heads_bytes: after_drop,
            output_bytes,
            saved_by_dropping_heads: dropped_bytes,
            saved_by_pruning: after_drop as i64 - output_bytes as i64,
        },
        accuracy: outcome.accuracy.clone(),
        finetune_best_step: outcome.finetune_best_step,
        finetune_log: outcome.finetune_log.clone(),
        timings: outcome.timings.clone(),
        channels: outcome.channels().cloned(),
        latency: None,
        int8: None,
        layers,
        notes,
    })
}

fn metric_rows(acc: &Accuracy) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for (b, (p, a)) in acc.before.iter().zip(acc.pruned.iter().zip(&acc.after)) {
        for ((mb, mp), ma) in b.metrics.iter().zip(&p.metrics).zip(&a.metrics) {
            rows.push(vec![
                format!("{} {}", b.task, mb.name),
                mb.shown(),
                mp.shown(),
                ma.shown(),
                if mb.higher_is_better {
                    "higher".into()
                } else {
                    "lower".into()
                },
            ]);
        }
    }
    rows
}

fn asked(target: f64) -> String {
    if target.is_finite() {
        percent(target)
    } else {
        "a parameter budget".into()
    }
}

fn latency_line(l: &Latency) -> String {
    format!(
        "  latency (batch 1, {}, median of {}): input all heads {:.2} ms, input selected heads {:.2} ms, output {:.2} ms ({:.2}x and {:.2}x faster)",
        l.device, l.runs, l.dense_all_heads_ms, l.dense_selected_ms, l.pruned_ms, l.speedup_vs_all_heads, l.speedup_vs_selected
    )
}

/// A short summary, for the terminal.
/// delta_m after and before fine-tuning, or the one figure when there was no fine-tuning.
fn delta_m_phrase(finetune_steps: usize, acc: &Accuracy) -> String {
    if finetune_steps == 0 {
        format!("{:+.2}% (no fine-tuning)", acc.delta_m_before_finetune)
    } else {
        format!(
            "{:+.2}% after fine-tuning ({:+.2}% before)",
            acc.delta_m, acc.delta_m_before_finetune
        )
    }
}

/// The summary's first line: what was pruned for which tasks, sparsity and size.
fn headline(r: &PruneReport, kept: &[&GroupReport]) -> String {
    // Weight pruning shrinks a file only when packed: show the other layout's tensor bytes too.
    let layout_note = match (r.channels.is_some(), r.settings.layout.as_str()) {
        (true, _) => String::new(),
        (false, "packed") => format!(
            " (packed; dense tensors {})",
            bytes(kept.iter().map(|g| g.bytes_dense).sum::<u64>() as f64)
        ),
        (false, _) => format!(
            " (tensors {} with --packed)",
            bytes(kept.iter().map(|g| g.bytes_packed).sum::<u64>() as f64)
        ),
    };
    format!(
        "pruned {} for {} ({} dropped): sparsity {} (asked {}), {} -> {} on disk{}\n",
        r.input,
        r.settings.tasks.join(", "),
        if r.settings.dropped_tasks.is_empty() {
            "none".to_string()
        } else {
            r.settings.dropped_tasks.join(", ")
        },
        percent(r.sparsity.reached),
        asked(r.sparsity.target),
        bytes(r.size.input_bytes as f64),
        bytes(r.size.output_bytes as f64),
        layout_note,
    )
}

/// The summary's lines on a structured prune: MACs and parameters, heads kept, the token count.
fn structure_lines(c: &crate::prune::ChannelOutcome) -> String {
    let mut out = format!(
        "  channel pruning of the selected-task model: MACs {} -> {} ({} removed), parameters {} -> {}, {} layer groups narrowed\n",
        count(c.before.macs as f64),
        count(c.after.macs as f64),
        percent(c.macs_removed),
        count(c.before.params as f64),
        count(c.after.params as f64),
        c.layers.len()
    );
    if let Some(heads) = widths_of(c, "heads") {
        out.push_str(&format!("  heads kept: {heads}\n"));
    }
    if let Some(seq) = c.seq_len {
        out.push_str(&format!("  MACs counted at {seq} tokens\n"));
    }
    out
}

/// The widths after pruning of the narrowed groups of `unit` ("heads"), space-separated.
fn widths_of(c: &crate::prune::ChannelOutcome, unit: &str) -> Option<String> {
    let list: Vec<String> = c
        .layers
        .iter()
        .filter(|l| l.unit == unit)
        .map(|l| l.after.to_string())
        .collect();
    (!list.is_empty()).then(|| list.join(" "))
}

/// The command's summary: the headline, the structure, parameters and MACs kept, the metrics.
pub fn summary(r: &PruneReport) -> String {
    let kept: Vec<&GroupReport> = r.groups.iter().filter(|g| g.status == "kept").collect();
    let params: u64 = kept.iter().map(|g| g.params).sum();
    let nz: u64 = kept.iter().map(|g| g.nonzero_weights + (g.params - g.weights)).sum();
    let macs: u64 = kept.iter().map(|g| g.macs_dense).sum();
    let eff: u64 = kept.iter().map(|g| g.macs_effective).sum();
    let mut out = headline(r, &kept);
    if let Some(c) = &r.channels {
        out.push_str(&structure_lines(c));
    }
    if let Some(l) = &r.latency {
        out.push_str(&latency_line(l));
        out.push('\n');
    }
    out.push_str(&format!(
        "  parameters kept {} (non-zero {}), MACs {} dense, {} effective\n",
        count(params as f64),
        count(nz as f64),
        count(macs as f64),
        count(eff as f64)
    ));
    match &r.accuracy {
        Some(acc) => {
            out.push_str(&format!(
                "  delta_m {}, on {} {} {}\n",
                delta_m_phrase(r.settings.finetune.steps, acc),
                acc.images,
                acc.split,
                crate::graph::TaskKind::samples_noun(acc.before.iter().map(|t| t.kind))
            ));
            out.push_str(&render(
                &["  metric", "before", "pruned", "after", "better"],
                &metric_rows(acc)
                    .into_iter()
                    .map(|mut row| {
                        row[0] = format!("  {}", row[0]);
                        row
                    })
                    .collect::<Vec<_>>(),
            ));
            out.push_str(&format!(
                "  fidelity to the input model: {}\n",
                super::table::fidelity_phrase(&acc.fidelity)
            ));
        }
        None => out.push_str("  accuracy not measured (no --data)\n"),
    }
    out.push_str(&format!("  wrote {}\n", r.output));
    out
}

/// The Markdown report: a summary table first, details after.
pub fn markdown(r: &PruneReport) -> String {
    let mut md = format!("# cut prune report\n\n`{}`\n\n", r.command);
    md.push_str(&summary_table(r));
    md.push_str(&accuracy_section(r));
    if let Some(int8) = &r.int8 {
        md.push_str(&super::int8::section(int8));
    }
    md.push_str(&size_section(r));
    md.push_str(&structure_section(r));
    md.push_str(&settings_section(r));
    md.push_str("\n## Notes\n\n");
    for n in &r.notes {
        md.push_str(&format!("- {n}\n"));
    }
    md.push_str(&layers_section(r));
    md
}

/// The summary table: tasks, size, parameters, MACs, sparsity, latency, delta_m.
fn summary_table(r: &PruneReport) -> String {
    let mut md = String::from("## Summary\n\n| | before | after |\n| --- | ---: | ---: |\n");
    let kept: Vec<&GroupReport> = r.groups.iter().filter(|g| g.status == "kept").collect();
    let non_zero = |g: &&GroupReport| g.nonzero_weights + (g.params - g.weights);
    let input_params: u64 = r.input_groups.iter().map(|g| g.params).sum();
    let input_nz: u64 = r.input_groups.iter().map(|g| non_zero(&g)).sum();
    let input_macs: u64 = r.input_groups.iter().map(|g| g.macs_effective).sum();
    let kept_params: u64 = kept.iter().map(|g| g.params).sum();
    let kept_nz: u64 = kept.iter().map(non_zero).sum();
    let eff: u64 = kept.iter().map(|g| g.macs_effective).sum();
    md.push_str(&format!(
        "| tasks | {} | {} |\n",
        r.settings.input_tasks.join(", "),
        r.settings.tasks.join(", ")
    ));
    md.push_str(&format!(
        "| file size | {} | {} |\n",
        bytes(r.size.input_bytes as f64),
        bytes(r.size.output_bytes as f64)
    ));
    md.push_str(&format!(
        "| parameters (non-zero) | {} | {} |\n",
        count(input_nz as f64),
        count(kept_nz as f64)
    ));
    md.push_str(&format!(
        "| parameters stored | {} | {} |\n",
        count(input_params as f64),
        count(kept_params as f64)
    ));
    md.push_str(&format!(
        "| MACs per image (effective) | {} | {} |\n",
        count(input_macs as f64),
        count(eff as f64)
    ));
    md.push_str(&format!(
        "| sparsity ({}) | - | {} (asked {}) |\n",
        r.sparsity.measure,
        percent(r.sparsity.reached),
        asked(r.sparsity.target)
    ));
    if let Some(l) = &r.latency {
        md.push_str(&format!(
            "| latency, batch 1, {} (median) | {:.2} ms all heads, {:.2} ms selected | {:.2} ms |\n",
            l.device, l.dense_all_heads_ms, l.dense_selected_ms, l.pruned_ms
        ));
    }
    if let Some(acc) = &r.accuracy {
        md.push_str(&format!("| delta_m (selected tasks) | 0 | {:+.2}% |\n", acc.delta_m));
    }
    md
}

/// Every metric before, pruned and after, and delta_m; or why accuracy was not measured.
fn accuracy_section(r: &PruneReport) -> String {
    let Some(acc) = &r.accuracy else {
        return "\nAccuracy was not measured: no `--data` was given.\n".into();
    };
    let noun = crate::graph::TaskKind::samples_noun(acc.before.iter().map(|t| t.kind));
    let mut md = format!("\n## Accuracy on the {} split ({} {noun})\n\n| metric | before | pruned, not fine-tuned | after | better |\n| --- | ---: | ---: | ---: | --- |\n", acc.split, acc.images);
    for row in metric_rows(acc) {
        md.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    md.push_str(&format!(
        "\ndelta_m: {} (positive is better).\n",
        delta_m_phrase(r.settings.finetune.steps, acc)
    ));
    md.push_str(&format!(
        "\nFidelity of the output model to the input model on the same {}, no labels (top-1 agreement and KL divergence for class outputs, relative L2 error and cosine similarity for values): {}.\n",
        noun,
        super::table::fidelity_phrase(&acc.fidelity)
    ));
    md
}

/// Where the bytes went, and per group its parameters, bytes and MACs.
fn size_section(r: &PruneReport) -> String {
    let mut md = String::from("\n## Size\n\n");
    let pruning = if r.size.saved_by_pruning > 0 {
        format!(
            "pruning, layout and dtype save {} more",
            bytes(r.size.saved_by_pruning as f64)
        )
    } else {
        "pruning saves no space in a dense file of the same dtype (zeros are stored; use --packed or --dtype)"
            .to_string()
    };
    md.push_str(&format!(
        "Input {}; dropping heads saves {}; {pruning}; output {}.\n\n",
        bytes(r.size.input_bytes as f64),
        bytes(r.size.saved_by_dropping_heads as f64),
        bytes(r.size.output_bytes as f64)
    ));
    md.push_str("| group | status | params in input | params | weights non-zero | bytes dense | bytes packed | MACs dense | MACs effective |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for g in &r.groups {
        let in_input = r
            .input_groups
            .iter()
            .find(|i| i.group == g.group)
            .map_or(0, |i| i.params);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            g.group,
            g.status,
            count(in_input as f64),
            count(g.params as f64),
            count(g.nonzero_weights as f64),
            bytes(g.bytes_dense as f64),
            bytes(g.bytes_packed as f64),
            count(g.macs_dense as f64),
            count(g.macs_effective as f64)
        ));
    }
    md
}

/// At channel granularity: each narrowed group's width before and after, in its units.
fn structure_section(r: &PruneReport) -> String {
    let Some(c) = &r.channels else { return String::new() };
    let widened = if c.layer_ratio_widened {
        " (the smallest cap that meets the budget)"
    } else {
        ""
    };
    let (per, at) = match c.seq_len {
        Some(seq) => ("sequence", format!(" at {seq} tokens")),
        None => ("image", String::new()),
    };
    let mut md = format!(
        "\n## Channels, neurons and heads\n\nBudget {}{at}; rules: at least {} channels or neurons per layer, counts rounded to multiples of {}, at least {} heads per layer, at most {} of a layer removed{}. Selected-task model: {}.\n\n| layer | units | before | after |\n| --- | --- | ---: | ---: |\n",
        budget_text(c.budget),
        c.rules.min_channels,
        c.rules.round_to,
        c.rules.min_heads,
        percent(c.rules.max_layer_ratio),
        widened,
        model_change(c, per),
    );
    for l in &c.layers {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            l.producers.join(", "),
            l.unit,
            l.before,
            l.after
        ));
    }
    md
}

/// "197.55 M -> 97.88 M MACs per image (50.5% removed), 841.3 k -> 389.8 k parameters".
fn model_change(c: &crate::prune::ChannelOutcome, per: &str) -> String {
    format!(
        "{} -> {} MACs per {per} ({} removed), {} -> {} parameters",
        count(c.before.macs as f64),
        count(c.after.macs as f64),
        percent(c.macs_removed),
        count(c.before.params as f64),
        count(c.after.params as f64)
    )
}

/// The settings the run used, the input's hash and the time of each phase.
fn settings_section(r: &PruneReport) -> String {
    let s = &r.settings;
    let mut md = format!(
        "\n## Settings\n\ngranularity {}, criterion {}, fusion {} ({} votes needed), {} calibration batches of {}, scoring {}, seed {}, fine-tuning {} steps (lr {}, weight decay {}, x{} every {} steps, best step {}), validation share {}, dtype {}, layout {}, device {}.\n\nInput sha256 `{}`.\n",
        s.granularity, s.criterion, s.fusion, s.votes_needed, s.calib_batches, s.batch, s.scoring, s.finetune.seed, s.finetune.steps, s.finetune.lr, s.finetune.weight_decay, s.finetune.gamma, s.finetune.step_size,
        r.finetune_best_step.map(|b| b.to_string()).unwrap_or_else(|| "-".into()), s.val_fraction, s.dtype, s.layout, s.device, r.input_sha256
    );
    let t = &r.timings;
    md.push_str(&format!(
        "\nTime: scoring {:.1} s, masks {:.1} s, evaluation {:.1} s + {:.1} s, fine-tuning {:.1} s.\n",
        t.score_s, t.mask_s, t.eval_before_s, t.eval_after_s, t.finetune_s
    ));
    md
}

/// The sparsity of every pruned layer.
fn layers_section(r: &PruneReport) -> String {
    let rows: Vec<Vec<String>> = r
        .layers
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                l.group.clone(),
                format!("{:?}", l.shape),
                l.weights.to_string(),
                percent(l.sparsity),
            ]
        })
        .collect();
    format!(
        "\n## Sparsity per layer\n\n```\n{}```\n",
        render(&["layer", "group", "shape", "weights", "sparsity"], &rows)
    )
}

fn budget_text(b: crate::prune::channel_select::Budget) -> String {
    use crate::prune::channel_select::Budget;
    match b {
        Budget::MacShare(s) => format!("remove {} of MACs", percent(s)),
        Budget::Macs(m) => format!("at most {} MACs", count(m as f64)),
        Budget::Params(p) => format!("at most {} parameters", count(p as f64)),
    }
}
