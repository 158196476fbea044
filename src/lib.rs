//! `cut`: prune pre-trained multi-task models into compact task-specific models.
//!
//! - [`checkpoint`]: safetensors files that carry their model graph and task list.
//! - [`graph`]: the typed graph, its ops and its interpreter on tch.
//! - [`families`]: model families (SceneNet): builders and recognisers of checkpoints without a graph.
//! - [`report`]: inspection summaries and reports, as data.
//! - [`device`]: CPU or CUDA selection.
//! - [`prune`]: the CUT method, its policy (defaults and validation) and its pipeline.
//! - [`error`]: which errors are bad command lines.
//! - [`tasks`]: task kinds (labels, losses, metrics, constant baselines), one file each.

pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod families;
pub mod fsio;
pub mod graph;
pub mod jobs;
pub mod metrics;
pub mod prune;
pub mod report;
pub mod tasks;
pub mod train;
