//! Which channels to remove: per-task channel importance from per-weight scores, per-task keep
//! decisions fused across the selected tasks, the width rules (minimum, rounding, per-layer cap),
//! and a search for the per-task keep ratio that meets a compute or size budget.

pub use super::channels::task_scores_group;
use super::channels::{transform_params, ChannelGroup};
use super::mask::Fusion;
use super::structured::resize;
pub use super::types::{ChannelScores, Scores};
use crate::graph::ops::Unit;
use crate::graph::{shapes, Graph, Model};
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use tch::Kind;

/// Width rules every group obeys.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct WidthRules {
    /// Keep at least this many channels (or the group's width if smaller).
    pub min_channels: usize,
    /// Kept counts are multiples of this (or the group's full width); 1 turns rounding off.
    pub round_to: usize,
    /// At most this share of a group's units goes.
    pub max_layer_ratio: f64,
    /// Attention heads every layer keeps (0 lets a layer lose its attention); heads are neither
    /// rounded nor held to `min_channels`.
    pub min_heads: usize,
}

impl WidthRules {
    pub fn check(&self) -> Result<()> {
        if self.min_channels == 0 {
            crate::usage_bail!("--min-channels must be at least 1");
        }
        if self.round_to == 0 {
            crate::usage_bail!("--round-to must be at least 1 (1 turns rounding off)");
        }
        if !(self.max_layer_ratio > 0.0 && self.max_layer_ratio <= 1.0) {
            crate::usage_bail!("--max-layer-ratio {} must be in (0, 1]", self.max_layer_ratio);
        }
        Ok(())
    }

    /// The smallest width the rules allow for a group of `channels`.
    pub fn floor(&self, channels: usize) -> usize {
        let capped = ((1.0 - self.max_layer_ratio) * channels as f64 - 1e-9).ceil().max(0.0) as usize;
        self.round(self.min_channels.min(channels).max(capped), channels)
    }

    /// `n` rounded up to the rounding step, never above the group's width.
    pub fn round(&self, n: usize, channels: usize) -> usize {
        n.div_ceil(self.round_to).saturating_mul(self.round_to).min(channels)
    }

    /// How many of `units` units a group keeps when `n` are asked for: at least the rules' floor
    /// (for heads `min_heads`, for convolution groups enough for `min_channels`, and the cap),
    /// rounded for channels and neurons (whole heads and groups are not).
    pub fn units_kept(&self, unit: Unit, n: usize, units: usize) -> usize {
        let capped = ((1.0 - self.max_layer_ratio) * units as f64 - 1e-9).ceil().max(0.0) as usize;
        let least = match unit {
            Unit::Head { .. } => self.min_heads,
            Unit::Group { width } => self.min_channels.div_ceil(width),
            Unit::Channel | Unit::Neuron => return self.round(n.max(self.floor(units)), units),
        };
        n.max(capped).max(least.min(units)).min(units)
    }
}

/// The per-layer caps (`max_layer_ratio`) tried in turn when none is given: the first whose rules
/// can meet the budget is used. A gentle cap spreads the removal over more layers; on the demo 0.5
/// kept more accuracy than 0.75 and gave a faster model (`docs/pruning.md`), so the wider caps
/// serve only budgets that 0.5 cannot meet.
pub const AUTO_LAYER_RATIOS: [f64; 4] = [0.5, 0.75, 0.9, 1.0];

/// What the pruned model may cost.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    /// Remove at least this share of the model's multiply-accumulates.
    MacShare(f64),
    /// At most this many multiply-accumulates per image.
    Macs(u64),
    /// At most this many parameters (weights, biases, batch-norm scales and shifts; running
    /// statistics are buffers and do not count).
    Params(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Cost {
    /// Multiply-accumulates per image at the graph's input size.
    pub macs: u64,
    pub params: u64,
}

/// Cost of the graph with each group at `widths[i]` channels.
pub fn cost(graph: &Graph, groups: &[ChannelGroup], widths: &[usize]) -> Result<Cost> {
    let g = resize(graph, groups, widths);
    let shape_map = shapes::infer_sizes(&g, &g.sizes)?;
    let macs = shapes::macs(&g, &shape_map)
        .values()
        .fold(0u64, |a, &m| a.saturating_add(m));
    let params = g
        .param_specs()
        .iter()
        .filter(|s| !s.role.is_buffer())
        .map(|s| s.numel() as u64)
        .sum();
    Ok(Cost { macs, params })
}

/// The chosen widths and channels.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelPlan {
    /// Per group: the channels kept (sorted), or None where all stay.
    pub keep: Vec<Option<Vec<i64>>>,
    pub before: Cost,
    pub after: Cost,
    /// Share of multiply-accumulates removed.
    pub macs_removed: f64,
    pub keep_ratio: f64,
    pub iterations: usize,
    /// The rules the plan obeys (with the per-layer cap [`ChannelSearch::search_with_caps`] chose).
    pub rules: WidthRules,
}

/// One task's view: for each group it scores, its channel scores.
struct TaskChannels {
    /// group index -> score per channel (normalised: the task's channel scores sum to 1).
    scores: BTreeMap<usize, Vec<f64>>,
    /// group index -> rank of each channel among all the task's channels by score per MAC (0 = best).
    rank: BTreeMap<usize, Vec<usize>>,
    total: usize,
}

pub struct ChannelSearch<'a> {
    graph: &'a Graph,
    groups: &'a [ChannelGroup],
    rules: WidthRules,
    tasks: Vec<TaskChannels>,
    needed: usize,
    before: Cost,
    /// Per group and channel: never removed (see `protect`).
    protected: Option<Vec<Vec<bool>>>,
}

/// Whether the search may narrow group `g`: a prunable group of two units or more, or of heads (a
/// layer may lose all its heads).
fn removable(g: &ChannelGroup) -> bool {
    g.prunable() && (g.units() >= 2 || matches!(g.unit, Unit::Head { .. }) && g.units() >= 1)
}

/// Sum of a weight's scores over every dimension but `dim`.
fn per_channel(scores: &tch::Tensor, dim: i64) -> Vec<f64> {
    let moved = scores
        .transpose(0, dim)
        .flatten(1, -1)
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
    Vec::<f64>::try_from(moved.to_device(tch::Device::Cpu)).expect("1-d double tensor")
}

/// A group's per-channel values summed per unit.
fn per_unit(channel: Vec<f64>, unit: Unit) -> Vec<f64> {
    channel.chunks(unit.width()).map(|c| c.iter().sum()).collect()
}

/// Unit scores from per-weight scores (as for unstructured pruning): a channel's score for a task
/// is the sum of the scores of every weight that goes with it, its producers' output rows and its
/// consumers' input columns; a unit's, its channels' sum.
pub fn channel_scores_from_weights(graph: &Graph, groups: &[ChannelGroup], scores: &Scores) -> Result<ChannelScores> {
    scores
        .iter()
        .map(|(task, task_scores)| {
            let mut s: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
            for (i, g) in groups.iter().enumerate() {
                if !task_scores_group(graph, g, |w| task_scores.contains_key(w)) {
                    continue;
                }
                let mut channel = vec![0.0; g.channels];
                // A member holds the group's channels from its offset on (after a concatenation).
                let mut add = |v: Vec<f64>, offset: usize| {
                    channel
                        .iter_mut()
                        .zip(v.into_iter().skip(offset))
                        .for_each(|(a, b)| *a += b)
                };
                // Output rows of the producers and of the depthwise filters the channel passes.
                for (w, offset) in g.output_rows(graph)? {
                    if let Some(scores) = task_scores.get(&w) {
                        add(per_channel(scores, 0), offset);
                    }
                }
                for c in &g.consumers {
                    for (w, _) in transform_params(graph, c)?
                        .weights
                        .iter()
                        .filter(|(w, _)| task_scores.contains_key(w))
                    {
                        add(per_channel(&task_scores[w], 1), g.offset(c));
                    }
                }
                let channel = per_unit(channel, g.unit);
                s.insert(i, channel);
            }
            Ok((task.clone(), s))
        })
        .collect()
}

impl<'a> ChannelSearch<'a> {
    /// A search over per-weight scores per task (see [`channel_scores_from_weights`]).
    pub fn new(
        model: &'a Model,
        groups: &'a [ChannelGroup],
        scores: &Scores,
        fusion: Fusion,
        min_votes: Option<usize>,
        rules: WidthRules,
    ) -> Result<ChannelSearch<'a>> {
        let channel_scores = channel_scores_from_weights(&model.graph, groups, scores)?;
        Self::from_channel_scores(model, groups, &channel_scores, fusion, min_votes, rules)
    }

    /// A search over channel scores per task. Each task's scores are normalised to sum to 1, and
    /// its channels ranked by score per multiply-accumulate they cost, so cheap important channels
    /// stay and expensive unimportant ones go first.
    pub fn from_channel_scores(
        model: &'a Model,
        groups: &'a [ChannelGroup],
        scores: &ChannelScores,
        fusion: Fusion,
        min_votes: Option<usize>,
        rules: WidthRules,
    ) -> Result<ChannelSearch<'a>> {
        rules.check()?;
        let graph = &model.graph;
        let full: Vec<usize> = groups.iter().map(|g| g.channels).collect();
        let before = cost(graph, groups, &full)?;
        // MACs one unit of each group costs.
        let mut per_unit_macs = Vec::with_capacity(groups.len());
        for (i, g) in groups.iter().enumerate() {
            if !removable(g) {
                per_unit_macs.push(0);
                continue;
            }
            let mut w = full.clone();
            w[i] -= g.unit.width();
            per_unit_macs.push(before.macs - cost(graph, groups, &w)?.macs);
        }
        let mut tasks = Vec::new();
        for task_scores in scores.values() {
            let mut s = task_scores.clone();
            for (&i, v) in &s {
                match groups.get(i) {
                    None => bail!("channel scores name group {i}; the graph has {} groups", groups.len()),
                    Some(g) if g.units() != v.len() => {
                        bail!("group {i} has {} {} but {} scores", g.units(), g.unit.plural(), v.len())
                    }
                    Some(_) => {}
                }
            }
            let sum: f64 = s.values().flatten().sum();
            if sum > 0.0 {
                s.values_mut().flatten().for_each(|v| *v /= sum);
            }
            let mut order: Vec<(f64, usize, usize)> = s
                .iter()
                .flat_map(|(&g, v)| {
                    let m = per_unit_macs[g].max(1) as f64;
                    v.iter().enumerate().map(move |(c, &x)| (x / m, g, c))
                })
                .collect();
            // Best first; ties by position so the ranking is deterministic.
            order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            let mut rank: BTreeMap<usize, Vec<usize>> = s.iter().map(|(&g, v)| (g, vec![0; v.len()])).collect();
            for (r, &(_, g, c)) in order.iter().enumerate() {
                rank.get_mut(&g).expect("group ranked")[c] = r;
            }
            tasks.push(TaskChannels {
                total: order.len(),
                scores: s,
                rank,
            });
        }
        if tasks.is_empty() {
            bail!("no tasks were scored");
        }
        let needed = fusion.needed_votes(tasks.len(), min_votes)?;
        Ok(ChannelSearch {
            graph,
            groups,
            rules,
            tasks,
            needed,
            before,
            protected: None,
        })
    }

    /// Keeps the marked channels whatever their scores (for example the channels whose removal the
    /// bias fold cannot reproduce exactly; see `structured::fold_hazards`).
    pub fn protect(mut self, protected: Vec<Vec<bool>>) -> Self {
        self.protected = Some(protected);
        self
    }

    /// Kept channels per group when each task keeps its best `ratio` share of its units.
    pub fn keep(&self, ratio: f64) -> Vec<Option<Vec<i64>>> {
        self.groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let voters: Vec<&TaskChannels> = self.tasks.iter().filter(|t| t.rank.contains_key(&i)).collect();
                if voters.is_empty() || !removable(g) {
                    return None;
                }
                let width = g.unit.width();
                let protected = |u: usize| {
                    let channels = &self.protected.as_ref()?[i];
                    Some(channels[u * width..(u + 1) * width].iter().any(|&p| p))
                };
                // A group scored by fewer tasks than the vote needs (a head) follows its own tasks.
                let needed = self.needed.min(voters.len());
                let mut ranked: Vec<(usize, f64, usize)> = (0..g.units())
                    .map(|u| {
                        let votes = voters
                            .iter()
                            .filter(|t| t.rank[&i][u] < (ratio * t.total as f64).floor() as usize)
                            .count();
                        let score: f64 = voters.iter().map(|t| t.scores[&i][u]).sum();
                        let class = if protected(u) == Some(true) {
                            2
                        } else {
                            usize::from(votes >= needed)
                        };
                        (class, score, u)
                    })
                    .collect();
                let fused = ranked.iter().filter(|r| r.0 >= 1).count();
                let n = self.rules.units_kept(g.unit, fused, g.units());
                if n >= g.units() {
                    return None;
                }
                // Protected and fused keeps first, then the best of the rest to fill the rules' width.
                ranked.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
                let mut kept: Vec<usize> = ranked[..n].iter().map(|r| r.2).collect();
                kept.sort_unstable();
                Some(g.channels_of(&kept))
            })
            .collect()
    }

    fn widths(&self, keep: &[Option<Vec<i64>>]) -> Vec<usize> {
        self.groups
            .iter()
            .zip(keep)
            .map(|(g, k)| k.as_ref().map_or(g.channels, |k| k.len()))
            .collect()
    }

    pub fn before(&self) -> Cost {
        self.before
    }

    /// Whether a pruned model of cost `c` fits the budget.
    fn within(&self, budget: Budget, c: &Cost) -> bool {
        match budget {
            Budget::MacShare(s) => c.macs as f64 <= (1.0 - s) * self.before.macs as f64,
            Budget::Macs(m) => c.macs <= m,
            Budget::Params(p) => c.params <= p,
        }
    }

    /// The kept channels and cost when each task keeps its best `ratio` share.
    fn evaluate(&self, ratio: f64) -> Result<(Vec<Option<Vec<i64>>>, Cost)> {
        let keep = self.keep(ratio);
        let c = cost(self.graph, self.groups, &self.widths(&keep))?;
        Ok((keep, c))
    }

    /// [`search`](Self::search) under the first per-layer cap of `caps` (tried in order) whose
    /// rules can meet the budget; when none can, the last one's refusal.
    pub fn search_with_caps(&mut self, budget: Budget, caps: &[f64]) -> Result<ChannelPlan> {
        for (i, &cap) in caps.iter().enumerate() {
            self.rules = WidthRules {
                max_layer_ratio: cap,
                ..self.rules
            };
            self.rules.check()?;
            if i + 1 == caps.len() || self.within(budget, &self.evaluate(0.0)?.1) {
                break;
            }
        }
        self.search(budget)
    }

    /// Largest per-task keep ratio whose fused, rule-abiding widths fit the budget (bisection; the
    /// cost only grows with the ratio).
    pub fn search(&self, budget: Budget) -> Result<ChannelPlan> {
        let before = self.before;
        let limit = |c: &Cost| self.within(budget, c);
        if let Budget::MacShare(s) = budget {
            if !(s > 0.0 && s < 1.0) {
                crate::usage_bail!("--sparsity {s} (share of MACs to remove) must be strictly between 0 and 1");
            }
        }
        let (smallest_keep, smallest) = self.evaluate(0.0)?;
        if !limit(&smallest) {
            let protected = self
                .protected
                .as_ref()
                .map(|p| p.iter().flatten().filter(|&&h| h).count())
                .unwrap_or(0);
            bail!(
                "the budget cannot be met: the width rules (--min-channels {}, --round-to {}, --max-layer-ratio {}){} leave at least {} MACs and {} parameters (the model has {} and {}); relax a rule{} or the budget",
                self.rules.min_channels,
                self.rules.round_to,
                self.rules.max_layer_ratio,
                if protected > 0 {
                    format!(" and the {protected} channels --fold exact keeps")
                } else {
                    String::new()
                },
                smallest.macs,
                smallest.params,
                before.macs,
                before.params,
                if protected > 0 {
                    " (--fold approximate removes the channels the exact fold keeps)"
                } else {
                    ""
                }
            );
        }
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        let mut best = (0.0, smallest_keep, smallest);
        let mut iterations = 1;
        while hi - lo > 1e-6 && iterations < 40 {
            let mid = (lo + hi) / 2.0;
            let (keep, c) = self.evaluate(mid)?;
            iterations += 1;
            if limit(&c) {
                lo = mid;
                best = (mid, keep, c);
            } else {
                hi = mid;
            }
        }
        let (keep_ratio, keep, after) = best;
        Ok(ChannelPlan {
            keep,
            before,
            after,
            macs_removed: 1.0 - after.macs as f64 / before.macs.max(1) as f64,
            keep_ratio,
            iterations,
            rules: self.rules,
        })
    }
}
