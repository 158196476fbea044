//! ONNX files: `cut export --format onnx` ([`export`]), `cut import` ([`import`]), int8 QDQ files
//! ([`quantize`]) and ONNX Runtime, loaded at run time ([`runtime`]). Every op says its own ONNX
//! form (`OpDef::export`, written into `crate::graph::onnx`'s builder); this module works on whole
//! files, above the graph: it prepares the graph, walks it, and writes the file.

mod export;
pub mod import;
pub mod quantize;
pub mod runtime;

pub use crate::graph::onnx::{proto, Attr, DataType, ExportCx, GraphBuilder};
pub use export::{
    export, external_name, stage, ExportOptions, Exported, DEFAULT_OPSET, EXTERNAL_DATA_THRESHOLD, MAX_OPSET,
};
