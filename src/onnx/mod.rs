//! ONNX files: `cut export --format onnx` ([`export`]) and `cut import` ([`import`]). Every op says its own ONNX form
//! (`OpDef::export`, written into `crate::graph::onnx`'s builder); this module works on whole
//! files, above the graph: it prepares the graph, walks it, and writes the file.

mod export;
pub mod import;

pub use crate::graph::onnx::{proto, Attr, DataType, ExportCx, GraphBuilder};
pub use export::{
    export, external_name, stage, ExportOptions, Exported, DEFAULT_OPSET, EXTERNAL_DATA_THRESHOLD, MAX_OPSET,
};
