//! Rewrites of a graph and its weights that every consumer of the result sees (the interpreter,
//! the memory plan, an exporter), one file each.
//!
//! Two inference shortcuts are not passes, on purpose: slicing off kernel taps that only read
//! padding depends on the input size of each call, and running a convolution fused with its ReLU
//! depends on the device and on whether a gradient is needed. Both live in `graph::kernels`,
//! where those facts are known, and neither changes a value.

mod fold_batch_norm;

pub use fold_batch_norm::fold_batch_norms;
