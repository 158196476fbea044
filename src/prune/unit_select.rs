//! Which attention heads and FFN neurons of a text encoder stay: per-task unit scores, fused over
//! the selected tasks the way channels are (`--fusion`), to a MAC or parameter budget.
//!
//! Each task ranks every unit of the encoder by its share of the task's importance per unit of
//! cost (a head costs far more than a neuron). For a keep ratio r, each task votes for its best r
//! share; a unit stays when enough tasks vote for it, and each layer is then widened to what the
//! rules ask (at least `min_heads` heads, FFN widths a multiple of `round_to`, at most
//! `max_layer_ratio` of a layer removed), filled with the best-scored units. A bisection finds the
//! largest r whose model fits the budget, as the channel search does.

use super::encoder::{EncoderGroup, GroupKind};
use super::mask::Fusion;
use super::types::Scores;
use crate::graph::{Graph, Op};
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// Unit scores per task: task -> group -> one score per unit.
pub type UnitScores = BTreeMap<String, Vec<Vec<f64>>>;

/// Per task, group and unit, the unit's importance: the task's weight scores (which sum to 1 over
/// the task's weights) summed over the unit's rows of the producer's weights and its columns of the
/// consumer's weight.
pub fn unit_scores(graph: &Graph, groups: &[EncoderGroup], scores: &Scores) -> Result<UnitScores> {
    let _guard = tch::no_grad_guard();
    let mut out = UnitScores::new();
    for (task, task_scores) in scores {
        let mut per_group = Vec::new();
        for g in groups {
            let producers: Vec<String> = match graph.node(&g.producer).map(|n| &n.op) {
                Some(Op::SelfAttention(a)) => vec![a.query.clone(), a.key.clone(), a.value.clone()],
                Some(Op::Linear(l)) => vec![l.weight.clone()],
                _ => bail!("group producer '{}' is not an attention or linear node", g.producer),
            };
            let Some(Op::Linear(consumer)) = graph.node(&g.consumer).map(|n| &n.op) else {
                bail!("group consumer '{}' is not a linear layer", g.consumer);
            };
            let mut total = vec![0f64; g.units];
            let mut add = |t: &Tensor, dim: i64| -> Result<()> {
                // [features] -> [units]: each unit's `unit_width` features summed.
                let per_feature = t.abs().sum_dim_intlist(1 - dim, false, Kind::Double);
                let per_unit =
                    per_feature
                        .view([g.units as i64, g.unit_width as i64])
                        .sum_dim_intlist(1, false, Kind::Double);
                let values = Vec::<f64>::try_from(per_unit.to_device(tch::Device::Cpu))?;
                total.iter_mut().zip(values).for_each(|(slot, v)| *slot += v);
                Ok(())
            };
            for w in &producers {
                if let Some(t) = task_scores.get(w) {
                    add(t, 0)?;
                }
            }
            if let Some(t) = task_scores.get(&consumer.weight) {
                add(t, 1)?;
            }
            per_group.push(total);
        }
        out.insert(task.clone(), per_group);
    }
    Ok(out)
}

/// What every layer keeps at least.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct UnitRules {
    /// Heads per layer (0 lets a layer lose its attention).
    pub min_heads: usize,
    /// FFN widths are kept at a multiple of this (or all of the layer's, or 0).
    pub round_to: usize,
    /// The largest share of a layer's units that may go.
    pub max_layer_ratio: f64,
}

impl UnitRules {
    /// `n` units of `g` widened to what the rules allow.
    fn width(&self, g: &EncoderGroup, n: usize) -> usize {
        let capped = ((1.0 - self.max_layer_ratio) * g.units as f64 - 1e-9).ceil().max(0.0) as usize;
        let n = n.max(capped);
        match g.kind {
            GroupKind::Heads => n.max(self.min_heads.min(g.units)),
            GroupKind::Neurons => n
                .div_ceil(self.round_to.max(1))
                .saturating_mul(self.round_to.max(1))
                .min(g.units),
        }
    }
}

/// The units kept and what the search settled on.
#[derive(Clone, Debug)]
pub struct UnitPlan {
    /// Per group, the kept units (sorted).
    pub keep: Vec<Vec<usize>>,
    /// Cost removed, in the budget's measure.
    pub removed: u64,
    /// The share of its ranking each task kept.
    pub keep_ratio: f64,
    pub iterations: usize,
    pub rules: UnitRules,
}

/// One task's ranking: `rank[g][u]` is unit u of group g's place, best first, among `total`.
struct TaskRanking {
    total: usize,
    rank: Vec<Vec<usize>>,
}

/// The search over a set of unit scores.
pub struct UnitSearch<'a> {
    groups: &'a [EncoderGroup],
    /// What one unit of each group costs in the budget's measure.
    costs: &'a [u64],
    tasks: Vec<TaskRanking>,
    /// Per group and unit, the tasks' normalised scores summed: the order a layer is filled in.
    fused: Vec<Vec<f64>>,
    needed: usize,
}

impl<'a> UnitSearch<'a> {
    pub fn new(
        groups: &'a [EncoderGroup],
        scores: &UnitScores,
        costs: &'a [u64],
        fusion: Fusion,
        min_votes: Option<usize>,
    ) -> Result<UnitSearch<'a>> {
        if costs.len() != groups.len() {
            bail!("{} groups but {} unit costs", groups.len(), costs.len());
        }
        let mut fused: Vec<Vec<f64>> = groups.iter().map(|g| vec![0.0; g.units]).collect();
        let mut tasks = Vec::new();
        for (task, s) in scores {
            if s.len() != groups.len() || s.iter().zip(groups).any(|(v, g)| v.len() != g.units) {
                bail!("task '{task}': unit scores do not match the encoder's groups");
            }
            let sum: f64 = s.iter().flatten().sum();
            let scale = if sum > 0.0 { 1.0 / sum } else { 1.0 };
            let mut order: Vec<(f64, usize, usize)> = Vec::new();
            for (g, v) in s.iter().enumerate() {
                for (u, &x) in v.iter().enumerate() {
                    fused[g][u] += x * scale;
                    order.push((x * scale / costs[g].max(1) as f64, g, u));
                }
            }
            // Best first; ties by position so that the ranking is deterministic.
            order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            let mut rank: Vec<Vec<usize>> = groups.iter().map(|g| vec![0; g.units]).collect();
            for (r, &(_, g, u)) in order.iter().enumerate() {
                rank[g][u] = r;
            }
            tasks.push(TaskRanking {
                total: order.len(),
                rank,
            });
        }
        if tasks.is_empty() {
            bail!("no tasks were scored");
        }
        let needed = fusion.needed_votes(tasks.len(), min_votes)?;
        Ok(UnitSearch {
            groups,
            costs,
            tasks,
            fused,
            needed,
        })
    }

    /// Kept units per group when each task votes for its best `ratio` share.
    pub fn keep(&self, ratio: f64, rules: UnitRules) -> Vec<Vec<usize>> {
        self.groups
            .iter()
            .enumerate()
            .map(|(g, group)| {
                let mut ranked: Vec<(bool, f64, usize)> = (0..group.units)
                    .map(|u| {
                        let votes = self
                            .tasks
                            .iter()
                            .filter(|t| t.rank[g][u] < (ratio * t.total as f64).floor() as usize)
                            .count();
                        (votes >= self.needed, self.fused[g][u], u)
                    })
                    .collect();
                let voted = ranked.iter().filter(|r| r.0).count();
                let n = rules.width(group, voted);
                ranked.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
                let mut kept: Vec<usize> = ranked[..n].iter().map(|r| r.2).collect();
                kept.sort_unstable();
                kept
            })
            .collect()
    }

    /// Cost removed by keeping `keep`.
    pub fn removed(&self, keep: &[Vec<usize>]) -> u64 {
        self.groups
            .iter()
            .zip(keep)
            .zip(self.costs)
            .map(|((g, k), &c)| (g.units - k.len()) as u64 * c)
            .sum()
    }

    /// The largest keep ratio whose model removes at least `target` (bisection: what is removed
    /// only shrinks as the ratio grows). An error names the most the rules let go.
    pub fn search(&self, target: u64, rules: UnitRules) -> Result<UnitPlan> {
        let smallest = self.keep(0.0, rules);
        let most = self.removed(&smallest);
        if most < target {
            crate::usage_bail!(
                "the budget asks to remove {target} of the encoder's MACs (or parameters); the rules (--min-heads {}, --round-to {}, --max-layer-ratio {}) let at most {most} go: lower --sparsity or loosen a rule",
                rules.min_heads,
                rules.round_to,
                rules.max_layer_ratio
            );
        }
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        let mut best = (0.0, smallest, most);
        let mut iterations = 1;
        while hi - lo > 1e-6 && iterations < 40 {
            let mid = (lo + hi) / 2.0;
            let keep = self.keep(mid, rules);
            let removed = self.removed(&keep);
            iterations += 1;
            if removed >= target {
                lo = mid;
                best = (mid, keep, removed);
            } else {
                hi = mid;
            }
        }
        let (keep_ratio, keep, removed) = best;
        Ok(UnitPlan {
            keep,
            removed,
            keep_ratio,
            iterations,
            rules,
        })
    }

    /// [`search`](Self::search) under the first per-layer cap of `caps` (tried in order) whose
    /// rules can meet the budget; when none can, the last one's refusal.
    pub fn search_with_caps(&self, target: u64, rules: UnitRules, caps: &[f64]) -> Result<UnitPlan> {
        for (i, &cap) in caps.iter().enumerate() {
            let rules = UnitRules {
                max_layer_ratio: cap,
                ..rules
            };
            if i + 1 == caps.len() || self.removed(&self.keep(0.0, rules)) >= target {
                return self.search(target, rules);
            }
        }
        self.search(target, rules)
    }
}
