//! The score maps the scoring, selection and fusion modules pass between them.

use std::collections::BTreeMap;
use tch::Tensor;

/// Scores per task: task -> weight name -> score tensor (same shape as the weight, on `device`),
/// normalised so that each task's scores sum to 1.
pub type Scores = BTreeMap<String, BTreeMap<String, Tensor>>;

/// Channel scores per task: task -> group index -> one score per channel, for the groups the task
/// scores (prunable groups whose producers all belong to the backbone or the task's own head).
pub type ChannelScores = BTreeMap<String, BTreeMap<usize, Vec<f64>>>;
