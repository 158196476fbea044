//! `cut inspect`: a checkpoint's sizes, sparsity and compute per group. [`InspectJob`] in, an
//! [`Inspection`] out.

use crate::checkpoint::{Checkpoint, LoadOptions};
use crate::report::inspect::{inspect, prunable_groups, InputChoice, Inspection};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Everything `cut inspect` was asked.
#[derive(Clone, Debug)]
pub struct InspectJob {
    pub model: PathBuf,
    pub load: LoadOptions,
    /// The input size MACs are counted at (default: the graph's).
    pub input: InputChoice,
    /// List every tensor too.
    pub list_tensors: bool,
    /// List what channel pruning can narrow.
    pub list_prunable: bool,
}

/// Reads the checkpoint and summarises it; its warnings are in the inspection.
pub fn run(job: &InspectJob) -> Result<Inspection> {
    let ckpt = Checkpoint::open_with(&job.model, &job.load)?;
    let mut inspection = inspect(&ckpt, &job.load, job.input, job.list_tensors)?;
    if job.list_prunable {
        let model = ckpt.model(&job.load)?.model;
        inspection.prunable = Some(prunable_groups(&model.graph).with_context(|| ckpt.path.display().to_string())?);
    }
    Ok(inspection)
}
