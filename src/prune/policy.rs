//! What `cut prune` does with the options a user gave and the ones they left out: the defaults that
//! depend on other choices. The command line passes `None` for an option not given; this module
//! decides, once. The settings it resolves to are checked once, by `PruneConfig::check`.

use super::channel_select::{Budget, WidthRules, AUTO_LAYER_RATIOS};
use super::score::Criterion;
use super::types::Sparsity;
use super::Granularity;
use anyhow::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// `--fold`: whether channels whose removal the bias fold reproduces only away from padded
/// borders may go.
pub enum Fold {
    Exact,
    Approximate,
}

crate::choices!(Fold { Exact => "exact", Approximate => "approximate" });

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// `--finetune-norm`: batch norm frozen or training while fine-tuning.
pub enum NormMode {
    Frozen,
    Train,
}

crate::choices!(NormMode { Frozen => "frozen", Train => "train" });

/// The options of a prune as the user gave them.
#[derive(Clone, Debug, PartialEq)]
pub struct PruneRequest {
    pub criterion: Option<Criterion>,
    pub granularity: Granularity,
    pub sparsity: Option<f64>,
    pub target_macs: Option<u64>,
    pub target_params: Option<u64>,
    pub min_channels: usize,
    pub round_to: usize,
    pub max_layer_ratio: Option<f64>,
    /// Attention heads every layer keeps.
    pub min_heads: usize,
    /// Models that read tokens: the sequence length MAC budgets count at.
    pub seq_len: Option<usize>,
    pub packed: bool,
}

/// The settings a request resolves to.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub criterion: Criterion,
    /// Weight granularity: the share of zero weights; channel: the share of MACs removed.
    pub sparsity: Sparsity,
    pub channel_budget: Option<Budget>,
    pub channel_rules: WidthRules,
    /// Whether the per-layer cap may be raised to meet the budget (no cap was given).
    pub widen_layer_ratio: bool,
    /// One line each, for stderr: defaults the user may not expect.
    pub warnings: Vec<String>,
}

/// Default sparsity by granularity: 90% of weights zero, or half the MACs removed.
pub fn default_sparsity(granularity: Granularity) -> f64 {
    match granularity {
        Granularity::Weight => 0.9,
        Granularity::Channel => 0.5,
    }
}

impl PruneRequest {
    /// Defaults and checks. Without data and without `--criterion`, the data-free magnitude score
    /// is used (with a warning), so the headline command `cut prune --tasks a,b model` runs as is.
    /// `has_data`: whether a dataset was given (`--data`).
    pub fn resolve(&self, has_data: bool) -> Result<Resolved> {
        let channel = self.granularity == Granularity::Channel;
        let mut warnings = Vec::new();
        let criterion = match self.criterion {
            Some(c) => c,
            None if has_data => Criterion::Snip,
            None => {
                warnings.push(
                    "no --data: scoring by weight magnitude (--criterion magnitude), no fine-tuning, accuracy not measured"
                        .to_string(),
                );
                Criterion::Magnitude
            }
        };
        let sparsity = Sparsity::new(self.sparsity.unwrap_or(default_sparsity(self.granularity)))?;
        let channel_budget = match (self.target_macs, self.target_params) {
            (Some(m), _) => Some(Budget::Macs(m)),
            (_, Some(p)) => Some(Budget::Params(p)),
            _ => None,
        };
        if channel && self.packed {
            crate::usage_bail!(
                "--packed stores zero weights compactly, and channel pruning leaves none: drop --packed"
            );
        }
        let channel_rules = WidthRules {
            min_channels: self.min_channels,
            round_to: self.round_to,
            max_layer_ratio: self.max_layer_ratio.unwrap_or(AUTO_LAYER_RATIOS[0]),
            min_heads: self.min_heads,
        };
        Ok(Resolved {
            criterion,
            sparsity,
            channel_budget,
            channel_rules,
            widen_layer_ratio: self.max_layer_ratio.is_none(),
            warnings,
        })
    }
}

/// A request with the command line's defaults, for tests.
#[cfg(test)]
pub(crate) fn request_for_tests(granularity: Granularity) -> PruneRequest {
    PruneRequest {
        criterion: None,
        granularity,
        sparsity: None,
        target_macs: None,
        target_params: None,
        min_channels: 8,
        round_to: 8,
        max_layer_ratio: None,
        min_heads: 1,
        seq_len: None,
        packed: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> PruneRequest {
        request_for_tests(Granularity::Weight)
    }

    #[test]
    fn defaults_follow_data_and_granularity() {
        let r = request().resolve(true).unwrap();
        assert_eq!((r.criterion, r.sparsity.get()), (Criterion::Snip, 0.9));
        assert!(r.warnings.is_empty());
        assert!(r.widen_layer_ratio);
        assert_eq!(r.channel_rules.max_layer_ratio, AUTO_LAYER_RATIOS[0]);

        let no_data = request().resolve(false).unwrap();
        assert_eq!(no_data.criterion, Criterion::Magnitude);
        assert_eq!(no_data.warnings.len(), 1);
        assert!(
            no_data.warnings[0].contains("--criterion magnitude"),
            "{:?}",
            no_data.warnings
        );

        let channel = PruneRequest {
            granularity: Granularity::Channel,
            max_layer_ratio: Some(0.75),
            ..request()
        }
        .resolve(true)
        .unwrap();
        assert_eq!(channel.sparsity.get(), 0.5);
        assert!(!channel.widen_layer_ratio);
        assert_eq!(channel.channel_rules.max_layer_ratio, 0.75);
    }

    /// The settings `cut prune` would run with for a request, checked as the job checks them.
    fn checked(req: &PruneRequest, has_data: bool) -> Result<crate::prune::CheckedConfig> {
        let r = req.resolve(has_data)?;
        crate::prune::PruneConfig {
            request: req.clone(),
            resolved: r,
            options: crate::prune::PruneOptions {
                fusion: crate::prune::mask::Fusion::Vote,
                min_votes: None,
                exact_fold: true,
                calib_batches: None,
                strategy: crate::prune::score::Strategy::Shared,
                precision: crate::prune::score::Precision::F32,
                eval_split: crate::data::Split::Test,
                distill: false,
            },
            calib_batches: 1,
            tolerance: 0.005,
            val_fraction: 0.1,
            finetune: crate::train::TrainConfig {
                schedule: crate::train::Schedule {
                    seed: 0,
                    steps: if has_data { 300 } else { 0 },
                    lr: 1e-4,
                    weight_decay: 0.0,
                    step_size: 100,
                    gamma: 0.5,
                    val_every: 10,
                    freeze_norm: false,
                },
                batch: 4,
                lambdas: Default::default(),
                device: tch::Device::Cpu,
                only: None,
                inference_mode: false,
            },
            output_kind: tch::Kind::Float,
        }
        .check(has_data)
    }

    #[test]
    fn defaults_pass_the_checks() {
        for granularity in [Granularity::Weight, Granularity::Channel] {
            for has_data in [true, false] {
                let req = PruneRequest {
                    granularity,
                    ..request()
                };
                checked(&req, has_data).unwrap_or_else(|e| panic!("{granularity:?} data {has_data}: {e}"));
            }
        }
    }

    #[test]
    fn refusals_are_usage_errors_naming_the_option() {
        let cases = [
            (
                PruneRequest {
                    criterion: Some(Criterion::Snip),
                    ..request()
                },
                false,
                "--criterion snip scores with calibration data",
            ),
            (
                PruneRequest {
                    sparsity: Some(1.0),
                    ..request()
                },
                true,
                "--sparsity 1 must be strictly between 0 and 1",
            ),
            (
                PruneRequest {
                    target_macs: Some(5),
                    ..request()
                },
                true,
                "add --granularity channel",
            ),
            (
                PruneRequest {
                    granularity: Granularity::Channel,
                    packed: true,
                    ..request()
                },
                true,
                "drop --packed",
            ),
            (
                PruneRequest {
                    granularity: Granularity::Channel,
                    round_to: 0,
                    ..request()
                },
                true,
                "--round-to must be at least 1",
            ),
            (
                PruneRequest {
                    criterion: Some(Criterion::Taylor),
                    ..request()
                },
                true,
                "use it with --granularity channel",
            ),
            (
                PruneRequest {
                    granularity: Granularity::Channel,
                    seq_len: Some(0),
                    ..request()
                },
                true,
                "--seq-len must be at least 1",
            ),
        ];
        for (req, has_data, message) in cases {
            let err = checked(&req, has_data).unwrap_err();
            assert!(err.to_string().contains(message), "{err} / {message}");
            assert!(crate::error::is_usage(&err), "{err} should be a usage error");
        }
    }
}
