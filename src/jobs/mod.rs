//! Whole runs of a command as a library call: open the inputs, resolve the options, do the work,
//! write every output as one, and return what the command prints. The binary parses arguments
//! into a job, draws progress and prints; everything else is here.

pub mod bench;
pub mod eval;
pub mod export;
pub mod import;
pub mod inspect;
pub mod int8;
pub mod new;
pub mod plan;
pub mod predict;
pub mod prune;
pub mod split;
pub mod synth;
pub mod train;
