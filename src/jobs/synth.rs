//! `cut data synth`: the synthetic indoor-scene dataset, written in the NYUv2 3-task layout.

use crate::data::synth::{write_dataset, SynthConfig};
use anyhow::Result;
use std::path::PathBuf;

/// Everything `cut data synth` was asked.
#[derive(Clone, Debug)]
pub struct SynthJob {
    pub scenes: SynthConfig,
    /// The output folder (new or empty).
    pub out: PathBuf,
}

/// What `cut data synth` wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SynthDone {
    pub wrote: PathBuf,
    pub train: usize,
    pub test: usize,
    pub height: usize,
    pub width: usize,
}

/// Renders the scenes on every core; the same seed gives the same files.
pub fn run(job: &SynthJob) -> Result<SynthDone> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    write_dataset(&job.out, &job.scenes, threads)?;
    let s = &job.scenes;
    Ok(SynthDone {
        wrote: job.out.clone(),
        train: s.train,
        test: s.test,
        height: s.height,
        width: s.width,
    })
}
