//! Rewrites of a graph and its weights that every consumer of the result sees (the interpreter,
//! the memory plan, an exporter), one file each.

mod fold_batch_norm;
mod fuse_conv_relu;
mod slice_dead_taps;

pub use fold_batch_norm::fold_batch_norms;
pub use fuse_conv_relu::fuse_conv_relu;
pub use slice_dead_taps::{slice_dead_taps, slice_dead_taps_for};
