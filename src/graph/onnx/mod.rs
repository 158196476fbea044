//! What ops write their ONNX form into (`OpDef::export`): the builder and the ONNX messages. The
//! export itself (the walk over a graph, the file) is `crate::onnx`.

mod builder;
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto;

pub use builder::{Attr, ExportCx, GraphBuilder};
pub use proto::tensor_proto::DataType;
