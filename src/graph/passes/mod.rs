//! Rewrites of a graph and its weights that every consumer of the result sees (the interpreter,
//! the memory plan, an exporter), one file each.
//!
//! One inference shortcut is not a pass, on purpose: slicing off kernel taps that only read padding
//! depends on the input size of each call, so `graph::kernels` decides it per call, where the size
//! is known; it changes no value.

mod fold_batch_norm;
mod fuse_conv_relu;

pub use fold_batch_norm::fold_batch_norms;
pub use fuse_conv_relu::fuse_conv_relu;
