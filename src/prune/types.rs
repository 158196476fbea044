//! The score maps the scoring, selection and fusion modules pass between them.

use std::collections::BTreeMap;
use tch::Tensor;

/// Scores per task: task -> weight name -> score tensor (same shape as the weight, on `device`),
/// normalised so that each task's scores sum to 1.
pub type Scores = BTreeMap<String, BTreeMap<String, Tensor>>;

/// Unit scores per task: task -> group index -> one score per unit (channel, neuron or head), for
/// the groups the task scores (prunable groups whose producers all belong to the backbone or the
/// task's own head).
pub type ChannelScores = BTreeMap<String, BTreeMap<usize, Vec<f64>>>;

/// A share of weights (or of MACs) to remove, strictly between 0 and 1: checked once, where it is
/// made, so that the searches that take it need not check again.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Sparsity(f64);

impl Sparsity {
    /// A usage error naming `--sparsity` outside (0, 1).
    pub fn new(share: f64) -> anyhow::Result<Sparsity> {
        if !(share > 0.0 && share < 1.0) {
            crate::usage_bail!("--sparsity {share} must be strictly between 0 and 1");
        }
        Ok(Sparsity(share))
    }
    pub fn get(self) -> f64 {
        self.0
    }
}
