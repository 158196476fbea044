//! `cut`: prune pre-trained multi-task models into compact task-specific models.
//!
//! Start at `docs/architecture.md`. The modules:
//! - [`checkpoint`]: safetensors files that carry their model graph and task list.
//! - [`graph`]: the typed graph with declared inputs, its ops (one file each), passes, kernels and
//!   the interpreter on tch.
//! - [`families`]: model families (SceneNet): builders and recognisers of checkpoints without a graph.
//! - [`tasks`]: task kinds (labels, losses, metrics, constant baselines), one file each.
//! - [`data`]: examples and batches by name, the background loader, the NYUv2 layout, synthetic data.
//! - [`metrics`], [`eval`], [`train`]: scoring, evaluation and training.
//! - [`prune`]: the CUT method, its policy (defaults and validation) and its pipeline.
//! - [`bench`](mod@bench): latency, interleaved comparisons, per-node profiles.
//! - [`jobs`]: whole commands (`prune`, `bench`) as library calls.
//! - [`report`]: footprints, inspection summaries and reports, as data.
//! - [`device`]: CPU or CUDA selection; [`fsio`]: output checks and atomic writes; [`error`]: which
//!   errors are bad command lines.

pub mod bench;
pub mod checkpoint;
pub mod choice;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod families;
pub mod fsio;
pub mod graph;
pub mod jobs;
pub mod metrics;
pub mod onnx;
pub mod plan;
pub mod prune;
pub mod report;
pub mod split;
pub mod tasks;
pub mod train;
