//! `cut new`: a family's model at random initialisation, written as a checkpoint.

use crate::checkpoint::metadata::Provenance;
use crate::checkpoint::{writer, DType};
use crate::fsio;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Everything `cut new` was asked.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// The family's name, as [`crate::families::find`] takes it.
    pub family: String,
    /// The family's configuration (its fields as `cut inspect` shows them).
    pub config: serde_json::Value,
    /// Where the configuration came from, for errors ("config.json", "the shape flags").
    pub config_source: String,
    /// Seed of the initial weights.
    pub seed: u64,
    pub dtype: DType,
    pub out: PathBuf,
    pub force: bool,
    /// The command line, for the provenance record.
    pub command: String,
}

/// What `cut new` wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NewDone {
    pub wrote: PathBuf,
    pub family: String,
    pub tasks: Vec<String>,
    pub parameters: usize,
}

/// Builds the model, draws its weights from `seed` and writes it; nothing is written on error.
pub fn run(job: &NewJob) -> Result<NewDone> {
    fsio::check_output(&job.out, &[], job.force)?;
    let family = crate::families::find(&job.family)?;
    let model = family
        .build(&job.config)
        .with_context(|| format!("--family {}: {}", family.name(), job.config_source))?;
    let params = crate::graph::init::init_params(&model.graph, job.seed, tch::Device::Cpu);
    let provenance = Provenance::new(job.command.clone(), None);
    let bytes = writer::model_bytes(&model, &params, job.dtype, false, Some(&provenance))?;
    // Without --force, a file that appeared meanwhile is not replaced.
    let mut outputs = fsio::Outputs::new(job.force);
    outputs.stage(&job.out, &bytes)?;
    outputs.commit()?;
    Ok(NewDone {
        wrote: job.out.clone(),
        family: family.name().to_string(),
        tasks: model.task_names().into_iter().map(String::from).collect(),
        parameters: params.values().map(|t| t.numel()).sum(),
    })
}
