//! Per-task keep decisions, their fusion on the shared backbone, and the search for the per-task
//! keep ratio that reaches a target sparsity.

use super::types::{Scores, Sparsity};
use crate::graph::{Group, Model};
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// Keep a backbone weight when at least --min-votes selected tasks keep it (the reference's).
    Vote,
    /// Keep it when any selected task keeps it (DiSparse's rule).
    Union,
    /// Keep it only when every selected task keeps it.
    Intersection,
}

crate::choices!(Fusion { Vote => "vote", Union => "union", Intersection => "intersection" });

impl Fusion {
    /// Votes needed out of `tasks` to keep a backbone weight.
    pub fn needed_votes(self, tasks: usize, min_votes: Option<usize>) -> Result<usize> {
        Ok(match self {
            Fusion::Vote => {
                let k = min_votes.unwrap_or_else(|| tasks.min(2));
                if k == 0 || k > tasks {
                    crate::usage_bail!("--min-votes {k} must be between 1 and the number of selected tasks ({tasks})");
                }
                k
            }
            Fusion::Union => 1,
            Fusion::Intersection => tasks,
        })
    }
}

/// Keeps where at least `needed` of the per-task keep decisions agree.
pub fn fuse(keeps: &[Tensor], needed: usize) -> Tensor {
    let mut votes = keeps[0].to_kind(Kind::Int);
    for k in &keeps[1..] {
        votes += k.to_kind(Kind::Int);
    }
    votes.ge(needed as i64)
}

/// Ranked scores of one task: backbone part and own head part, flattened in a fixed order.
struct Ranked {
    /// Rank (0 = most important) of each backbone weight, then each head weight, for this task.
    backbone_rank: Tensor,
    head_rank: Tensor,
    total: i64,
}

pub struct MaskSearch {
    backbone_names: Vec<String>,
    head_names: BTreeMap<String, Vec<String>>,
    shapes: BTreeMap<String, Vec<i64>>,
    ranked: Vec<(String, Ranked)>,
    needed: usize,
    /// All prunable weights of the output model.
    total_weights: i64,
}

#[derive(Debug, Serialize)]
pub struct MaskResult {
    pub keep_ratio: f64,
    pub sparsity: f64,
    pub iterations: usize,
    #[serde(skip)]
    pub masks: BTreeMap<String, Tensor>,
}

impl MaskSearch {
    /// Prepares ranks for every selected task. `model` must already be restricted to the selected tasks.
    pub fn new(model: &Model, scores: &Scores, fusion: Fusion, min_votes: Option<usize>) -> Result<MaskSearch> {
        let groups = model.graph.param_groups();
        let specs: Vec<_> = model
            .graph
            .param_specs()
            .into_iter()
            .filter(|s| s.role.is_prunable_weight())
            .collect();
        let backbone_names: Vec<String> = specs
            .iter()
            .filter(|s| groups[&s.name] == Group::Backbone)
            .map(|s| s.name.clone())
            .collect();
        let shapes = specs
            .iter()
            .map(|s| (s.name.clone(), s.shape.iter().map(|&d| d as i64).collect()))
            .collect();
        let mut head_names = BTreeMap::new();
        let mut ranked = Vec::new();
        for (task, task_scores) in scores {
            let heads: Vec<String> = specs
                .iter()
                .filter(|s| groups[&s.name] == Group::Head(task.clone()))
                .map(|s| s.name.clone())
                .collect();
            let flat: Vec<Tensor> = backbone_names
                .iter()
                .chain(heads.iter())
                .map(|n| task_scores[n].flatten(0, -1).to_kind(Kind::Float))
                .collect();
            let all = Tensor::cat(&flat, 0);
            let n = all.numel() as i64;
            // Stable sort: equal scores rank by position, so exactly k weights are kept for any k.
            let (_, order) = all.sort_stable(true, 0, true);
            let rank = Tensor::empty([n], (Kind::Int64, all.device())).scatter(
                0,
                &order,
                &Tensor::arange(n, (Kind::Int64, all.device())),
            );
            let nb = backbone_names
                .iter()
                .map(|b| task_scores[b].numel() as i64)
                .sum::<i64>();
            ranked.push((
                task.clone(),
                Ranked {
                    backbone_rank: rank.narrow(0, 0, nb),
                    head_rank: rank.narrow(0, nb, n - nb),
                    total: n,
                },
            ));
            head_names.insert(task.clone(), heads);
        }
        if ranked.is_empty() {
            bail!("no tasks were scored");
        }
        let needed = fusion.needed_votes(ranked.len(), min_votes)?;
        let total_weights = specs.iter().map(|s| s.numel() as i64).sum();
        Ok(MaskSearch {
            backbone_names,
            head_names,
            shapes,
            ranked,
            needed,
            total_weights,
        })
    }

    fn keeps(&self, ratio: f64) -> (Tensor, Vec<Tensor>) {
        let mut backbone = Vec::new();
        let mut heads = Vec::new();
        for (_, r) in &self.ranked {
            let k = (ratio * r.total as f64).floor() as i64;
            backbone.push(r.backbone_rank.lt(k));
            heads.push(r.head_rank.lt(k));
        }
        (fuse(&backbone, self.needed), heads)
    }

    pub fn sparsity(&self, ratio: f64) -> f64 {
        let (backbone, heads) = self.keeps(ratio);
        let kept = backbone.sum(Kind::Int64).int64_value(&[])
            + heads.iter().map(|h| h.sum(Kind::Int64).int64_value(&[])).sum::<i64>();
        1.0 - kept as f64 / self.total_weights as f64
    }

    /// Bisection on the per-task keep ratio until the fused sparsity is within `tolerance` of `target`
    pub fn search(&self, target: Sparsity, tolerance: f64) -> Result<MaskResult> {
        let target = target.get();
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        let mut best = (0.5, self.sparsity(0.5));
        let mut iterations = 1;
        while (best.1 - target).abs() > tolerance && iterations < 60 {
            // Sparsity falls as the keep ratio grows.
            if best.1 > target {
                lo = best.0;
            } else {
                hi = best.0;
            }
            let mid = (lo + hi) / 2.0;
            best = (mid, self.sparsity(mid));
            iterations += 1;
        }
        if (best.1 - target).abs() > tolerance {
            bail!("could not reach sparsity {target:.4} within {tolerance:.4} (closest {:.4}); the model may be too small", best.1);
        }
        Ok(MaskResult {
            keep_ratio: best.0,
            sparsity: best.1,
            iterations,
            masks: self.masks(best.0),
        })
    }

    /// Float 0/1 masks per weight tensor for a keep ratio.
    pub fn masks(&self, ratio: f64) -> BTreeMap<String, Tensor> {
        let (backbone, heads) = self.keeps(ratio);
        let mut out = BTreeMap::new();
        let mut split = |names: &[String], flat: &Tensor| {
            let mut offset = 0;
            for n in names {
                let shape = &self.shapes[n];
                let len: i64 = shape.iter().product();
                out.insert(
                    n.clone(),
                    flat.narrow(0, offset, len).view(shape.as_slice()).to_kind(Kind::Float),
                );
                offset += len;
            }
        };
        split(&self.backbone_names, &backbone);
        for ((task, _), keep) in self.ranked.iter().zip(&heads) {
            split(&self.head_names[task], keep);
        }
        out
    }
}
