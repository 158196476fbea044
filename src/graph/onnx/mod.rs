//! What ops write their ONNX form into (`OpDef::export`): the builder and the ONNX messages. It
//! sits below the ops; reading and writing whole ONNX files (which needs the graph, its passes and
//! shapes) is `crate::onnx`, above the graph.

mod builder;
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto;

pub use builder::{Attr, ExportCx, GraphBuilder};
pub use proto::tensor_proto::DataType;
